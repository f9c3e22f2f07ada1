"""DPO losses on sequence log-probs (pure torch, no model in sight).

Inputs are per-pair sequence log-probs of the chosen and rejected completions under the policy and
under the frozen reference (summed over completion tokens, or averaged when the caller normalises
by length). With h = (pi_c - pi_r) - (ref_c - ref_r):

- sigmoid (Rafailov et al.):          -log sigmoid(beta * h)
- conservative (label-smoothed DPO):  -(1 - eps) log sigmoid(beta * h) - eps log sigmoid(-beta * h)
- ipo (Azar et al.):                  (h - 1 / (2 beta))^2

An optional NLL term on the chosen completion (the paper weights it 0.2 to 1.0) is added as
`nll_weight * mean(chosen_nll)`; `chosen_nll` is the caller's per-pair NLL (token-averaged).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSS_TYPES = ("sigmoid", "conservative", "ipo")


def _preference_loss(h: torch.Tensor, beta: float, loss_type: str, label_smoothing: float) -> torch.Tensor:
    if loss_type == "sigmoid":
        return -F.logsigmoid(beta * h)
    if loss_type == "conservative":
        return -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    if loss_type == "ipo":
        return (h - 1 / (2 * beta)) ** 2
    raise ValueError(f"unknown DPO loss type {loss_type!r} (expected one of {LOSS_TYPES})")


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float,
    loss_type: str,
    label_smoothing: float,
    chosen_nll: torch.Tensor | None = None,
    nll_weight: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean loss over the pairs of a batch, and its metrics as plain floats.

    Metrics: loss, reward_chosen / reward_rejected (implicit rewards beta * (pi - ref), batch means),
    reward_acc (share of pairs whose chosen reward beats the rejected one), margin (mean reward gap),
    logp_chosen / logp_rejected (policy log-probs, batch means), nll (mean chosen NLL, 0 if not given).
    """
    # The reference terms are constants of the optimisation: never let gradient reach them.
    ref_chosen_logps = ref_chosen_logps.detach()
    ref_rejected_logps = ref_rejected_logps.detach()
    chosen_ratio = policy_chosen_logps - ref_chosen_logps
    rejected_ratio = policy_rejected_logps - ref_rejected_logps
    losses = _preference_loss(chosen_ratio - rejected_ratio, beta, loss_type, label_smoothing)
    loss = losses.mean()
    nll_value = 0.0
    if chosen_nll is not None:
        nll_mean = chosen_nll.mean()
        nll_value = float(nll_mean.detach())
        if nll_weight:
            loss = loss + nll_weight * nll_mean
    reward_chosen = (beta * chosen_ratio).detach()
    reward_rejected = (beta * rejected_ratio).detach()
    metrics = {
        "loss": float(loss.detach()),
        "reward_chosen": float(reward_chosen.mean()),
        "reward_rejected": float(reward_rejected.mean()),
        "reward_acc": float((reward_chosen > reward_rejected).float().mean()),
        "margin": float((reward_chosen - reward_rejected).mean()),
        "logp_chosen": float(policy_chosen_logps.detach().mean()),
        "logp_rejected": float(policy_rejected_logps.detach().mean()),
        "nll": nll_value,
    }
    return loss, metrics
