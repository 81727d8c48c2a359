"""A tiny champion whose right answers are known: red photos are ants, blue photos are bees.

The network averages each normalised colour channel and scores ``red - blue`` for "ants" and
``blue - red`` for "bees", so a test can tell a correct class from a wrong one without training.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch
from PIL import Image

from tlbench.export import save_network
from tlbench.run import TrainedModel
from tlbench.tracking import MlflowRun
from tlbench.tracking.registry import Champion, log_champion

RED, BLUE, GREY = (220, 30, 30), (30, 30, 220), (128, 128, 128)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def colour_model(*, resolution: int = 16) -> TrainedModel:
    linear = torch.nn.Linear(3, 2)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[1.0, 0.0, -1.0], [-1.0, 0.0, 1.0]]))
        linear.bias.zero_()
    network = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), linear).eval()
    return TrainedModel(
        network=network, class_names=["ants", "bees"], mean=MEAN, std=STD, resolution=resolution
    )


def photo(colour: tuple[int, int, int], *, size: tuple[int, int] = (40, 30), fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format=fmt)
    return buffer.getvalue()


def register_colour_model(
    tmp_path: Path, *, study: str = "colours", tracking_uri: str | None = None
) -> Champion:
    """Log and register the colour model the way ``export_winner`` does, in a finished export run."""
    model = colour_model()
    run = MlflowRun.start(experiment=study, tracking_uri=tracking_uri, tags={"role": "export"})
    run.end("FINISHED")
    network_file = tmp_path / "network.pt2"
    save_network(model, network_file)
    return log_champion(
        run_id=run.run_id,
        network_file=network_file,
        class_names=model.class_names,
        resolution=model.resolution,
        registered_name=study,
        description="Colour model: retrained on train + validation (a test double).",
        tags={"verdict": "red is ants", "verdict_interval": "0.9000..1.0000"},
        tracking_uri=tracking_uri,
    )
