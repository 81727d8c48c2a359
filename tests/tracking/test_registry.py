"""The winner as an MLflow pyfunc: registered with alias champion, faithful to the trained network,
loadable without tlbench, and one clear line for a model that does not exist."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from tlbench.errors import TrackingError
from tlbench.tracking.names import CHAMPION_ALIAS
from tlbench.tracking.registry import Champion, load_model

from .champion_helpers import BLUE, GREY, RED, colour_model, photo, register_colour_model


@pytest.fixture
def champion(tmp_path: Path, mlflow_uri: str) -> Champion:
    return register_colour_model(tmp_path, tracking_uri=mlflow_uri)


def test_the_model_is_registered_under_the_study_with_alias_champion(
    champion: Champion, mlflow_uri: str
) -> None:
    client = MlflowClient(mlflow_uri)
    version = client.get_model_version_by_alias("colours", CHAMPION_ALIAS)
    # the alias points at the version just logged, with its description, tags and export run
    assert (str(version.version), version.run_id) == (champion.version, champion.run_id)
    assert "train + validation" in version.description
    assert version.tags["verdict"] == "red is ants"
    assert champion.uri == "models:/colours@champion"


def test_a_new_export_moves_the_alias_to_the_new_version(
    champion: Champion, tmp_path: Path, mlflow_uri: str
) -> None:
    (tmp_path / "second").mkdir()
    second = register_colour_model(tmp_path / "second", tracking_uri=mlflow_uri)
    alias = MlflowClient(mlflow_uri).get_model_version_by_alias("colours", CHAMPION_ALIAS)
    # version 2 is the champion now; version 1 stays in the registry
    assert (champion.version, second.version, str(alias.version)) == ("1", "2", "2")


@pytest.mark.parametrize(
    ("colour", "expected"),
    [(RED, "ants"), (BLUE, "bees")],
)
def test_the_pyfunc_classifies_images(
    champion: Champion, colour: tuple[int, int, int], expected: str
) -> None:
    model = load_model(champion.uri)
    out = model.predict(pd.DataFrame({"image": [photo(colour)]}))
    # the known answer of the colour model, with probabilities over both classes summing to 1
    assert out["class"].tolist() == [expected]
    assert out["probability"].iloc[0] > 0.5
    assert sum(out["probabilities"].iloc[0].values()) == pytest.approx(1.0)


def test_the_pyfunc_matches_the_trained_network_on_every_kind_of_file(champion: Champion) -> None:
    images = [
        photo(RED, fmt="JPEG"),
        photo(BLUE, size=(17, 90)),
        photo(GREY, fmt="GIF"),
        photo((200, 120, 40), size=(300, 200), fmt="WEBP"),
    ]
    trained = colour_model()
    with torch.no_grad():
        expected = torch.softmax(trained.network(trained.preprocess(images)), dim=1).numpy()
    out = load_model(champion.uri).predict(pd.DataFrame({"image": images}))
    got = np.array([[p["ants"], p["bees"]] for p in out["probabilities"]])
    # decode + normalise + network inside the model give what the trial's own preprocessing gives
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_an_unreadable_image_is_that_rows_error_and_the_others_are_classified(champion: Champion) -> None:
    out = load_model(champion.uri).predict(
        pd.DataFrame({"image": [photo(RED), b"not an image", photo(BLUE)]})
    )
    # one bad file costs only its own row
    assert out["class"].tolist() == ["ants", None, "bees"]
    assert out["probability"].iloc[1] is None and out["error"].isna().tolist() == [True, False, True]
    assert "not an image" in out["error"].iloc[1]


def test_the_logged_model_has_a_signature_an_example_and_no_tlbench(
    champion: Champion, mlflow_uri: str
) -> None:
    import mlflow

    folder = Path(mlflow.artifacts.download_artifacts(champion.logged_model_uri, tracking_uri=mlflow_uri))
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    # images in (binary), class and probabilities out; a serving example MLflow checked at logging
    assert "binary" in mlmodel["signature"]["inputs"] and "probabilities" in mlmodel["signature"]["outputs"]
    assert (folder / "serving_input_example.json").is_file()
    assert (folder / "code" / "tlbench_decode.py").is_file()
    requirements = (folder / "requirements.txt").read_text()
    assert "torch==" in requirements and "tlbench" not in requirements


@pytest.mark.slow  # a fresh interpreter importing torch and mlflow: 10-40 s on a shared CPU
def test_the_model_loads_and_predicts_where_tlbench_cannot_be_imported(
    champion: Champion, mlflow_uri: str, tmp_path: Path
) -> None:
    image = tmp_path / "red.png"
    image.write_bytes(photo(RED))
    script = (
        "import sys; sys.modules['tlbench'] = None\n"  # any `import tlbench...` now fails
        "import mlflow, pandas as pd\n"
        f"model = mlflow.pyfunc.load_model({champion.uri!r})\n"
        f"print(model.predict(pd.DataFrame({{'image': [open({str(image)!r}, 'rb').read()]}}))['class'][0])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env={"MLFLOW_TRACKING_URI": mlflow_uri, "PATH": "/usr/bin:/bin"},
    )
    # serving needs torch and mlflow only: the model carries its own decoder
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "ants"


@pytest.mark.parametrize(
    "uri",
    ["models:/no-such-study@champion", "models:/colours@no-such-alias", "runs:/0123456789abcdef/model"],
)
def test_a_model_that_does_not_exist_is_one_line_naming_it(champion: Champion, uri: str) -> None:
    with pytest.raises(TrackingError) as error:
        load_model(uri)
    message = str(error.value)
    # the URI, where it was looked for, and how a champion comes to exist
    assert uri in message and "tlbench export" in message and "\n" not in message
