"""
Exact KL divergence between two action distributions of an SB3 policy.

The penalty of PPO-Penalty needs ``KL[pi_old(.|s) || pi_new(.|s)]`` of the *joint* action distribution.
The old distribution is not kept as an object (that would need a second copy of the policy):
its parameters are flattened into one tensor per state by :func:`distribution_params` when the rollout
is collected, and :func:`kl_divergence_from_params` compares them with the current distribution.

Layout of the flat parameters, per state:

- Categorical: normalized logits (log-probabilities), ``n`` values
- MultiCategorical: normalized logits of every head, concatenated, ``sum(nvec)`` values
- Bernoulli (MultiBinary): logits, ``n`` values
- DiagGaussian and gSDE: mean then log standard deviation, ``2 * action_dim`` values. For gSDE (and a
  tanh-squashed Gaussian) this is the Gaussian *before* the squashing bijector: KL is invariant under a
  bijection, so it is also the KL of the squashed distributions.

Everything is computed from logits and log standard deviations, never from probabilities: a probability
that underflows to 0 would otherwise give ``0 * log(0) = nan``.
"""

import torch as th
from stable_baselines3.common.distributions import (
    BernoulliDistribution,
    CategoricalDistribution,
    DiagGaussianDistribution,
    Distribution,
    MultiCategoricalDistribution,
    StateDependentNoiseDistribution,
)
from torch.nn import functional as F


def _unsupported(distribution: Distribution) -> TypeError:
    return TypeError(
        f"No exact KL divergence for {type(distribution).__name__}: supported are Categorical, MultiCategorical, "
        "Bernoulli, DiagGaussian (incl. squashed) and StateDependentNoise (gSDE) distributions"
    )


def _gaussian_params(distribution: DiagGaussianDistribution | StateDependentNoiseDistribution) -> th.Tensor:
    normal = distribution.distribution
    return th.cat([normal.loc, th.log(normal.scale)], dim=1)


def distribution_params(distribution: Distribution) -> th.Tensor:
    """
    Flatten the parameters of an SB3 action distribution into one row per state.

    :param distribution: A distribution on which ``proba_distribution()`` has been called
    :return: Tensor of shape ``(batch_size, n_params)``, see the module docstring for the layout
    """
    if isinstance(distribution, CategoricalDistribution):
        return distribution.distribution.logits
    if isinstance(distribution, MultiCategoricalDistribution):
        return th.cat([head.logits for head in distribution.distribution], dim=1)
    if isinstance(distribution, BernoulliDistribution):
        return distribution.distribution.logits
    if isinstance(distribution, (DiagGaussianDistribution, StateDependentNoiseDistribution)):
        return _gaussian_params(distribution)
    raise _unsupported(distribution)


def categorical_kl(old_logits: th.Tensor, new_logits: th.Tensor) -> th.Tensor:
    """
    KL[Cat(old) || Cat(new)] from (possibly unnormalized) logits, summed over the last dimension.

    :param old_logits: Logits of the old distribution, shape ``(batch, n)``
    :param new_logits: Logits of the new distribution, shape ``(batch, n)``
    :return: KL divergence per row, shape ``(batch,)``
    """
    old_log_probs = F.log_softmax(old_logits, dim=-1)
    new_log_probs = F.log_softmax(new_logits, dim=-1)
    return (old_log_probs.exp() * (old_log_probs - new_log_probs)).sum(dim=-1)


def bernoulli_kl(old_logits: th.Tensor, new_logits: th.Tensor) -> th.Tensor:
    """
    KL between independent Bernoulli variables given by logits, summed over the bits.

    :param old_logits: Logits of the old distribution, shape ``(batch, n_bits)``
    :param new_logits: Logits of the new distribution, shape ``(batch, n_bits)``
    :return: KL divergence per row, shape ``(batch,)``
    """
    log_p_one_old, log_p_zero_old = F.logsigmoid(old_logits), F.logsigmoid(-old_logits)
    log_p_one_new, log_p_zero_new = F.logsigmoid(new_logits), F.logsigmoid(-new_logits)
    kl_one = log_p_one_old.exp() * (log_p_one_old - log_p_one_new)
    kl_zero = log_p_zero_old.exp() * (log_p_zero_old - log_p_zero_new)
    return (kl_one + kl_zero).sum(dim=-1)


def diag_gaussian_kl(old_mean: th.Tensor, old_log_std: th.Tensor, new_mean: th.Tensor, new_log_std: th.Tensor) -> th.Tensor:
    """
    KL between diagonal Gaussians, summed over the action dimensions.

    :param old_mean: Mean of the old distribution, shape ``(batch, action_dim)``
    :param old_log_std: Log standard deviation of the old distribution
    :param new_mean: Mean of the new distribution
    :param new_log_std: Log standard deviation of the new distribution
    :return: KL divergence per row, shape ``(batch,)``
    """
    variance_ratio = th.exp(2.0 * (old_log_std - new_log_std))
    scaled_mean_difference = (old_mean - new_mean) * th.exp(-new_log_std)
    kl_per_dim = 0.5 * (variance_ratio + scaled_mean_difference**2 - 1.0) - (old_log_std - new_log_std)
    return kl_per_dim.sum(dim=-1)


def kl_divergence_from_params(old_params: th.Tensor, distribution: Distribution) -> th.Tensor:
    """
    Exact ``KL[old || new]`` of the joint action distribution, for each state.

    :param old_params: Flat parameters of the old distribution, from :func:`distribution_params`
    :param distribution: The new distribution, same type and batch size (gradients flow through it)
    :return: KL divergence per state, shape ``(batch,)``
    """
    return kl_divergence_between_params(old_params, distribution_params(distribution), distribution)


def kl_divergence_between_params(old_params: th.Tensor, new_params: th.Tensor, distribution: Distribution) -> th.Tensor:
    """
    Exact ``KL[old || new]`` of the joint action distribution, for each state, from both distributions' parameters.

    :param old_params: Flat parameters of the old distribution, from :func:`distribution_params`
    :param new_params: Flat parameters of the new distribution, from :func:`distribution_params`
    :param distribution: A distribution of their type (only its type and its heads' sizes are read)
    :return: KL divergence per state, shape ``(batch,)``
    """
    if old_params.shape != new_params.shape:
        raise ValueError(
            f"old_params has shape {tuple(old_params.shape)} but the distribution has parameters of shape "
            f"{tuple(new_params.shape)}"
        )
    if isinstance(distribution, CategoricalDistribution | BernoulliDistribution):
        kl_fn = categorical_kl if isinstance(distribution, CategoricalDistribution) else bernoulli_kl
        return kl_fn(old_params, new_params)
    if isinstance(distribution, MultiCategoricalDistribution):
        head_sizes = list(distribution.action_dims)
        old_heads = th.split(old_params, head_sizes, dim=1)
        new_heads = th.split(new_params, head_sizes, dim=1)
        head_kls = [categorical_kl(old, new) for old, new in zip(old_heads, new_heads, strict=True)]
        return th.stack(head_kls, dim=1).sum(dim=1)
    if isinstance(distribution, DiagGaussianDistribution | StateDependentNoiseDistribution):
        # Gaussians (plain, squashed or gSDE): mean and log std halves
        old_mean, old_log_std = th.chunk(old_params, 2, dim=1)
        new_mean, new_log_std = th.chunk(new_params, 2, dim=1)
        return diag_gaussian_kl(old_mean, old_log_std, new_mean, new_log_std)
    raise _unsupported(distribution)
