"""The corrected FLOP counter against hand counts, the stock counter's gaps, and the analytic counter."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any, cast

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.layers import Attention as TimmAttention
from timm.models import group_parameters
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from tlbench.training.flops import (
    StepFlops,
    analytic_train_step_flops,
    counting_mode,
    measure_forward_flops,
    measure_train_step_flops,
)

Counter = Callable[[], FlopCounterMode]


def _stock() -> FlopCounterMode:
    return FlopCounterMode(display=False)


def _freeze(module: nn.Module) -> None:
    for param in module.parameters():
        param.requires_grad_(False)


def _layer_flops(
    layer: nn.Module, x_shape: tuple[int, ...], *, input_grad: bool, counter: Counter
) -> tuple[int, int]:
    """(forward, backward) FLOPs of one layer call, on real CPU tensors."""
    torch.manual_seed(0)
    x = torch.randn(x_shape, requires_grad=input_grad)
    with counter() as fwd:
        y = layer(x)
    if not y.requires_grad:
        return fwd.get_total_flops(), 0
    with counter() as bwd:
        y.sum().backward()
    return fwd.get_total_flops(), bwd.get_total_flops()


def _frozen(layer: nn.Module) -> nn.Module:
    _freeze(layer)
    return layer


# --------------------------------------------------------------------------- single layers by hand

HAND_COUNTED = [
    # dense 3x3 conv 8->16: out 2*16*16*16 = 8192 positions * 72 weights = 589,824 MACs; grad_in + grad_w
    ("dense conv", lambda: nn.Conv2d(8, 16, 3, padding=1), (2, 8, 16, 16), True, 1_179_648, 2_359_296),
    # input needs no grad: only the weight gradient (1x forward)
    (
        "dense conv, data input",
        lambda: nn.Conv2d(8, 16, 3, padding=1),
        (2, 8, 16, 16),
        False,
        1_179_648,
        1_179_648,
    ),
    # frozen conv fed by a grad-requiring tensor: only the input gradient
    (
        "frozen conv",
        lambda: _frozen(nn.Conv2d(8, 16, 3, padding=1)),
        (2, 8, 16, 16),
        True,
        1_179_648,
        1_179_648,
    ),
    # depthwise 3x3 (groups=8): 4096 outputs * 9 = 36,864 MACs; backward is exactly 2x forward
    (
        "depthwise conv",
        lambda: nn.Conv2d(8, 8, 3, padding=1, groups=8),
        (2, 8, 16, 16),
        True,
        73_728,
        147_456,
    ),
    # depthwise with a data input: weight gradient only, 1x forward
    (
        "depthwise conv, data input",
        lambda: nn.Conv2d(8, 8, 3, padding=1, groups=8),
        (2, 8, 16, 16),
        False,
        73_728,
        73_728,
    ),
    # groups=4: 4096 outputs * (2 in-channels * 9) = 73,728 MACs; backward 2x
    ("grouped conv", lambda: nn.Conv2d(8, 8, 3, padding=1, groups=4), (2, 8, 16, 16), True, 147_456, 294_912),
    # stride 2, padding 2, dilation 2 on 15x15: 8x8 outputs, 768 * 36 = 27,648 MACs
    (
        "strided dilated conv",
        lambda: nn.Conv2d(4, 6, 3, stride=2, padding=2, dilation=2),
        (2, 4, 15, 15),
        True,
        55_296,
        110_592,
    ),
    # Conv1d k=5: 2*6*32 = 384 outputs * 20 = 7,680 MACs
    ("conv1d", lambda: nn.Conv1d(4, 6, 5, padding=2), (2, 4, 32), True, 15_360, 30_720),
    # transposed, groups=2: 512 inputs * (3 out-channels * 9) = 13,824 MACs
    (
        "conv transpose",
        lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2),
        (2, 4, 8, 8),
        True,
        27_648,
        55_296,
    ),
    # 4 rows * 16 * 32 = 2,048 MACs
    ("linear 2-D", lambda: nn.Linear(16, 32), (4, 16), True, 4_096, 8_192),
    # leading dims fold into rows: 10 rows
    ("linear 3-D", lambda: nn.Linear(16, 32), (2, 5, 16), True, 10_240, 20_480),
    # frozen linear fed by a grad-requiring tensor: one mm for grad_input
    ("frozen linear", lambda: _frozen(nn.Linear(16, 32)), (4, 16), True, 4_096, 4_096),
    # trainable linear on data: one mm for grad_weight
    ("linear, data input", lambda: nn.Linear(16, 32), (4, 16), False, 4_096, 4_096),
    # frozen layer on data: no backward at all
    ("frozen linear, data input", lambda: _frozen(nn.Linear(16, 32)), (4, 16), False, 4_096, 0),
]


@pytest.mark.parametrize(
    ("layer", "x_shape", "input_grad", "forward", "backward"),
    [row[1:] for row in HAND_COUNTED],
    ids=[row[0] for row in HAND_COUNTED],
)
def test_layer_matches_hand_count(
    layer: Callable[[], nn.Module], x_shape: tuple[int, ...], input_grad: bool, forward: int, backward: int
) -> None:
    assert _layer_flops(layer(), x_shape, input_grad=input_grad, counter=counting_mode) == (forward, backward)


def test_sdpa_cpu_matches_hand_count() -> None:
    q, k, v = (torch.randn(2, 4, 10, 16, requires_grad=True) for _ in range(3))
    with counting_mode() as fwd:
        out = F.scaled_dot_product_attention(q, k, v)
    with counting_mode() as bwd:
        out.sum().backward()
    # scores and values: 2*4*10*10*16 = 12,800 MACs each; backward dP, dV, dQ, dK: 4 x 12,800 MACs
    assert (fwd.get_total_flops(), bwd.get_total_flops()) == (51_200, 102_400)


def test_sdpa_grouped_query_counts_query_heads() -> None:
    q = torch.randn(2, 4, 10, 16, requires_grad=True)
    k, v = (torch.randn(2, 2, 10, 16, requires_grad=True) for _ in range(2))
    with counting_mode() as fwd:
        out = F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    with counting_mode() as bwd:
        out.sum().backward()
    # kv heads are broadcast to the 4 query heads: same work as full multi-head attention
    assert (fwd.get_total_flops(), bwd.get_total_flops()) == (51_200, 102_400)


@pytest.mark.parametrize("fused", [True, False], ids=["sdpa", "eager"])
def test_timm_attention_block_matches_hand_count(fused: bool) -> None:
    torch.manual_seed(0)
    block = TimmAttention(16, num_heads=4)
    block.fused_attn = fused  # type: ignore[misc]
    # qkv 2*5*16*48 = 7,680 MACs; scores + values 2 x 2*4*5*5*4 = 1,600; proj 2*5*16*16 = 2,560
    forward = 2 * (7_680 + 1_600 + 2_560)
    # grad-requiring input, all trainable: both products of each Linear, dP/dV/dQ/dK of attention
    backward = 2 * (2 * 7_680 + 2 * 1_600 + 2 * 2_560)
    assert _layer_flops(block, (2, 5, 16), input_grad=True, counter=counting_mode) == (forward, backward)
    # the analytic counter agrees once a trainable layer makes the block's input require grad
    model = nn.Sequential(nn.Linear(16, 16), block)
    embed = StepFlops(2 * 10 * 16 * 16, 2 * 10 * 16 * 16, batch_size=2)  # data input: grad_w only
    expected = StepFlops(embed.forward + forward, embed.backward + backward, batch_size=2)
    assert analytic_train_step_flops(model, (2, 5, 16)) == expected
    step = measure_train_step_flops(model, torch.randn(2, 5, 16), torch.zeros(2), loss_fn=_mean_square)
    assert step == expected


# --------------------------------------------------------------------------- the stock counter's gaps

STOCK_GAPS = [
    # depthwise: stock ignores groups in grad_weight -> 9x forward instead of 2x
    ("depthwise", lambda: nn.Conv2d(8, 8, 3, padding=1, groups=8), (2, 8, 16, 16), True, (73_728, 663_552)),
    # depthwise, data input: 8x forward instead of 1x
    (
        "depthwise data",
        lambda: nn.Conv2d(8, 8, 3, padding=1, groups=8),
        (2, 8, 16, 16),
        False,
        (73_728, 589_824),
    ),
    # groups=4: 5x forward instead of 2x
    ("grouped", lambda: nn.Conv2d(8, 8, 3, padding=1, groups=4), (2, 8, 16, 16), True, (147_456, 737_280)),
    # dense conv was right: 2x forward
    ("dense", lambda: nn.Conv2d(8, 16, 3, padding=1), (2, 8, 16, 16), True, (1_179_648, 2_359_296)),
]


@pytest.mark.parametrize(
    ("layer", "x_shape", "input_grad", "stock"), [r[1:] for r in STOCK_GAPS], ids=[r[0] for r in STOCK_GAPS]
)
def test_stock_counter_gap_is_as_documented(
    layer: Callable[[], nn.Module], x_shape: tuple[int, ...], input_grad: bool, stock: tuple[int, int]
) -> None:
    # If this fails, torch changed its formulas: update the module docstring of tlbench.training.flops.
    assert _layer_flops(layer(), x_shape, input_grad=input_grad, counter=_stock) == stock


def test_stock_counter_misses_cpu_sdpa() -> None:
    q, k, v = (torch.randn(2, 4, 10, 16, requires_grad=True) for _ in range(3))
    with _stock() as fwd:
        out = F.scaled_dot_product_attention(q, k, v)
    with _stock() as bwd:
        out.sum().backward()
    # the CPU flash kernel and its backward have no stock formula
    assert (fwd.get_total_flops(), bwd.get_total_flops()) == (0, 0)


# --------------------------------------------------------------------------- models: counter == analytic


def _tiny_cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),  # 0: 221,184 FLOPs at 2x3x16x16
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8),  # 3: depthwise, 73,728
        nn.Conv2d(8, 16, 1),  # 4: pointwise, 131,072
        nn.Conv2d(16, 16, 3, stride=2, padding=2, dilation=2, groups=4),  # 5: 147,456
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),  # 10: head, 640
    )


CNN_FORWARD = 221_184 + 73_728 + 131_072 + 147_456 + 640

CNN_FREEZE = [
    # nothing frozen: every layer does grad_in + grad_w, except the stem has no grad_in
    ("none", [], 2 * CNN_FORWARD - 221_184),
    # linear probe: only the head's weight gradient
    ("all but head", list(range(10)), 640),
    # stem conv + BN frozen: depthwise is the first trainable (grad_w only), later layers do both
    ("stem frozen", [0, 1], 73_728 + 2 * (131_072 + 147_456 + 640)),
    # stem conv frozen but its BN trains: the BN output needs grad, so the depthwise pays grad_in too
    ("stem conv frozen, BN trains", [0], 2 * (73_728 + 131_072 + 147_456 + 640)),
    # stem..pointwise frozen
    ("first 5", [0, 1, 2, 3, 4], 147_456 + 2 * 640),
    # only the stem trains: every later frozen layer still pays its input gradient -> backward == forward
    ("frozen after trainable", [1, 3, 4, 5, 6, 10], CNN_FORWARD),
    # everything frozen: no backward
    ("all", list(range(11)), 0),
]


@pytest.mark.parametrize("use_meta", [True, False], ids=["meta", "real"])
@pytest.mark.parametrize(("frozen", "backward"), [r[1:] for r in CNN_FREEZE], ids=[r[0] for r in CNN_FREEZE])
def test_tiny_cnn_freeze_patterns(frozen: list[int], backward: int, use_meta: bool) -> None:
    model = _tiny_cnn()
    for index in frozen:
        _freeze(model[index])
    x, y = torch.randn(2, 3, 16, 16), torch.tensor([1, 2])
    expected = StepFlops(CNN_FORWARD, backward, batch_size=2)
    assert measure_train_step_flops(model, x, y, use_meta=use_meta) == expected
    assert analytic_train_step_flops(model, (2, 3, 16, 16), use_meta=use_meta) == expected


def _lite0() -> nn.Sequential:
    torch.manual_seed(0)
    return _with_head(timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0))


def _with_head(backbone: nn.Module) -> nn.Sequential:
    """The benchmark's network shape: a timm backbone without classifier, then a Linear head."""
    return nn.Sequential(backbone, nn.Linear(cast(int, backbone.num_features), 10))


