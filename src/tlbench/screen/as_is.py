"""``as_is`` in the screen: the pretrained classifier, its classes mapped onto the target's, on validation.

It needs the source classifier, which the feature backbone drops, so the network is built again with
the ``as_is`` strategy (the same weights, data and normalisation) and run once over validation.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import torch

from tlbench.config.schema import StrategyConfig, StrategyName
from tlbench.cost.flops import measure_forward_flops
from tlbench.data import BatchTransform
from tlbench.models.network import build_model
from tlbench.training.evaluate import evaluate
from tlbench.training.prepare import PreparedTrial


@dataclass(frozen=True)
class AsIsScore:
    accuracy: float  # on the validation split
    seconds: float  # build + forward pass
    flops: float  # forward FLOPs over validation


def as_is_accuracy(prepared: PreparedTrial, class_map: Mapping[str, Sequence[str]]) -> AsIsScore:
    """Validation accuracy of the backbone's own classifier with ``class_map`` (no training)."""
    start = time.perf_counter()
    strategy = StrategyConfig(
        name=StrategyName.as_is, class_map={k: [str(v) for v in vs] for k, vs in class_map.items()}
    )
    cfg = replace(prepared.cfg, strategy=strategy)
    model = build_model(cfg, class_names=prepared.splits.class_names)
    network = model.network.to(prepared.device.torch_device).eval()
    transform = BatchTransform(mean=model.mean, std=model.std)
    val = prepared.splits.val
    batch = prepared.cfg.trainer.eval_batch_size
    batches = (
        (transform(val.images[first : first + batch]), val.labels[first : first + batch])
        for first in range(0, len(val), batch)
    )
    # the trial's own evaluation: the screen's as_is accuracy is the number an as_is trial would log
    accuracy = evaluate(
        network, batches, device_type=prepared.device.kind, precision=prepared.precision
    ).accuracy
    if prepared.device.is_gpu:
        torch.cuda.synchronize(prepared.device.torch_device)
    seconds = time.perf_counter() - start
    probe = transform(val.images[:2])
    flops = measure_forward_flops(network, probe) / probe.shape[0] * len(val)
    return AsIsScore(accuracy=accuracy, seconds=seconds, flops=flops)
