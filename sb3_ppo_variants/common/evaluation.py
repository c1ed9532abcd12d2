"""
The policy's evaluation of a minibatch, the one place where the training loop calls the policy.

:func:`evaluate_actions` returns what SB3's ``ActorCriticPolicy.evaluate_actions`` returns (values, log-probabilities,
entropy) *and* the action distribution it used, so that an objective that needs the distribution (the KL penalty)
gets the one of this minibatch without a second forward pass, and without relying on what the policy's stateful
``action_dist`` holds after some other call. (For SB3's policies the distribution returned is ``action_dist`` itself,
re-parameterized on this minibatch: use it before the policy's next call.) A policy family with other inputs (action
masks, recurrent states) plugs in here.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch as th
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.type_aliases import PyTorchObs


class PolicyEvaluation(NamedTuple):
    values: th.Tensor
    log_prob: th.Tensor
    entropy: th.Tensor | None
    # None only when it was not asked for and the policy has its own ``evaluate_actions``
    distribution: Distribution | None


def evaluate_actions(
    policy: ActorCriticPolicy, observations: PyTorchObs, actions: th.Tensor, with_distribution: bool
) -> PolicyEvaluation:
    """
    Evaluate actions with the current policy.

    For SB3's ``evaluate_actions`` (not overridden by the policy's class) this runs the same operations, in the same
    order, and keeps the distribution. A policy that overrides ``evaluate_actions`` keeps its own, and the
    distribution, if asked for, comes from its ``get_distribution`` (a second forward pass).

    :param policy: An actor-critic policy
    :param observations: Observations of the minibatch
    :param actions: Actions of the minibatch
    :param with_distribution: Whether the distribution is needed
    :return: Values, log-probabilities, entropy and the action distribution
    """
    if type(policy).evaluate_actions is not ActorCriticPolicy.evaluate_actions:
        values, log_prob, entropy = policy.evaluate_actions(observations, actions)
        distribution = policy.get_distribution(observations) if with_distribution else None
        return PolicyEvaluation(values, log_prob, entropy, distribution)
    # SB3's ActorCriticPolicy.evaluate_actions, keeping the distribution
    features = policy.extract_features(observations)
    if policy.share_features_extractor:
        latent_pi, latent_vf = policy.mlp_extractor(features)
    else:
        pi_features, vf_features = features
        latent_pi = policy.mlp_extractor.forward_actor(pi_features)
        latent_vf = policy.mlp_extractor.forward_critic(vf_features)
    # A private method of SB3's policies (SB3's own evaluate_actions calls it; stable-baselines3 is bounded to < 3)
    distribution = policy._get_action_dist_from_latent(latent_pi)
    log_prob = distribution.log_prob(actions)
    values = policy.value_net(latent_vf)
    entropy = distribution.entropy()
    return PolicyEvaluation(values, log_prob, entropy, distribution)


@contextmanager
def training_mode(policy: BasePolicy, mode: bool) -> Iterator[None]:
    """
    Put the policy in training (``True``) or evaluation mode within the block, and back into its mode afterwards.

    :param policy: The policy
    :param mode: The mode within the block (this affects batch norm and dropout)
    """
    previous = policy.training
    policy.set_training_mode(mode)
    try:
        yield
    finally:
        policy.set_training_mode(previous)