def _freeze_groups(backbone: Any, depth: int) -> None:
    """Freezes the first ``depth`` coarse timm parameter groups (the benchmark's freeze_depth)."""
    groups = group_parameters(backbone, backbone.group_matcher(coarse=True))
    frozen = {name for group_id in sorted(groups)[:depth] for name in groups[group_id]}
    for name, param in backbone.named_parameters():
        param.requires_grad_(name not in frozen)


def _check_parity(model: nn.Module, x_shape: tuple[int, ...], *, use_meta: bool = True) -> StepFlops:
    x, y = torch.randn(x_shape), torch.arange(x_shape[0]) % 10
    counted = measure_train_step_flops(model, x, y, use_meta=use_meta)
    assert counted == analytic_train_step_flops(model, x_shape, use_meta=use_meta)
    return counted


LITE0_FORWARD = 31_390_592  # 2 samples at 32x32 (15,695,296 per sample)
LITE0_FULL_BACKWARD = 2 * LITE0_FORWARD - 884_736  # all but the stem's grad_in (3->32, 3x3, stride 2)
LITE0_PROBE_BACKWARD = 2 * 2 * 1280 * 10  # head weight gradient only


def test_lite0_linear_probe_backward_is_head_weight_grad() -> None:
    model = _lite0()
    _freeze(model[0])
    # frozen backbone on data: no backbone backward at all
    assert _check_parity(model, (2, 3, 32, 32)) == StepFlops(
        LITE0_FORWARD, LITE0_PROBE_BACKWARD, batch_size=2
    )


