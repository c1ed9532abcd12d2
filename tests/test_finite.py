"""A non-finite observation, reward, loss or gradient stops training with a clear error, parameters unchanged."""

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.env_util import make_vec_env

from sb3_ppo_variants import NonFiniteError, PPOClip, PPOPenalty
from sb3_ppo_variants.common.finite import UpdateRollback

ALGOS = [PPOClip, PPOPenalty]


class BrokenEnv(gym.Env):
    """Returns a NaN (or inf) in the observation or the reward from step ``broken_from`` on."""

    def __init__(self, broken_from: int = 40, where: str = "observation", value: float = float("nan")) -> None:
        self.observation_space = spaces.Box(-1.0, 1.0, (3,), dtype=np.float32)
        self.action_space = spaces.Discrete(2)
        self.broken_from, self.where, self.value = broken_from, where, value
        self.n_steps = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        self.n_steps += 1
        observation, reward = self.observation_space.sample(), 1.0
        if self.n_steps >= self.broken_from:
            if self.where == "observation":
                observation[1] = self.value
            else:
                reward = self.value
        return observation, reward, False, self.n_steps % 25 == 0, {}


def _parameters(model) -> dict[str, th.Tensor]:
    return {name: value.clone() for name, value in model.policy.state_dict().items()}


def _assert_unchanged(before: dict[str, th.Tensor], model) -> None:
    after = model.policy.state_dict()
    assert all(th.equal(value, after[name]) for name, value in before.items())
    assert all(th.isfinite(value).all() for value in after.values())


def _optimizer_state(model) -> dict:
    return {k: {n: t.clone() for n, t in s.items()} for k, s in model.policy.optimizer.state_dict()["state"].items()}


def _assert_optimizer_unchanged(before: dict, model) -> None:
    for index, state in model.policy.optimizer.state_dict()["state"].items():
        assert all(th.equal(value, before[index][name]) for name, value in state.items())


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize(
    "where, value", [("observation", float("nan")), ("observation", float("inf")), ("reward", float("nan"))]
)
def test_broken_env_raises_before_the_model_is_touched(algo, where, value):
    env = make_vec_env(BrokenEnv, n_envs=2, env_kwargs={"broken_from": 30, "where": where, "value": value})
    model = algo("MlpPolicy", env, n_steps=16, batch_size=16, n_epochs=2, seed=0, device="cpu")
    model.learn(32)  # the first 2 rollouts (16 steps per env) are clean
    before = _parameters(model)
    with pytest.raises(NonFiniteError, match=f"non-finite {where}s? .*env indices \\[0, 1\\]"):
        model.learn(64, reset_num_timesteps=False)
    _assert_unchanged(before, model)


