"""The strategies: one entry per name, read by the config checks, the model builder, the fit and the report.

A strategy says where the weights come from, whether anything trains, how its phases freeze the
backbone, and how reports draw it. ``conf/strategy/<name>.yaml`` holds its default hyperparameters
(LR, backbone LR multiplier): those are Hydra config, overridable per run, and stay there. This
module imports nothing heavy: the report reads it without torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PROBE_PHASE = "linear_probe"  # the name of the probe phase (a strategy's, or lp_ft's first)
FINETUNE_PHASE = "finetune"  # lp_ft's second phase: every layer trains

Freeze = Literal["none", "all", "config"]  # nothing | the whole backbone | strategy.freeze_depth
# Which backbone parameters may train where the freeze leaves them: all of them | only biases and the
# normalisation layers' affine parameters (BitFit) | only low-rank adapters added to the backbone (LoRA)
Trainable = Literal["all", "bias_norm", "adapters"]


@dataclass(frozen=True)
class Strategy:
    name: str
    pretrained: bool  # False: random init whatever backbone.weights says
    trains: bool  # False: as_is, the pretrained classifier used without training
    freeze: Freeze  # what the first (or only) phase freezes
    colour: str  # report figures: fixed per strategy so that every figure reads the same way
    marker: str
    probe_first: bool = False  # the head is fitted on frozen features first (linear_probe, lp_ft)
    then_finetune: bool = False  # after the probe, every layer trains (lp_ft)
    keep_norm_stats: bool = False  # default of strategy.keep_norm_stats (BatchNorm on running statistics)
    needs_class_map: bool = False  # strategy.class_map is required (as_is)
    trainable: Trainable = "all"
    l2_sp: bool = False  # accepts strategy.l2_sp > 0 (fine-tunes pretrained weights: Li et al., 2018)


# In report order: no training first, then from the least to the most trained.
STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        Strategy("as_is", pretrained=True, trains=False, freeze="all", needs_class_map=True,
                 colour="#7f7f7f", marker="X"),
        Strategy("linear_probe", pretrained=True, trains=True, freeze="all", probe_first=True,
                 colour="#1f77b4", marker="o"),
        # Ben Zaken et al. (2022): biases (+ here the normalisation scales) and the head train; the
        # pretrained normalisation statistics stay, as every other pretrained value does
        Strategy("bitfit", pretrained=True, trains=True, freeze="none", trainable="bias_norm",
                 keep_norm_stats=True, colour="#17becf", marker="P"),
        # Hu et al. (2021): low-rank adapters on the frozen backbone's dense layers, and the head
        Strategy("lora", pretrained=True, trains=True, freeze="none", trainable="adapters",
                 colour="#bcbd22", marker="*"),
        Strategy("partial", pretrained=True, trains=True, freeze="config", l2_sp=True,
                 colour="#2ca02c", marker="s"),
        # keep_norm_stats: the fine-tune starts from a probe fitted on features computed with them
        Strategy("lp_ft", pretrained=True, trains=True, freeze="all", probe_first=True, then_finetune=True,
                 keep_norm_stats=True, l2_sp=True, colour="#9467bd", marker="D"),
        Strategy("full_finetune", pretrained=True, trains=True, freeze="none", l2_sp=True,
                 colour="#ff7f0e", marker="^"),
        Strategy("scratch", pretrained=False, trains=True, freeze="none", colour="#d62728", marker="v"),
    )
}  # fmt: skip


def strategy(name: object) -> Strategy:
    """The entry of ``name`` (a string or a ``StrategyName``)."""
    key = str(getattr(name, "value", name))
    if key not in STRATEGIES:
        raise ValueError(f"unknown strategy {key!r}: known {', '.join(STRATEGIES)}")
    return STRATEGIES[key]


# Strategies that train nothing: no training cost, no learning curve, no arms (report.arms).
UNTRAINED = tuple(name for name, s in STRATEGIES.items() if not s.trains)
# Strategies that accept strategy.l2_sp > 0 (any other one refuses it at composition).
L2_SP = tuple(name for name, s in STRATEGIES.items() if s.l2_sp)


# Config keys (as prefixes) that a strategy's training never reads: searching one of them spends tuning
# trials on a parameter with no effect, so the sweep refuses it (issue 19). The linear probe fitted by
# L-BFGS has no learning rate or schedule (its only hyperparameter is the L2 penalty); a strategy that
# trains no probe never reads ``strategy.probe.*``; as_is trains nothing; only lora reads
# ``strategy.lora.*``; ``strategy.l2_sp`` means nothing (and is refused) where no pretrained weight trains.
_TRAINING = ("optimizer.", "schedule.")
_PROBE = ("strategy.probe.",)
_LORA = ("strategy.lora.",)
_L2_SP = ("strategy.l2_sp",)


def ignored_keys(name: str, *, probe_solver: str = "lbfgs") -> tuple[str, ...]:
    """Prefixes of the config keys that strategy ``name`` ignores (see above)."""
    spec = strategy(name)
    own: tuple[str, ...] = () if spec.trainable == "adapters" else _LORA
    own += () if spec.l2_sp else _L2_SP
    if not spec.trains:
        return (*_TRAINING, *_PROBE, "trainer.", "strategy.head.", "strategy.freeze_depth", *own)
    if not spec.probe_first:
        # bitfit and lora choose their trainable parameters by kind, not by depth
        depth = ("strategy.freeze_depth",) if spec.trainable != "all" else ()
        return (*_PROBE, *depth, *own)
    if spec.then_finetune:  # lp_ft: its probe is fitted to convergence, its fine-tune phase trains by SGD
        return own
    if probe_solver == "lbfgs":
        return (*_TRAINING, *own)
    # the SGD probe trains in the loop at optimizer.lr (decay: optimizer.weight_decay), not by L-BFGS
    return ("strategy.probe.l2", "strategy.probe.max_iter", "strategy.probe.tolerance", *own)
