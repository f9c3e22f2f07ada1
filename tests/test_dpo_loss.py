"""DPO losses against values computed by hand (see the comments for the arithmetic)."""

from __future__ import annotations

import math

import pytest
import torch

from learner.loss import dpo_loss

# Two pairs. Policy - reference log-ratios: chosen [1, 0], rejected [-1, 1]; so h = [2, -1].
PC = [-10.0, -12.0]
PR = [-14.0, -11.0]
RC = [-11.0, -12.0]
RR = [-13.0, -12.0]


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def run(loss_type: str, beta: float = 0.5, label_smoothing: float = 0.0, **kw):
    t = [torch.tensor(v, requires_grad=(i < 2)) for i, v in enumerate((PC, PR, RC, RR))]
    loss, metrics = dpo_loss(*t, beta=beta, loss_type=loss_type, label_smoothing=label_smoothing, **kw)
    return loss, metrics, t


def test_sigmoid_loss_and_metrics():
    loss, m, _ = run("sigmoid")
    # -log sigmoid(x) = softplus(-x); beta * h = [1, -0.5]
    expected = (softplus(-1.0) + softplus(0.5)) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.6436693, abs=1e-6)
    assert m["loss"] == pytest.approx(expected, abs=1e-6)
    # rewards: beta * ratio -> chosen [0.5, 0], rejected [-0.5, 0.5]
    assert m["reward_chosen"] == pytest.approx(0.25)
    assert m["reward_rejected"] == pytest.approx(0.0)
    assert m["reward_acc"] == pytest.approx(0.5)  # first pair right, second wrong
    assert m["margin"] == pytest.approx((1.0 - 0.5) / 2)
    assert m["logp_chosen"] == pytest.approx(-11.0)
    assert m["logp_rejected"] == pytest.approx(-12.5)
    assert m["nll"] == 0.0


def test_sigmoid_gradient_reaches_policy_only():
    loss, _, (pc, pr, rc, rr) = run("sigmoid")
    loss.backward()
    # d/dh -log sigmoid(beta h) = -beta sigmoid(-beta h); averaged over 2 pairs
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    expected = [-0.5 * sig(-1.0) / 2, -0.5 * sig(0.5) / 2]
    assert pc.grad.tolist() == pytest.approx(expected, abs=1e-6)
    assert pr.grad.tolist() == pytest.approx([-g for g in expected], abs=1e-6)
    assert rc.grad is None and rr.grad is None


def test_reference_with_grad_gets_none():
    t = [torch.tensor(v, requires_grad=True) for v in (PC, PR, RC, RR)]
    loss, _ = dpo_loss(*t, beta=0.5, loss_type="sigmoid", label_smoothing=0.0)
    loss.backward()
    assert t[2].grad is None and t[3].grad is None


def test_conservative_loss():
    loss, _, _ = run("conservative", label_smoothing=0.1)
    # (1 - eps) softplus(-beta h) + eps softplus(beta h) per pair, beta h = [1, -0.5]
    per_pair = [0.9 * softplus(-1.0) + 0.1 * softplus(1.0), 0.9 * softplus(0.5) + 0.1 * softplus(-0.5)]
    assert loss.item() == pytest.approx(sum(per_pair) / 2, abs=1e-6)
    assert loss.item() == pytest.approx(0.6686694, abs=1e-6)


def test_conservative_without_smoothing_is_sigmoid():
    assert run("conservative")[0].item() == pytest.approx(run("sigmoid")[0].item(), abs=1e-7)


def test_ipo_loss():
    loss, _, _ = run("ipo", beta=0.5)
    # (h - 1/(2 beta))^2 = (2 - 1)^2 and (-1 - 1)^2 -> mean 2.5
    assert loss.item() == pytest.approx(2.5, abs=1e-6)


def test_nll_term_added_with_weight():
    nll = torch.tensor([2.0, 4.0])
    base, _, _ = run("sigmoid")
    loss, m, _ = run("sigmoid", chosen_nll=nll, nll_weight=0.2)
    assert loss.item() == pytest.approx(base.item() + 0.2 * 3.0, abs=1e-6)
    assert m["nll"] == pytest.approx(3.0)
    # reported but not trained on when the weight is 0
    loss0, m0, _ = run("sigmoid", chosen_nll=nll, nll_weight=0.0)
    assert loss0.item() == pytest.approx(base.item(), abs=1e-7)
    assert m0["nll"] == pytest.approx(3.0)


def test_equal_policy_and_reference_gives_log2():
    x = torch.tensor([-3.0, -7.0, -1.0])
    loss, m = dpo_loss(x, x - 1, x, x - 1, beta=0.1, loss_type="sigmoid", label_smoothing=0.0)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-7)
    assert m["reward_acc"] == 0.0 and m["margin"] == 0.0


def test_unknown_loss_type():
    with pytest.raises(ValueError, match="unknown DPO loss"):
        run("hinge")