def test_lite0_full_finetune() -> None:
    # everything does grad_in + grad_w except the stem, whose input is data (real compute on lite0 gives
    # the same; it is left to the tiny CNN above because oneDNN's first calls make it slow on 2 cores)
    step = _check_parity(_lite0(), (2, 3, 32, 32))
    assert step == StepFlops(LITE0_FORWARD, LITE0_FULL_BACKWARD, batch_size=2)


def test_lite0_partial_freezing() -> None:
    steps = []
    for depth in (2, 5):  # of 8 coarse groups: stem, blocks 0..5, blocks 6 + conv_head
        model = _lite0()
        _freeze_groups(model[0], depth)
        steps.append(_check_parity(model, (2, 3, 32, 32)))
    # freezing never changes the forward; deeper freezing does strictly less backward, above the probe
    assert [step.forward for step in steps] == [LITE0_FORWARD] * 2
    assert LITE0_FULL_BACKWARD > steps[0].backward > steps[1].backward > LITE0_PROBE_BACKWARD


def _vit(*, fused: bool) -> nn.Sequential:
    """vit_tiny at 32 px, patch 8 (17 tokens), cut to 3 blocks to keep the tests fast."""
    torch.manual_seed(0)
    backbone = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32, patch_size=8, depth=3
    )
    for module in backbone.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = fused  # type: ignore[assignment]
    return _with_head(backbone)


