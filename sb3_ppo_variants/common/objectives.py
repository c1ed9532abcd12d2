"""
Policy objectives of Schulman et al. 2017, "Proximal Policy Optimization Algorithms" (arXiv:1707.06347),
written as losses (to minimize) over a minibatch.

Each function takes the probability ratio ``r = pi_new(a|s) / pi_old(a|s)`` and the advantages of the
minibatch; they are pure functions with no state, so each is tested on its own. An objective made of several terms
returns them by name next to its loss (:class:`PolicyLoss`), and the training loop logs each as ``train/<name>``.
Coefficients (clip range, beta) are floats, or 0-d tensors in fast mode (so that a compiled step does not depend on
their values).
"""

from typing import NamedTuple

import torch as th


class PolicyLoss(NamedTuple):
    """A policy objective as a loss to minimize, and the named terms it is the sum of (empty for a single term)."""

    loss: th.Tensor
    terms: dict[str, th.Tensor]


def surrogate_loss(ratio: th.Tensor, advantages: th.Tensor) -> th.Tensor:
    """
    Negated conservative policy iteration surrogate ``-E[r * A]`` (eq. 6 of the paper).

    :param ratio: Probability ratios, shape ``(batch,)``
    :param advantages: Advantage estimates, shape ``(batch,)``
    :return: Scalar loss
    """
    return -(advantages * ratio).mean()


def clipped_surrogate_loss(ratio: th.Tensor, advantages: th.Tensor, clip_range: float | th.Tensor) -> th.Tensor:
    """
    Negated clipped surrogate ``-E[min(r * A, clip(r, 1 - eps, 1 + eps) * A)]`` (eq. 7).

    The float operations are those of SB3's ``PPO.train()`` so that PPO-Clip matches it bit for bit.

    :param ratio: Probability ratios, shape ``(batch,)``
    :param advantages: Advantage estimates, shape ``(batch,)``
    :param clip_range: The clipping parameter epsilon
    :return: Scalar loss
    """
    policy_loss_1 = advantages * ratio
    # torch's stubs take two numbers or two tensors as bounds; clamp takes either
    policy_loss_2 = advantages * th.clamp(ratio, 1 - clip_range, 1 + clip_range)  # type: ignore[arg-type]
    return -th.min(policy_loss_1, policy_loss_2).mean()


def kl_penalized_surrogate_loss(
    ratio: th.Tensor,
    advantages: th.Tensor,
    kl_divergence: th.Tensor,
    beta: float | th.Tensor,
    clip_range: float | th.Tensor | None = None,
) -> PolicyLoss:
    """
    Negated KL-penalized surrogate ``-(E[r * A] - beta * E[KL[pi_old || pi_new]])`` (eq. 8).

    With ``clip_range`` set, the clipped surrogate replaces ``E[r * A]`` (the paper's
    "in addition to" clipping variant).

    :param ratio: Probability ratios, shape ``(batch,)``
    :param advantages: Advantage estimates, shape ``(batch,)``
    :param kl_divergence: Exact KL of the joint action distribution per state, shape ``(batch,)``
    :param beta: Penalty coefficient (>= 0)
    :param clip_range: Optional clipping parameter epsilon
    :return: The loss, and its terms ``surrogate_loss`` (the negated, possibly clipped, surrogate) and
        ``kl_penalty`` (``beta * E[KL]``)
    """
    if clip_range is None:
        surrogate = surrogate_loss(ratio, advantages)
    else:
        surrogate = clipped_surrogate_loss(ratio, advantages, clip_range)
    penalty = beta * kl_divergence.mean()
    return PolicyLoss(surrogate + penalty, {"surrogate_loss": surrogate, "kl_penalty": penalty})


def clip_fraction(ratio: th.Tensor, clip_range: float | th.Tensor) -> th.Tensor:
    """
    Fraction of the ratios outside ``[1 - clip_range, 1 + clip_range]`` (a diagnostic, as SB3 logs it).

    :param ratio: Probability ratios
    :param clip_range: The clipping parameter epsilon
    :return: Scalar tensor in [0, 1]
    """
    return th.mean((th.abs(ratio - 1) > clip_range).float())
