"""
The one evaluation helper: SB3's ``evaluate_actions`` bit for bit plus the distribution it used; a policy's own
``evaluate_actions`` is respected; the training mode is left as SB3 leaves it.
"""

import pytest
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import IdentityEnvMultiBinary, IdentityEnvMultiDiscrete
from stable_baselines3.common.policies import ActorCriticPolicy

from sb3_ppo_variants import PPOClip, PPOPenalty
from sb3_ppo_variants.common.evaluation import evaluate_actions, training_mode
from sb3_ppo_variants.common.kl import distribution_params


@pytest.mark.parametrize(
    "env_id, kwargs",
    [
        ("CartPole-v1", {}),
        ("Pendulum-v1", {"use_sde": True}),
        (IdentityEnvMultiDiscrete, {}),
        (IdentityEnvMultiBinary, {"policy_kwargs": {"share_features_extractor": False}}),
    ],
)
def test_same_values_as_sb3_evaluate_actions_and_the_distribution(env_id, kwargs):
    model = PPOClip("MlpPolicy", make_vec_env(env_id, n_envs=2, seed=0), n_steps=32, batch_size=32, seed=0, **kwargs)
    model.learn(64)
    batch = next(model.rollout_buffer.get(16))
    actions = batch.actions.long().flatten() if env_id == "CartPole-v1" else batch.actions
    values, log_prob, entropy = model.policy.evaluate_actions(batch.observations, actions)
    evaluation = evaluate_actions(model.policy, batch.observations, actions, with_distribution=True)
    assert th.equal(evaluation.values, values) and th.equal(evaluation.log_prob, log_prob)
    assert th.equal(evaluation.entropy, entropy)
    # The distribution it returns is the one of this minibatch
    reference = distribution_params(model.policy.get_distribution(batch.observations))
    assert th.equal(distribution_params(evaluation.distribution), reference)


class ScaledValuePolicy(ActorCriticPolicy):
    """A custom policy with its own evaluate_actions (the values are doubled)."""

    def evaluate_actions(self, obs, actions):
        values, log_prob, entropy = super().evaluate_actions(obs, actions)
        return 2 * values, log_prob, entropy


def test_a_policys_own_evaluate_actions_is_used():
    model = PPOPenalty(ScaledValuePolicy, "CartPole-v1", n_steps=32, batch_size=32, seed=0)
    model.learn(32)
    batch = next(model.rollout_buffer.get(32))
    actions = batch.actions.long().flatten()
    evaluation = evaluate_actions(model.policy, batch.observations, actions, with_distribution=True)
    plain_values, _, _ = ActorCriticPolicy.evaluate_actions(model.policy, batch.observations, actions)
    assert th.equal(evaluation.values, 2 * plain_values)
    # The distribution of the penalty comes from the policy itself, not from a stale stateful object
    assert th.equal(
        distribution_params(evaluation.distribution), distribution_params(model.policy.get_distribution(batch.observations))
    )
    assert evaluate_actions(model.policy, batch.observations, actions, with_distribution=False).distribution is None


@pytest.mark.parametrize("algo", [PPOClip, PPOPenalty])
def test_training_mode_is_left_as_sb3_leaves_it(algo):
    ours = algo("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32)
    reference = PPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32)
    ours.learn(64)
    reference.learn(64)
    assert ours.policy.training == reference.policy.training
    ours.policy.set_training_mode(False)
    ours.train()
    assert ours.policy.training  # train() switches to training mode and stays there, as SB3's does


def test_training_mode_context_restores_the_mode():
    model = PPOClip("MlpPolicy", "CartPole-v1")
    for mode in (False, True):
        model.policy.set_training_mode(mode)
        with training_mode(model.policy, not mode):
            assert model.policy.training is (not mode)
        assert model.policy.training is mode