VIT_CASES = [
    # full fine-tune, SDPA on the CPU flash kernel
    ("full, fused, real", True, "none", False),
    # full fine-tune, SDPA on meta takes the math path (bmm): same count
    ("full, fused, meta", True, "none", True),
    # full fine-tune, eager q @ k^T and attn @ v
    ("full, eager", False, "none", True),
    # linear probe: backward = head grad_w only
    ("probe, fused", True, "backbone", True),
    # only the patch embedding trains: frozen blocks after it still need input (and q/k/v) gradients
    ("patch embed only, fused", True, "all but patch embed", True),
]


@pytest.mark.parametrize(
    ("fused", "frozen", "use_meta"), [r[1:] for r in VIT_CASES], ids=[r[0] for r in VIT_CASES]
)
def test_vit(fused: bool, frozen: str, use_meta: bool) -> None:
    model = _vit(fused=fused)
    if frozen == "backbone":
        _freeze(model[0])
    elif frozen == "all but patch embed":
        _freeze(model)
        for param in model[0].get_submodule("patch_embed").parameters():
            param.requires_grad_(True)
    step = _check_parity(model, (2, 3, 32, 32), use_meta=use_meta)
    if frozen == "backbone":
        assert step.backward == 2 * 2 * 192 * 10  # head weight gradient
    if frozen == "all but patch embed":
        assert step.forward < step.backward < 2 * step.forward  # one product per layer, four per attention


class _AttentionNet(nn.Module):
    """Embedding -> nn.MultiheadAttention -> mean pool -> head, inputs (B, L, 8)."""

    def __init__(self, *, need_weights: bool, cross: bool = False) -> None:
        super().__init__()
        self.need_weights = need_weights
        self.cross = cross
        self.embed = nn.Linear(8, 16)
        self.values = nn.Linear(8, 12)
        kv_dims = {"kdim": 8, "vdim": 12} if cross else {}
        self.mha = nn.MultiheadAttention(16, 4, batch_first=True, **kv_dims)  # type: ignore[arg-type]
        self.head = nn.Linear(16, 10)

    def forward(self, x: Tensor) -> Tensor:
        h = self.embed(x)
        key, value = (x, self.values(x)) if self.cross else (h, h)
        out, _ = self.mha(h, key, value, need_weights=self.need_weights)
        return self.head(out.mean(1))


