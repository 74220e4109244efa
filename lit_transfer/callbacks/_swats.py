r"""SWATS switching criterion (Keskar & Socher 2017), per param group.

"Improving Generalization Performance by Switching from Adam to SGD".

With :math:`p_k` the Adam step actually taken (parameters after minus before) and :math:`g_k` the gradient,

.. math::
    \gamma_k = \frac{p_k^\top p_k}{-p_k^\top g_k}, \qquad
    \lambda_k = \beta_2 \lambda_{k-1} + (1 - \beta_2)\, \gamma_k, \qquad
    \tilde\lambda_k = \frac{\lambda_k}{1 - \beta_2^k},

and the switch happens when :math:`k > 1` and :math:`|\tilde\lambda_k - \gamma_k| < \epsilon` for the whole
model (the estimate over all parameters, as in the paper); each group's SGD learning rate is its own
:math:`\tilde\lambda_k`. Requiring every group to agree at the same step would almost never happen with
mini-batch noise. Steps with :math:`p_k^\top g_k = 0` (e.g. a frozen group) are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.optim import Optimizer


@dataclass
class SwatsState:
    """Per-group running estimates; plain values so they fit a callback ``state_dict``."""

    lambdas: list[float] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    gammas: list[float | None] = field(default_factory=list)
    model_lambda: float = 0.0
    model_steps: int = 0

    def ensure(self, n_groups: int) -> None:
        """Size the per-group lists for ``n_groups`` groups."""
        if len(self.lambdas) != n_groups:
            self.lambdas, self.steps, self.gammas = [0.0] * n_groups, [0] * n_groups, [None] * n_groups

    def corrected(self, i: int, beta2: float) -> float:
        """The bias-corrected estimate (lambda / (1 - beta2**k)) of group ``i``."""
        return self.lambdas[i] / (1.0 - beta2 ** self.steps[i]) if self.steps[i] else 0.0


def snapshot(optimizer: Optimizer) -> list[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]:
    """Per group, ``(param, param copy, grad copy)`` for every parameter that has a gradient."""
    return [
        [(p, p.detach().clone(), p.grad.detach().clone()) for p in group["params"] if p.grad is not None]
        for group in optimizer.param_groups
    ]


def update(state: SwatsState, optimizer: Optimizer, before: list) -> None:
    """Fold one optimizer step into the per-group estimates of ``state`` (each group's SGD learning rate).

    A group without a gradient in this step, or whose step is orthogonal to its gradient, is not counted.
    """
    state.ensure(len(optimizer.param_groups))
    for i, (group, entries) in enumerate(zip(optimizer.param_groups, before)):
        gamma = _gamma(entries)
        state.gammas[i] = gamma
        if gamma is None:
            continue
        beta2 = float(group["betas"][1])
        state.steps[i] += 1
        state.lambdas[i] = beta2 * state.lambdas[i] + (1.0 - beta2) * gamma


def _gamma(entries: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> float | None:
    """``p^T p / (-p^T g)`` of one step over ``entries``; ``None`` without entries or when ``p^T g = 0``."""
    if not entries:
        return None
    step = torch.cat([(p.detach() - old).flatten() for p, old, _ in entries]).double()
    grad = torch.cat([g.flatten() for _, _, g in entries]).double()
    denom = -float(step @ grad)
    return None if denom == 0.0 else float(step @ step) / denom


def update_model(state: SwatsState, optimizer: Optimizer, before: list, eps: float) -> bool:
    """Fold one step into the whole-model estimate; return whether the switching criterion is met."""
    gamma = _gamma([entry for group in before for entry in group])
    if gamma is None:
        return False
    beta2 = float(optimizer.param_groups[0]["betas"][1])
    state.model_steps += 1
    state.model_lambda = beta2 * state.model_lambda + (1.0 - beta2) * gamma
    corrected = state.model_lambda / (1.0 - beta2**state.model_steps)
    return state.model_steps > 1 and abs(corrected - gamma) < eps
