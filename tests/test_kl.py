"""Exact KL[old || new] of every SB3 action distribution, against hand-computed values and torch.distributions."""

import math

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.distributions import (
    BernoulliDistribution,
    CategoricalDistribution,
    DiagGaussianDistribution,
    MultiCategoricalDistribution,
    SquashedDiagGaussianDistribution,
    StateDependentNoiseDistribution,
    make_proba_distribution,
)
from torch.distributions import Bernoulli, Categorical, Independent, Normal, kl_divergence

from sb3_ppo_variants.common.kl import (
    bernoulli_kl,
    categorical_kl,
    diag_gaussian_kl,
    distribution_params,
    kl_divergence_between_params,
    kl_divergence_from_params,
)


def test_categorical_kl_hand_computed():
    old_probs = th.tensor([[0.7, 0.2, 0.1]])
    new_probs = th.tensor([[0.2, 0.3, 0.5]])
    # KL[old || new] = 0.7 ln(0.7/0.2) + 0.2 ln(0.2/0.3) + 0.1 ln(0.1/0.5) ~ 0.6349; the reverse is ~ 0.6758
    expected = 0.7 * math.log(0.7 / 0.2) + 0.2 * math.log(0.2 / 0.3) + 0.1 * math.log(0.1 / 0.5)
    reverse = 0.2 * math.log(0.2 / 0.7) + 0.3 * math.log(0.3 / 0.2) + 0.5 * math.log(0.5 / 0.1)
    kl = categorical_kl(th.log(old_probs), th.log(new_probs))
    assert kl.shape == (1,)
    assert kl.item() == pytest.approx(expected, rel=1e-6)
    assert abs(expected - reverse) > 0.04  # an asymmetric example: a swapped direction would fail


def test_categorical_kl_is_zero_for_equal_and_invariant_to_logit_shift():
    logits = th.tensor([[1.0, -2.0, 0.5, 3.0]])
    assert categorical_kl(logits, logits).item() == pytest.approx(0.0, abs=1e-7)
    assert categorical_kl(logits, logits + 10.0).item() == pytest.approx(0.0, abs=1e-6)


def test_categorical_kl_with_underflowing_probabilities_is_finite():
    # exp(-200) underflows to 0 in float32: from probabilities, 0 * log(0) would be nan
    old_logits = th.tensor([[0.0, -200.0, 5.0]])
    new_logits = th.tensor([[1.0, 150.0, -3.0]])
    assert th.softmax(old_logits, dim=-1)[0, 1] == 0.0
    kl = categorical_kl(old_logits, new_logits)
    assert th.isfinite(kl).all()
    expected = kl_divergence(Categorical(logits=old_logits.double()), Categorical(logits=new_logits.double()))
    assert kl.item() == pytest.approx(expected.item(), rel=1e-5)


def test_bernoulli_kl_hand_computed():
    # p = 0.5 -> q = 0.25 per bit: 0.5 ln(0.5/0.25) + 0.5 ln(0.5/0.75) = 0.5 ln(4/3); two bits
    old_logits = th.zeros(1, 2)
    new_logits = th.full((1, 2), math.log(0.25 / 0.75))
    kl = bernoulli_kl(old_logits, new_logits)
    assert kl.item() == pytest.approx(2 * 0.5 * math.log(4.0 / 3.0), rel=1e-6)


def test_bernoulli_kl_extreme_logits_is_finite():
    kl = bernoulli_kl(th.tensor([[-120.0, 120.0]]), th.tensor([[80.0, -90.0]]))
    assert th.isfinite(kl).all()
    assert kl.item() > 0


def test_diag_gaussian_kl_hand_computed():
    # 1D: KL(N(0, 1) || N(1, 2^2)) = ln 2 + (1 + 1) / 8 - 1/2
    kl = diag_gaussian_kl(th.zeros(1, 1), th.zeros(1, 1), th.ones(1, 1), th.full((1, 1), math.log(2.0)))
    assert kl.item() == pytest.approx(math.log(2.0) + 2.0 / 8.0 - 0.5, rel=1e-6)
    # Two identical dimensions: the joint KL is the sum, twice the 1D value
    kl_2d = diag_gaussian_kl(th.zeros(1, 2), th.zeros(1, 2), th.ones(1, 2), th.full((1, 2), math.log(2.0)))
    assert kl_2d.item() == pytest.approx(2 * kl.item(), rel=1e-6)