MHA_CASES = [
    # need_weights: eager bmm path; all trainable
    ("bmm", True, False, ""),
    # need_weights=False: SDPA (CPU flash) in training
    ("sdpa", False, False, ""),
    # embedding frozen: MHA input needs no grad, projections do grad_w only
    ("sdpa, frozen embed", False, False, "embed"),
    # MHA frozen after a trainable embedding: grad_in through projections and attention
    ("sdpa, frozen mha", False, False, "mha"),
    # cross-attention, separate q/k/v projection weights (kdim=8, vdim=12)
    ("cross", True, True, ""),
    # cross-attention, k/v path frozen: only q needs grad -> no dK, no dV (eager bmm path)
    ("cross, q only", True, True, "kv"),
]


@pytest.mark.parametrize("use_meta", [True, False], ids=["meta", "real"])
@pytest.mark.parametrize(
    ("need_weights", "cross", "frozen"), [r[1:] for r in MHA_CASES], ids=[r[0] for r in MHA_CASES]
)
def test_multihead_attention(need_weights: bool, cross: bool, frozen: str, use_meta: bool) -> None:
    torch.manual_seed(0)
    model = _AttentionNet(need_weights=need_weights, cross=cross)
    if frozen == "embed":
        _freeze(model.embed)
    elif frozen == "mha":
        _freeze(model.mha)
    elif frozen == "kv":
        _freeze(model.values)
        model.mha.k_proj_weight.requires_grad_(False)
        model.mha.v_proj_weight.requires_grad_(False)
    _check_parity(model, (2, 5, 8), use_meta=use_meta)


def test_multihead_attention_matches_hand_count() -> None:
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, batch_first=True)
    # q, k, v, out projections 4 x 2*5*16*16 = 10,240 MACs; scores + values 2 x 2*5*5*16 = 1,600 MACs
    forward = 2 * (10_240 + 1_600)
    # data input: grad_w of 3 in-projections (7,680) + attention 4 products (3,200) + out proj in + w (5,120)
    backward = 2 * (7_680 + 3_200 + 5_120)

    step = measure_train_step_flops(
        _SelfAttention(mha), torch.randn(2, 5, 16), torch.zeros(2), loss_fn=_mean_square
    )
    assert step == StepFlops(forward, backward, batch_size=2)
    assert analytic_train_step_flops(_SelfAttention(mha), (2, 5, 16)) == step


def _mean_square(outputs: Tensor, targets: Tensor) -> Tensor:
    return outputs.square().mean()


# --------------------------------------------------------------------------- forward-only counts


@pytest.mark.parametrize(
    ("build", "use_meta"),
    [(_lite0, True), (lambda: _vit(fused=True), True), (lambda: _vit(fused=True), False), (_tiny_cnn, False)],
    ids=["lite0", "vit", "vit-real", "cnn-real"],
)
def test_forward_flops_equal_analytic_forward(build: Callable[[], nn.Module], use_meta: bool) -> None:
    model = build().eval()
    # inference counts the same products as the training forward
    expected = analytic_train_step_flops(model, (3, 3, 32, 32)).forward
    assert measure_forward_flops(model, torch.randn(3, 3, 32, 32), use_meta=use_meta) == expected


class _SelfAttention(nn.Module):
    def __init__(self, mha: nn.MultiheadAttention) -> None:
        super().__init__()
        self.mha = mha

    def forward(self, x: Tensor) -> Tensor:
        return self.mha(x, x, x)[0]


# --------------------------------------------------------------------------- measurement contract


@pytest.mark.parametrize(
    "build",
    [_tiny_cnn, lambda: _vit(fused=True), lambda: _AttentionNet(need_weights=False)],
    ids=["cnn", "vit", "mha"],
)
def test_flops_are_linear_in_batch(build: Callable[[], nn.Module]) -> None:
    model = build()
    shape = (3, 5, 8) if isinstance(model, _AttentionNet) else (3, 3, 32, 32)
    x, y = torch.randn(6, *shape[1:]), torch.arange(6) % 10
    two = measure_train_step_flops(model, x[:2], y[:2])
    six = measure_train_step_flops(model, x, y)
    # 3x the samples is exactly 3x the FLOPs
    assert (two.batch_size, six.batch_size) == (2, 6)
    assert (3 * two.forward, 3 * two.backward) == (six.forward, six.backward)


