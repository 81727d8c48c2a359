"""The linear probe fitted to convergence: full-batch L-BFGS on frozen features, L2 chosen on validation.

On cached features a linear head costs almost nothing to fit, so it is fitted the way a statistician
would fit a multinomial logistic regression (and as Kumar et al., 2022 fit the LP of LP-FT): the
exact minimum of mean cross-entropy + ``l2``/2 * ||W||^2 over the whole training split, not a few
SGD steps. With ``l2=None`` every value of ``l2_grid`` is fitted (warm-started from the strongest
penalty down) and the one with the best validation accuracy kept; ties go to the strongest penalty
(the simplest model, as scikit-learn's ``LogisticRegressionCV`` breaks them). Small validation sets
often tie: on 49 hymenoptera images every value reaches 100%, and the validation loss would then
always pick the weakest penalty on separable features.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tlbench.config.schema import ProbeConfig
from tlbench.errors import DivergedError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProbeFit:
    """What fitting the probe did; ``evaluations`` counts full-batch forward+backward passes."""

    l2: float
    train_loss: float  # mean cross-entropy on the training features (without the penalty)
    val_acc: float
    val_loss: float
    evaluations: int  # objective + gradient evaluations over all l2 values (the FLOP count's unit)
    iterations: int  # L-BFGS iterations of the chosen l2's fit
    converged: bool  # the chosen fit's gradient max-norm fell below the tolerance
    tried: tuple[tuple[float, float], ...]  # (l2, val/acc) of every value fitted


def _decayed(head: nn.Module) -> list[nn.Parameter]:
    return [p for p in head.parameters() if p.ndim > 1]  # weights, not biases (as weight_decay elsewhere)


def _objective(head: nn.Module, x: torch.Tensor, y: torch.Tensor, l2: float) -> torch.Tensor:
    loss = F.cross_entropy(head(x), y)
    if l2 > 0:
        loss = loss + 0.5 * l2 * sum((p * p).sum() for p in _decayed(head))
    return loss


def _grad_max(head: nn.Module) -> float:
    return max(float(p.grad.abs().max()) for p in head.parameters() if p.grad is not None)


def minimise(
    head: nn.Module, x: torch.Tensor, y: torch.Tensor, *, l2: float, cfg: ProbeConfig
) -> tuple[int, int, bool]:
    """Fit ``head`` in place on (x, y); returns (evaluations, iterations, converged)."""
    params = [p for p in head.parameters() if p.requires_grad]
    optimizer = torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=cfg.max_iter,
        max_eval=cfg.max_iter * 2,
        tolerance_grad=cfg.tolerance,
        tolerance_change=1e-12,
        history_size=20,
        line_search_fn="strong_wolfe",
    )
    evaluations = 0

    def closure() -> torch.Tensor:
        nonlocal evaluations
        evaluations += 1
        optimizer.zero_grad(set_to_none=False)
        loss = _objective(head, x, y, l2)
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    with torch.enable_grad():
        optimizer.step(closure)  # type: ignore[no-untyped-call]
        state = optimizer.state[optimizer._params[0]]  # type: ignore[attr-defined]
        iterations = int(state.get("n_iter", 0))
        closure()  # the gradient at the solution, for the convergence check
        converged = _grad_max(head) <= cfg.tolerance * 10 or iterations < cfg.max_iter
    optimizer.zero_grad(set_to_none=True)
    return evaluations, iterations, converged


@torch.inference_mode()
def _score(head: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    logits = head(x).float()
    return float((logits.argmax(dim=1) == y).float().mean()), float(F.cross_entropy(logits, y))


def fit_probe(
    head: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    cfg: ProbeConfig,
) -> ProbeFit:
    """Fit ``head`` (in place) on frozen training features; choose ``l2`` on validation when unset.

    Args:
        head: the new classifier on pooled features (its current weights are the starting point).
        train: (features, labels) of the training split.
        val: (features, labels) of the validation split: it chooses ``l2`` (when ``cfg.l2`` is None).
        cfg: solver settings.
    """
    x, y = train[0].float(), train[1]
    was_training = head.training
    head.train()  # no dropout in a linear head; an MLP head's dropout is part of its objective
    grid = [cfg.l2] if cfg.l2 is not None else sorted(cfg.l2_grid, reverse=True)
    best: tuple[float, dict[str, torch.Tensor], float, int, bool, float] | None = None
    tried: list[tuple[float, float]] = []
    evaluations = 0
    for l2 in grid:  # warm start: each fit starts from the previous (more penalised) solution
        evals, iterations, converged = minimise(head, x, y, l2=l2, cfg=cfg)
        evaluations += evals
        head.eval()
        val_acc, val_loss = _score(head, val[0].float(), val[1])
        head.train()
        tried.append((l2, val_acc))
        if best is None or val_acc > best[0]:  # strictly better: ties keep the stronger penalty
            state = {k: v.detach().clone() for k, v in head.state_dict().items()}
            best = (val_acc, state, l2, iterations, converged, val_loss)
    assert best is not None  # the grid is never empty (checked by ProbeConfig)
    val_acc, state, l2, iterations, converged, val_loss = best
    head.load_state_dict(state)
    head.train(was_training)
    with torch.inference_mode():
        train_loss = float(F.cross_entropy(head(x), y))
    if not converged:
        log.warning("linear probe (l2=%g) did not converge in %d L-BFGS iterations", l2, cfg.max_iter)
    log.info(
        "linear probe: l2=%g val/acc=%.4f (%d iterations; %d evaluations)",
        l2,
        val_acc,
        iterations,
        evaluations,
    )
    if not math.isfinite(train_loss):
        raise DivergedError(f"linear probe diverged: training loss {train_loss}")
    return ProbeFit(
        l2=l2,
        train_loss=train_loss,
        val_acc=val_acc,
        val_loss=val_loss,
        evaluations=evaluations,
        iterations=iterations,
        converged=converged,
        tried=tuple(tried),
    )