def test_kl_direction_is_old_to_new():
    old_mean, old_log_std = th.zeros(1, 1), th.zeros(1, 1)
    new_mean, new_log_std = th.zeros(1, 1), th.full((1, 1), math.log(3.0))
    forward = diag_gaussian_kl(old_mean, old_log_std, new_mean, new_log_std).item()
    reverse = diag_gaussian_kl(new_mean, new_log_std, old_mean, old_log_std).item()
    # KL(N(0,1) || N(0,9)) = ln 3 + 1/18 - 1/2 ; KL(N(0,9) || N(0,1)) = -ln 3 + 9/2 - 1/2
    assert forward == pytest.approx(math.log(3.0) + 1.0 / 18.0 - 0.5, rel=1e-6)
    assert reverse == pytest.approx(-math.log(3.0) + 4.0, rel=1e-6)


def _two_distributions(space: spaces.Space, use_sde: bool = False, **dist_kwargs):
    """Two random parameterizations (old, new) of the SB3 distribution for ``space``, batch of 5."""
    th.manual_seed(0)
    batch, latent_dim = 5, 4
    if dist_kwargs.get("squash_output") and not use_sde:
        old, new = SquashedDiagGaussianDistribution(space.shape[0]), SquashedDiagGaussianDistribution(space.shape[0])
    else:
        old = make_proba_distribution(space, use_sde=use_sde, dist_kwargs=dist_kwargs or None)
        new = make_proba_distribution(space, use_sde=use_sde, dist_kwargs=dist_kwargs or None)
    if isinstance(old, (DiagGaussianDistribution, StateDependentNoiseDistribution)):
        action_dim = int(np.prod(space.shape))
        extra = (th.randn(batch, latent_dim),) if use_sde else ()
        log_std_shape = (latent_dim, action_dim) if use_sde else (action_dim,)
        old.proba_distribution(th.randn(batch, action_dim), 0.3 * th.randn(log_std_shape), *extra)
        new.proba_distribution(th.randn(batch, action_dim), 0.3 * th.randn(log_std_shape), *extra)
    else:
        n_logits = {
            CategoricalDistribution: lambda: old.action_dim,
            MultiCategoricalDistribution: lambda: int(sum(old.action_dims)),
            BernoulliDistribution: lambda: old.action_dims,
        }[type(old)]()
        old.proba_distribution(action_logits=2 * th.randn(batch, n_logits))
        new.proba_distribution(action_logits=2 * th.randn(batch, n_logits))
    return old, new


def _torch_joint_kl(old, new) -> th.Tensor:
    """The joint KL from torch.distributions, built independently of our parameter layout."""
    if isinstance(old, MultiCategoricalDistribution):
        return th.stack([kl_divergence(p, q) for p, q in zip(old.distribution, new.distribution, strict=True)], dim=1).sum(1)
    if isinstance(old, CategoricalDistribution):
        return kl_divergence(old.distribution, new.distribution)
    if isinstance(old, BernoulliDistribution):
        return kl_divergence(Independent(old.distribution, 1), Independent(new.distribution, 1))
    return kl_divergence(Independent(old.distribution, 1), Independent(new.distribution, 1))