@pytest.mark.parametrize("algo", ALGOS)
def test_non_finite_loss_is_not_applied(algo):
    model = algo("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=16, n_epochs=1, seed=0, device="cpu")
    model.learn(32)
    before, optimizer_before = _parameters(model), _optimizer_state(model)
    # Bypasses the constructor's checks on purpose: an overflowing value loss
    model.vf_coef = float("inf")
    with pytest.raises(NonFiniteError, match=r"Non-finite gradient_norm=(nan|inf).*parameters are unchanged"):
        model.learn(32, reset_num_timesteps=False)
    _assert_unchanged(before, model)
    _assert_optimizer_unchanged(optimizer_before, model)


@pytest.mark.parametrize("algo", ALGOS)
def test_a_non_finite_step_late_in_an_update_undoes_the_whole_update(algo):
    model = algo("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=16, n_epochs=3, seed=0, device="cpu")
    model.learn(32)
    before, optimizer_before, n_updates = _parameters(model), _optimizer_state(model), model._n_updates
    original_value_loss = model._value_loss
    calls = []

    def value_loss_overflowing_at_step_4(*args):
        calls.append(None)
        loss = original_value_loss(*args)
        return loss * float("inf") if len(calls) == 4 else loss

    model._value_loss = value_loss_overflowing_at_step_4
    with pytest.raises(NonFiniteError, match=r"value_loss=inf.* gradient step 4 of the update; the update was undone"):
        model.learn(32, reset_num_timesteps=False)
    # Two steps per epoch, checked once per update: all six steps ran, and the five others were undone with step 4
    assert model._n_updates == n_updates  # the undone update's epochs are not counted
    assert len(calls) == 6
    _assert_unchanged(before, model)
    _assert_optimizer_unchanged(optimizer_before, model)


def test_non_finite_kl_is_reported():
    model = PPOPenalty("MlpPolicy", "Pendulum-v1", n_steps=32, batch_size=16, n_epochs=1, seed=0, device="cpu")
    model.learn(32)
    before = _parameters(model)
    original = model._rollout_distribution_params

    def impossible_old_distribution(buffer) -> th.Tensor:
        # A standard deviation of 0 makes the KL infinite
        params = original(buffer)
        params[:, params.shape[1] // 2 :] = -float("inf")
        return params

    model._rollout_distribution_params = impossible_old_distribution
    with pytest.raises(NonFiniteError, match=r"policy_loss=(nan|inf)"):
        model.learn(32, reset_num_timesteps=False)
    _assert_unchanged(before, model)


class BrokenResetEnv(BrokenEnv):
    """Returns a NaN observation on reset."""

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        observation, info = super().reset(seed=seed, options=options)
        observation[0] = float("nan")
        return observation, info


class BrokenTerminalObservationEnv(BrokenEnv):
    """Episodes are truncated every 5 steps; the last observation of each episode is NaN."""

    def step(self, action):
        observation, reward, terminated, _, info = super().step(action)
        truncated = self.n_steps % 5 == 0
        if truncated:
            observation[2] = float("nan")
        return observation, reward, terminated, truncated, info


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize(
    "env_class, message",
    [
        (BrokenResetEnv, r"non-finite observations \(env indices \[0, 1\]\) at timestep 0"),
        (BrokenTerminalObservationEnv, r"non-finite terminal_observation \(env indices \[0, 1\]\) at timestep 10"),
    ],
)
def test_non_finite_reset_and_terminal_observations(algo, env_class, message):
    env = make_vec_env(env_class, n_envs=2, env_kwargs={"broken_from": 10**9})
    model = algo("MlpPolicy", env, n_steps=16, batch_size=16, n_epochs=1, seed=0, device="cpu")
    before = _parameters(model)
    with pytest.raises(NonFiniteError, match=message):
        model.learn(32)
    _assert_unchanged(before, model)


def test_non_finite_mean_kl_undoes_the_update_and_leaves_beta_unchanged():
    model = PPOPenalty("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=16, n_epochs=1, seed=0, device="cpu")
    model.learn(32)
    beta, before = model.beta, _parameters(model)
    original = model._rollout_kl_divergences
    model._rollout_kl_divergences = lambda old_params: original(old_params) * float("nan")
    with pytest.raises(NonFiniteError, match="mean KL divergence of the update is nan; the update was undone"):
        model.learn(32, reset_num_timesteps=False)
    assert model.beta == beta
    _assert_unchanged(before, model)


def test_an_interrupted_update_is_undone():
    model = PPOClip("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=16, n_epochs=2, seed=0, device="cpu")
    model.learn(32)
    before, optimizer_before = _parameters(model), _optimizer_state(model)
    original_value_loss = model._value_loss
    calls = []

    def interrupted_at_step_3(*args):
        calls.append(None)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original_value_loss(*args)

    model._value_loss = interrupted_at_step_3
    with pytest.raises(KeyboardInterrupt):
        model.learn(32, reset_num_timesteps=False)
    # Two optimizer steps were taken before the interrupt, and undone with it
    _assert_unchanged(before, model)
    _assert_optimizer_unchanged(optimizer_before, model)


def _rollback_fixture():
    policy = PPOClip("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=16, device="cpu").policy
    return policy, {name: value.clone() for name, value in policy.state_dict().items()}


def test_rollback_restores_when_leaving_the_block_with_an_unchecked_non_finite_step():
    policy, before = _rollback_fixture()
    expected = pytest.raises(NonFiniteError, match=r"Non-finite value_loss=nan in gradient step 2")
    with expected, UpdateRollback(policy, ("policy_loss", "value_loss")) as rollback:
        rollback.record(th.tensor(0.5), th.tensor(1.0))
        next(policy.parameters()).data += 1.0  # a step was taken
        rollback.record(th.tensor(0.5), th.tensor(float("nan")))
    assert all(th.equal(value, policy.state_dict()[name]) for name, value in before.items())


def test_rollback_catches_parameters_made_non_finite_from_finite_terms():
    policy, before = _rollback_fixture()
    expected = pytest.raises(NonFiniteError, match=r"optimizer made a parameter non-finite in gradient steps 1-1")
    with expected, UpdateRollback(policy, ("policy_loss",)) as rollback:
        rollback.record(th.tensor(0.5))
        next(policy.parameters()).data[0] = float("nan")  # e.g. Adam with eps=0 and a zero gradient: 0 / 0
        rollback.check()
    assert all(th.equal(value, policy.state_dict()[name]) for name, value in before.items())


def test_penalty_train_twice_on_one_rollout_keeps_the_collecting_policy_as_reference():
    model = PPOPenalty("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=16, n_epochs=2, seed=0, device="cpu")
    model.learn(32)
    reference = model.rollout_buffer.old_distribution_params.clone()
    model.train()
    assert th.equal(model.rollout_buffer.old_distribution_params, reference)


def test_penalty_train_without_rollout():
    model = PPOPenalty("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=16, device="cpu")
    # A full buffer that collect_rollouts() did not fill has no old distribution
    model.learn(32)
    model.rollout_buffer.old_distribution_params = None
    with pytest.raises(RuntimeError, match="needs a rollout collected by collect_rollouts"):
        model.train()


@pytest.fixture
def default_validation():
    """Restores torch.distributions' process-wide validation default, which a test sets."""
    previous = th.distributions.Distribution._validate_args
    yield th.distributions.Distribution.set_default_validate_args
    th.distributions.Distribution.set_default_validate_args(previous)


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("enabled", [True, False])
def test_distribution_validation_is_restored_after_learn(algo, enabled, default_validation):
    """learn() turns torch.distributions validation off for speed, and restores the caller's default, also after an error."""
    # Set here: torch turns the default off for good when a process first compiles (torch._dynamo's TorchPatcher),
    # so an earlier fast-mode test in the same process would decide the starting value otherwise
    default_validation(enabled)
    env = make_vec_env(BrokenEnv, n_envs=1, env_kwargs={"broken_from": 20})
    model = algo("MlpPolicy", env, n_steps=16, batch_size=16, n_epochs=1, device="cpu")
    validation_in_learn = []
    model.learn(16, callback=lambda *_: validation_in_learn.append(th.distributions.Distribution._validate_args) or True)
    assert validation_in_learn and not any(validation_in_learn)
    assert th.distributions.Distribution._validate_args is enabled
    with pytest.raises(NonFiniteError):
        model.learn(32, reset_num_timesteps=False)
    assert th.distributions.Distribution._validate_args is enabled