def _snapshot(model: nn.Module) -> dict[str, object]:
    return {
        "state": copy.deepcopy(model.state_dict()),
        "grads": {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "training": {n: m.training for n, m in model.named_modules()},
        "devices": {n: p.device for n, p in model.named_parameters()},
    }


def _same(a: dict[str, object], b: dict[str, object]) -> bool:
    def equal(x: object, y: object) -> bool:
        if isinstance(x, Tensor) and isinstance(y, Tensor):
            return torch.equal(x, y)
        if isinstance(x, dict) and isinstance(y, dict):
            return x.keys() == y.keys() and all(equal(x[k], y[k]) for k in x)
        return x == y

    return equal(a, b)


def test_original_model_is_untouched() -> None:
    model = _tiny_cnn()
    _freeze(model[0])
    model[6].eval()  # a BN in eval next to one in train mode
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([1, 2, 3, 4])
    F.cross_entropy(model(x), y).backward()  # existing grads and updated running stats
    before = _snapshot(model)
    for use_meta in (True, False):
        measure_train_step_flops(model, x, y, use_meta=use_meta)
        measure_forward_flops(model, x, use_meta=use_meta)
        analytic_train_step_flops(model, (2, 3, 16, 16), use_meta=use_meta)
    # parameters, grads, BN running statistics, requires_grad and train/eval modes are unchanged
    assert _same(before, _snapshot(model))


class _DataDependent(nn.Module):
    """A model that cannot run on meta: it reads a value."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        scale = 1.0 if x.abs().sum().item() >= 0 else 2.0
        return self.linear(x) * scale


def test_falls_back_to_real_compute_when_meta_fails(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="tlbench.training.flops"):
        step = measure_train_step_flops(_DataDependent(), torch.randn(2, 4), torch.tensor([0, 1]))
    # 2 rows * 4 * 3 = 24 MACs forward; data input -> grad_w only
    assert step == StepFlops(48, 48, batch_size=2)
    assert "meta device failed" in caplog.text


def test_invalid_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="input_shape"):
        analytic_train_step_flops(_tiny_cnn(), ())


# --------------------------------------------------------------------------- BitFit and LoRA (peft)


def _lora(layer: nn.Module, rank: int) -> nn.Module:
    """``layer`` wrapped in a peft LoRA layer (frozen base, trainable A and B), B set non-zero."""
    from tlbench.config.schema import LoraConfig
    from tlbench.training.network import add_lora

    holder = nn.Sequential(layer)
    add_lora(holder, LoraConfig(rank=rank, dropout=0.1), backbone_name="test")
    for name, param in holder.named_parameters():
        param.requires_grad_("lora_" in name)
    return holder


LORA_LAYERS = [
    # conv 8->16 3x3 rank 2 on 2x8x16x16: base 8192 outputs * 72 = 589,824 MACs; A (8->2, 3x3) 1,024 * 72
    # = 73,728; B (2->16, 1x1) 8,192 * 2 = 16,384. Backward: base grad_in only, A and B grad_in + grad_w
    ("conv, grad input", lambda: nn.Conv2d(8, 16, 3, padding=1), 2, (2, 8, 16, 16), True,
     2 * (589_824 + 73_728 + 16_384), 2 * (589_824 + 2 * 73_728 + 2 * 16_384)),
    # first layer (data input): no base backward at all, A grad_w only, B grad_in + grad_w
    ("conv, data input", lambda: nn.Conv2d(8, 16, 3, padding=1), 2, (2, 8, 16, 16), False,
     2 * (589_824 + 73_728 + 16_384), 2 * (73_728 + 2 * 16_384)),
    # strided conv: A takes the base's stride, B is 1x1 on the strided output (4 * 4 * 2 positions)
    ("strided conv", lambda: nn.Conv2d(4, 6, 3, stride=2, padding=1), 3, (2, 4, 8, 8), True,
     2 * (192 * 36 + 96 * 36 + 192 * 3), 2 * (192 * 36 + 2 * 96 * 36 + 2 * 192 * 3)),
    # linear 16->32 rank 4 on 4 rows: base 2,048 MACs, A 256, B 512
    ("linear", lambda: nn.Linear(16, 32), 4, (4, 16), True,
     2 * (2_048 + 256 + 512), 2 * (2_048 + 2 * 256 + 2 * 512)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("layer", "rank", "x_shape", "input_grad", "forward", "backward"),
    [row[1:] for row in LORA_LAYERS],
    ids=[row[0] for row in LORA_LAYERS],
)
def test_lora_layer_matches_hand_count(
    layer: Callable[[], nn.Module], rank: int, x_shape: tuple[int, ...], input_grad: bool, forward: int,
    backward: int,
) -> None:  # fmt: skip
    # the adapter's own products are counted on top of the frozen base layer (dropout counts nothing)
    torch.manual_seed(0)
    model = _lora(layer(), rank)
    model.train()
    assert _layer_flops(model, x_shape, input_grad=input_grad, counter=counting_mode) == (forward, backward)
    if not input_grad:  # a training step from data: both counters agree
        expected = StepFlops(forward, backward, batch_size=x_shape[0])
        assert analytic_train_step_flops(model, x_shape) == expected
        assert measure_train_step_flops(model, torch.randn(x_shape), torch.zeros(x_shape[0]),
                                        loss_fn=_mean_square) == expected  # fmt: skip


def _lite0_kind(trainable: str, *, rank: int = 2) -> nn.Sequential:
    """lite0 + head with the freeze plan of bitfit ("bias_norm") or lora ("adapters")."""
    from tlbench.config.schema import LoraConfig
    from tlbench.training.network import add_lora, fixed_frozen

    model = _lite0()
    if trainable == "adapters":
        add_lora(model[0], LoraConfig(rank=rank), backbone_name="tf_efficientnet_lite0")
    fixed = fixed_frozen(model[0], trainable, backbone_name="tf_efficientnet_lite0")
    for name, param in model[0].named_parameters():
        param.requires_grad_(name not in fixed)
    return model.train()


LITE0_STEM = 884_736  # 2 samples: 3->32 3x3 stride 2, 16x16 outputs
LITE0_HEAD = 51_200  # 2 samples: 1280 -> 10


def test_lite0_bitfit_pays_activation_gradients_but_no_weight_gradient() -> None:
    # the stem's BatchNorm trains, so every conv after the stem computes its input gradient (1x forward)
    # and no conv its weight gradient; the head computes both
    step = _check_parity(_lite0_kind("bias_norm"), (2, 3, 32, 32))
    assert step == StepFlops(LITE0_FORWARD, LITE0_FORWARD - LITE0_STEM + LITE0_HEAD, batch_size=2)


def _adapter_macs(rank: int) -> tuple[int, int]:
    """(all adapters' forward MACs, the stem adapter A's) on 2 samples at 32 px, from layer shapes."""
    backbone = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)
    shapes: dict[str, tuple[int, ...]] = {}
    for name, module in backbone.named_modules():
        if isinstance(module, nn.Conv2d) and module.groups == 1:
            module.register_forward_hook(lambda m, i, o, name=name: shapes.__setitem__(name, tuple(o.shape)))
    backbone(torch.zeros(2, 3, 32, 32))
    total = stem_a = 0
    for name, (batch, out, height, width) in shapes.items():
        conv = backbone.get_submodule(name)
        positions = batch * height * width
        a = positions * rank * conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
        total += a + positions * out * rank
        stem_a = a if name == "conv_stem" else stem_a
    return total, stem_a


def test_lite0_lora_adds_its_adapters_work_to_the_frozen_backbone() -> None:
    # forward: backbone + adapters; backward: the frozen backbone's input gradients (as for bitfit), both
    # products of every adapter, except the stem adapter A, whose input is the data (weight gradient only)
    adapters, stem_a = _adapter_macs(rank=2)
    step = _check_parity(_lite0_kind("adapters", rank=2), (2, 3, 32, 32))
    backward = LITE0_FORWARD - LITE0_STEM + LITE0_HEAD + 2 * (2 * adapters) - 2 * stem_a
    assert step == StepFlops(LITE0_FORWARD + 2 * adapters, backward, batch_size=2)
    # rank 2 on 33 layers: the adapters add 4.0% to the forward work here
    assert 2 * adapters / LITE0_FORWARD == pytest.approx(0.040, abs=0.001)