@pytest.mark.parametrize(
    "space, use_sde, dist_kwargs, expected_type",
    [
        (spaces.Discrete(4), False, {}, CategoricalDistribution),
        (spaces.MultiDiscrete([3, 2, 5]), False, {}, MultiCategoricalDistribution),
        (spaces.MultiBinary(4), False, {}, BernoulliDistribution),
        (spaces.Box(-1, 1, (3,)), False, {}, DiagGaussianDistribution),
        (spaces.Box(-1, 1, (3,)), False, {"squash_output": True}, SquashedDiagGaussianDistribution),
        (spaces.Box(-1, 1, (3,)), True, {}, StateDependentNoiseDistribution),
        (spaces.Box(-1, 1, (2,)), True, {"squash_output": True}, StateDependentNoiseDistribution),
    ],
)
def test_kl_from_params_matches_torch_joint_kl(space, use_sde, dist_kwargs, expected_type):
    old, new = _two_distributions(space, use_sde, **dist_kwargs)
    assert isinstance(old, expected_type)
    old_params = distribution_params(old)
    assert old_params.shape[0] == 5
    kl = kl_divergence_from_params(old_params, new)
    expected = _torch_joint_kl(old, new)
    assert kl.shape == (5,)
    assert th.allclose(kl, expected, rtol=1e-5, atol=1e-6)
    assert (kl > 0).all()
    # KL of a distribution with itself is zero
    assert th.allclose(kl_divergence_from_params(distribution_params(new), new), th.zeros(5), atol=1e-6)


def test_multicategorical_kl_is_sum_of_heads():
    old, new = _two_distributions(spaces.MultiDiscrete([3, 2]))
    kl = kl_divergence_from_params(distribution_params(old), new)
    per_head = [kl_divergence(p, q) for p, q in zip(old.distribution, new.distribution, strict=True)]
    assert th.allclose(kl, per_head[0] + per_head[1], atol=1e-6)


def test_gaussian_kl_is_sum_over_dimensions_unlike_sb3():
    # SB3's own kl_divergence() returns the per-dimension KL for DiagGaussian: the penalty needs the joint one
    old, new = _two_distributions(spaces.Box(-1, 1, (3,)))
    kl = kl_divergence_from_params(distribution_params(old), new)
    per_dimension = kl_divergence(old.distribution, new.distribution)
    assert per_dimension.shape == (5, 3)
    assert th.allclose(kl, per_dimension.sum(dim=1), atol=1e-6)


def test_kl_gradient_flows_to_new_parameters_only():
    mean = th.zeros(2, 1, requires_grad=True)
    new = DiagGaussianDistribution(1).proba_distribution(mean, th.zeros(1))
    old_params = th.tensor([[1.0, 0.0], [-1.0, 0.0]])
    kl = kl_divergence_from_params(old_params, new).sum()
    kl.backward()
    # d/dmu of (mu_old - mu)^2 / 2 = mu - mu_old
    assert th.allclose(mean.grad, th.tensor([[-1.0], [1.0]]))


def test_kl_shape_mismatch_raises():
    old, new = _two_distributions(spaces.Discrete(4))
    with pytest.raises(ValueError, match="shape"):
        kl_divergence_from_params(distribution_params(old)[:3], new)


def test_unsupported_distribution_raises():
    class UnknownDistribution(CategoricalDistribution.__mro__[1]):  # the abstract Distribution base
        proba_distribution_net = proba_distribution = log_prob = entropy = sample = mode = None  # type: ignore[assignment]
        actions_from_params = log_prob_from_params = None  # type: ignore[assignment]

    with pytest.raises(TypeError, match="No exact KL divergence for UnknownDistribution"):
        distribution_params(UnknownDistribution())
    params = th.zeros(2, 4)
    with pytest.raises(TypeError, match="No exact KL divergence for UnknownDistribution"):
        kl_divergence_between_params(params, params, UnknownDistribution())


def test_bernoulli_torch_reference_matches_hand_formula():
    p, q = 0.3, 0.8
    old = Bernoulli(probs=th.tensor([p]))
    new = Bernoulli(probs=th.tensor([q]))
    hand = p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))
    assert kl_divergence(old, new).item() == pytest.approx(hand, rel=1e-5)
    assert bernoulli_kl(th.logit(th.tensor([[p]])), th.logit(th.tensor([[q]]))).item() == pytest.approx(hand, rel=1e-5)


def test_normal_torch_reference_matches_hand_formula():
    hand = math.log(2.0) + (1.0 + 1.0) / 8.0 - 0.5
    assert kl_divergence(Normal(0.0, 1.0), Normal(1.0, 2.0)).item() == pytest.approx(hand, rel=1e-6)
