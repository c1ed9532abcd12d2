"""The policy objectives and the adaptive beta rule, as pure functions."""

import math

import pytest
import torch as th

from sb3_ppo_variants.common.adaptive_beta import BETA_MAX, BETA_MIN, adapt_beta
from sb3_ppo_variants.common.objectives import (
    clip_fraction,
    clipped_surrogate_loss,
    kl_penalized_surrogate_loss,
    surrogate_loss,
)

RATIO = th.tensor([0.5, 1.0, 1.5, 1.1])
ADVANTAGES = th.tensor([1.0, -2.0, 2.0, -1.0])


def test_surrogate_loss_hand_computed():
    # r * A = 0.5, -2, 3, -1.1 -> mean 0.1
    assert surrogate_loss(RATIO, ADVANTAGES).item() == pytest.approx(-0.1)


def test_clipped_surrogate_loss_hand_computed():
    # eps = 0.2: min(rA, clip(r)A) = min(0.5, 0.8)=0.5, -2, min(3, 2.4)=2.4, min(-1.1, -1.1)=-1.1 -> mean -0.05
    assert clipped_surrogate_loss(RATIO, ADVANTAGES, 0.2).item() == pytest.approx(0.05)
    assert clip_fraction(RATIO, 0.2).item() == pytest.approx(0.5)


def test_kl_penalized_surrogate_loss_hand_computed():
    kl = th.tensor([0.01, 0.03, 0.0, 0.02])
    # -(0.1 - 2 * 0.015): the surrogate term -0.1 and the penalty 2 * 0.015
    penalized = kl_penalized_surrogate_loss(RATIO, ADVANTAGES, kl, beta=2.0)
    assert penalized.loss.item() == pytest.approx(-0.07)
    assert penalized.terms["surrogate_loss"].item() == pytest.approx(-0.1)
    assert penalized.terms["kl_penalty"].item() == pytest.approx(0.03)
    # with clipping in addition: 0.05 + 2 * 0.015
    clipped = kl_penalized_surrogate_loss(RATIO, ADVANTAGES, kl, beta=2.0, clip_range=0.2)
    assert clipped.loss.item() == pytest.approx(0.08)
    assert clipped.terms["surrogate_loss"].item() == pytest.approx(0.05)
    # beta = 0 without clipping: the plain surrogate (the paper's "no clipping or penalty")
    assert kl_penalized_surrogate_loss(RATIO, ADVANTAGES, kl, beta=0.0).loss.item() == pytest.approx(-0.1)


def test_kl_penalty_gradient():
    ratio = RATIO.clone().requires_grad_(True)
    kl = th.tensor([0.01, 0.03, 0.0, 0.02], requires_grad=True)
    kl_penalized_surrogate_loss(ratio, ADVANTAGES, kl, beta=2.0).loss.backward()
    assert th.allclose(ratio.grad, -ADVANTAGES / 4)
    assert th.allclose(kl.grad, th.full((4,), 2.0 / 4))


@pytest.mark.parametrize(
    "kl, expected",
    [
        (0.001, 0.5),  # below 0.01 / 1.5: halve
        (0.0066, 0.5),
        (0.0067, 1.0),  # inside [0.00667, 0.015]: unchanged
        (0.01, 1.0),
        (0.015, 1.0),
        (0.0151, 2.0),  # above 0.01 * 1.5: double
        (0.5, 2.0),
    ],
)
def test_adapt_beta_paper_rule(kl, expected):
    assert adapt_beta(1.0, kl, kl_target=0.01) == expected


def test_adapt_beta_custom_constants():
    assert adapt_beta(1.0, 0.001, kl_target=0.01, beta_factor=3.0, kl_tolerance=2.0) == pytest.approx(1 / 3)
    assert adapt_beta(1.0, 0.006, kl_target=0.01, beta_factor=3.0, kl_tolerance=2.0) == 1.0
    assert adapt_beta(1.0, 0.03, kl_target=0.01, beta_factor=3.0, kl_tolerance=2.0) == 3.0


def test_adapt_beta_bounds():
    assert adapt_beta(BETA_MIN, 0.0, kl_target=0.01) == BETA_MIN
    assert adapt_beta(BETA_MAX, 1.0, kl_target=0.01) == BETA_MAX
    # The bounds never bind in the paper's range
    assert BETA_MIN <= 1e-3 and BETA_MAX >= 1e3
    beta = 1.0
    for _ in range(2000):
        beta = adapt_beta(beta, 10.0, kl_target=0.01)
    assert math.isfinite(beta) and beta == BETA_MAX
    for _ in range(2000):
        beta = adapt_beta(beta, 0.0, kl_target=0.01)
    assert beta == BETA_MIN > 0
    # ...and from the lower bound it grows again
    assert adapt_beta(beta, 1.0, kl_target=0.01) == 2 * BETA_MIN


@pytest.mark.parametrize("bad_kl", [float("nan"), float("inf")])
def test_adapt_beta_rejects_non_finite_kl(bad_kl):
    with pytest.raises(ValueError, match="kl_divergence must be finite"):
        adapt_beta(1.0, bad_kl, kl_target=0.01)
