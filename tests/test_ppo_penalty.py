"""PPOPenalty against the paper: the penalized objective, the adaptive beta rule applied once per update."""

import copy

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import IdentityEnvMultiBinary, IdentityEnvMultiDiscrete, SimpleMultiObsEnv
from stable_baselines3.common.preprocessing import get_flattened_obs_dim
from stable_baselines3.common.torch_layers import FlattenExtractor
from stable_baselines3.common.utils import set_random_seed
from torch._dynamo.utils import counters
from torch.distributions import Independent, kl_divergence

from sb3_ppo_variants import PPOClip, PPOPenalty
from sb3_ppo_variants.common.evaluation import training_mode
from sb3_ppo_variants.common.kl import distribution_params
from sb3_ppo_variants.ppo_penalty import ppo_penalty as ppo_penalty_module
from sb3_ppo_variants.ppo_penalty.ppo_penalty import FULL_ROLLOUT_PASS_BYTES, states_per_pass

SMALL = {"n_steps": 64, "batch_size": 32, "n_epochs": 4, "device": "cpu"}


class ProbedPPOPenalty(PPOPenalty):
    """Records, for every update, beta before and after, the logged KL and an independently computed KL."""

    def train(self) -> None:
        state_before = copy.deepcopy(self.policy.state_dict())
        beta_before = self.beta
        super().train()
        observations = self.rollout_buffer.flat_observations()
        # SB3 distributions are stateful: two policy objects are needed to hold the old and the new one
        policy_before = self.policy_class(
            self.observation_space, self.action_space, self.lr_schedule, **self._policy_init_kwargs()
        )
        policy_before.load_state_dict(state_before)
        # Both in evaluation mode (dropout off), as the algorithm measures the KL
        policy_before.set_training_mode(False)
        with th.no_grad(), training_mode(self.policy, False):
            old = policy_before.get_distribution(observations)
            new = self.policy.get_distribution(observations)
            if isinstance(old.distribution, list):  # MultiCategorical
                per_state = sum(kl_divergence(p, q) for p, q in zip(old.distribution, new.distribution, strict=True))
            elif isinstance(old.distribution, th.distributions.Categorical):
                per_state = kl_divergence(old.distribution, new.distribution)
            else:  # Normal (incl. gSDE) and Bernoulli: independent dimensions
                per_state = kl_divergence(Independent(old.distribution, 1), Independent(new.distribution, 1))
        self.records.append(
            {
                "beta_before": beta_before,
                "beta_after": self.beta,
                "reference_kl": per_state.mean().item(),
                "logged_kl": self.logger.name_to_value["train/kl"],
                "logged_beta": self.logger.name_to_value["train/beta"],
            }
        )

    def _policy_init_kwargs(self) -> dict:
        return {"use_sde": self.use_sde, **self.policy_kwargs}


def _expected_beta(beta: float, kl: float, kl_target: float, factor: float = 2.0, tolerance: float = 1.5) -> float:
    if kl < kl_target / tolerance:
        return beta / factor
    if kl > kl_target * tolerance:
        return beta * factor
    return beta


@pytest.mark.parametrize(
    "env_id, kwargs",
    [
        ("CartPole-v1", {}),
        ("Pendulum-v1", {}),
        ("Pendulum-v1", {"use_sde": True, "sde_sample_freq": 4}),
        (IdentityEnvMultiDiscrete, {}),
        (IdentityEnvMultiBinary, {}),
    ],
)
def test_beta_follows_the_papers_rule_once_per_update(env_id, kwargs):
    model = ProbedPPOPenalty(
        "MlpPolicy", make_vec_env(env_id, n_envs=2, seed=0), seed=0, learning_rate=3e-3, **SMALL, **kwargs
    )
    model.records = []
    model.learn(64 * 2 * 6)
    assert len(model.records) == 6
    for record in model.records:
        # d is the mean exact KL over the whole rollout, with the final parameters
        assert record["logged_kl"] == pytest.approx(record["reference_kl"], rel=1e-4, abs=1e-7)
        assert record["beta_after"] == pytest.approx(_expected_beta(record["beta_before"], record["logged_kl"], 0.01))
        assert record["logged_beta"] == record["beta_after"]
    # The budget is large enough for beta to move, or the test would prove nothing
    assert any(record["beta_after"] != record["beta_before"] for record in model.records)


def test_fixed_beta_when_kl_target_is_none():
    model = ProbedPPOPenalty("MlpPolicy", "CartPole-v1", seed=0, kl_target=None, beta=3.0, learning_rate=3e-3, **SMALL)
    model.records = []
    model.learn(256)
    assert [record["beta_after"] for record in model.records] == [3.0] * len(model.records)
    assert all(record["logged_kl"] > 0 for record in model.records)


def test_custom_beta_factor_and_tolerance():
    model = ProbedPPOPenalty(
        "MlpPolicy", "CartPole-v1", seed=1, kl_target=1e-3, beta_factor=3.0, kl_tolerance=1.2, learning_rate=3e-3, **SMALL
    )
    model.records = []
    model.learn(384)
    for record in model.records:
        expected = _expected_beta(record["beta_before"], record["logged_kl"], 1e-3, factor=3.0, tolerance=1.2)
        assert record["beta_after"] == pytest.approx(expected)


def test_beta_stays_within_bounds():
    # kl_target far above anything reachable: beta halves every update, and stops at the lower bound
    model = PPOPenalty("MlpPolicy", "CartPole-v1", seed=0, kl_target=100.0, beta=2e-4, n_steps=16, batch_size=16, n_epochs=1)
    model.learn(16 * 5)
    assert model.beta == 1e-4
    # kl_target far below anything reachable: beta doubles every update, and stops at the upper bound
    model = PPOPenalty("MlpPolicy", "CartPole-v1", seed=0, kl_target=1e-12, beta=5e3, n_steps=16, batch_size=16, n_epochs=2)
    model.learn(16 * 5)
    assert model.beta == 1e4


def test_zero_beta_with_clipping_is_ppo_clip():
    """beta = 0 and a clip range: the penalty vanishes and the run is PPO-Clip's, bit for bit."""
    clip = PPOClip("MlpPolicy", "CartPole-v1", seed=5, clip_range=0.2, **SMALL)
    clip.learn(256)
    penalty = PPOPenalty("MlpPolicy", "CartPole-v1", seed=5, clip_range=0.2, beta=0.0, kl_target=None, **SMALL)
    penalty.learn(256)
    for name, tensor in clip.policy.state_dict().items():
        assert th.equal(tensor, penalty.policy.state_dict()[name]), name


def test_penalty_changes_the_update():
    """A large fixed beta keeps the policy much closer to the old one than no penalty does."""
    kl_per_beta = {}
    for beta in (0.0, 100.0):
        model = ProbedPPOPenalty(
            "MlpPolicy", "CartPole-v1", seed=0, kl_target=None, beta=beta, learning_rate=1e-2, n_steps=128, batch_size=64
        )
        model.records = []
        model.learn(256)
        kl_per_beta[beta] = sum(record["logged_kl"] for record in model.records)
    assert kl_per_beta[100.0] < 0.5 * kl_per_beta[0.0]


def test_logs_sb3_keys_and_penalty_keys():
    model = PPOPenalty("MlpPolicy", "Pendulum-v1", seed=0, **SMALL)
    model.learn(128)
    logged = model.logger.name_to_value
    for key in (
        "train/beta",
        "train/kl",
        "train/surrogate_loss",
        "train/kl_penalty",
        "train/policy_gradient_loss",
        "train/value_loss",
        "train/entropy_loss",
        "train/approx_kl",
        "train/clip_fraction",
        "train/explained_variance",
        "train/loss",
        "train/std",
    ):
        assert key in logged, key
    assert "train/clip_range" not in logged
    assert isinstance(model.beta, float)


def test_target_kl_early_stop_still_updates_beta():
    model = ProbedPPOPenalty("MlpPolicy", "CartPole-v1", seed=0, target_kl=1e-5, learning_rate=1e-2, **SMALL)
    model.records = []
    model.learn(256)
    n_rollouts = 256 // SMALL["n_steps"]
    assert model._n_updates < n_rollouts * SMALL["n_epochs"]
    assert len(model.records) == n_rollouts


class CollectionProbedPPOPenalty(ProbedPPOPenalty):
    """Also records the old distribution parameters set at collection, next to a one-pass reference."""

    def collect_rollouts(self, env, callback, rollout_buffer, n_rollout_steps) -> bool:
        complete = super().collect_rollouts(env, callback, rollout_buffer, n_rollout_steps)
        with th.no_grad():
            reference = distribution_params(self.policy.get_distribution(self.rollout_buffer.flat_observations()))
        self.collected.append((self.rollout_buffer.old_distribution_params.clone(), reference))
        return complete


def test_whole_rollout_passes_are_sized_by_memory():
    images, vectors = spaces.Box(0, 255, (1, 84, 84), np.uint8), spaces.Box(-1, 1, (4,), np.float32)
    # The largest power of two that fits: FULL_ROLLOUT_PASS_BYTES holds 74 images of 84x84 as float32
    assert FULL_ROLLOUT_PASS_BYTES // (4 * 84 * 84) == 74
    assert states_per_pass(images, 4096) == 64
    assert states_per_pass(spaces.Box(0, 255, (4, 84, 84), np.uint8), 4096) == 16  # 18 fit
    assert states_per_pass(images, 50) == 50  # never more than the rollout
    assert states_per_pass(vectors, 4096) == 4096
    assert states_per_pass(spaces.Box(0, 1, (3 * 2**20,), np.uint8), 4096) == 1  # 12 MiB a state: never none
    both = spaces.Dict({"image": images, "vector": vectors})
    assert FULL_ROLLOUT_PASS_BYTES // (4 * (84 * 84 + 4)) == 74 and states_per_pass(both, 4096) == 64


@pytest.mark.parametrize(
    "env_id, policy, fast_mode",
    [("CartPole-v1", "MlpPolicy", False), (SimpleMultiObsEnv, "MultiInputPolicy", False), ("CartPole-v1", "MlpPolicy", True)],
)
def test_rollouts_larger_than_one_pass_match_a_one_pass_reference(env_id, policy, fast_mode, monkeypatch):
    """The whole-rollout passes (old parameters at collection, the mean KL after the update) run in chunks."""
    n_steps, n_envs = 256, 2
    set_random_seed(0)
    env = make_vec_env(env_id, n_envs=n_envs, seed=0)
    # Passes of 64 states: 8 per rollout
    monkeypatch.setattr(ppo_penalty_module, "FULL_ROLLOUT_PASS_BYTES", 64 * 4 * get_flattened_obs_dim(env.observation_space))
    assert states_per_pass(env.observation_space, n_steps * n_envs) == 64
    model = CollectionProbedPPOPenalty(
        policy, env, seed=0, learning_rate=3e-3, n_steps=n_steps, batch_size=64, n_epochs=1, device="cpu", fast_mode=fast_mode
    )
    model.records, model.collected = [], []
    if fast_mode:
        th._dynamo.reset()  # what earlier tests of this process compiled (or failed to) is not this model's
    frames_before = counters["frames"]["ok"]
    model.learn(2 * n_steps * n_envs)
    assert len(model.collected) == len(model.records) == 2
    if fast_mode:
        # Compiled once for the chunks of every pass: the rollout forward, the gradient step and the passes
        assert model._fast_path.enabled and counters["frames"]["ok"] - frames_before == 3
    for stored, reference in model.collected:
        assert stored.shape[0] == n_steps * n_envs
        # (batches of other sizes may run other kernels: equal up to float rounding)
        th.testing.assert_close(stored, reference, rtol=1e-5, atol=1e-6)
    for record in model.records:
        assert record["logged_kl"] == pytest.approx(record["reference_kl"], rel=1e-4, abs=1e-7)


class DropoutExtractor(FlattenExtractor):
    """Features with dropout: the policy's output depends on its training mode."""

    def __init__(self, observation_space) -> None:
        super().__init__(observation_space)
        self.dropout = th.nn.Dropout(0.5)

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return self.dropout(super().forward(observations))


def test_whole_rollout_passes_run_in_evaluation_mode():
    """The old distribution and the mean KL are those of the deterministic (evaluation-mode) policy."""
    model = CollectionProbedPPOPenalty(
        "MlpPolicy", "CartPole-v1", seed=0, policy_kwargs={"features_extractor_class": DropoutExtractor}, **SMALL
    )
    model.records, model.collected = [], []
    model.learn(2 * SMALL["n_steps"])
    for stored, reference in model.collected:  # reference: computed right after collection, in evaluation mode
        assert th.equal(stored, reference)
    for record in model.records:
        assert record["logged_kl"] == pytest.approx(record["reference_kl"], rel=1e-4, abs=1e-7)
    assert model.policy.training  # train() leaves it in training mode, as SB3's


class RatioRecordingPPOPenalty(PPOPenalty):
    def _policy_objective(self, ratio, advantages, distribution, rollout_data, scalars):
        self.ratios.append(ratio.detach().clone())
        return super()._policy_objective(ratio, advantages, distribution, rollout_data, scalars)


def test_clip_fraction_without_clipping_is_the_diagnostic_at_sb3s_default_range():
    model = RatioRecordingPPOPenalty("MlpPolicy", "CartPole-v1", seed=0, learning_rate=3e-2, kl_target=None, beta=0.0, **SMALL)
    model.ratios = []
    model.learn(SMALL["n_steps"])
    logged = model.logger.name_to_value["train/clip_fraction"]
    fractions = {eps: np.mean([th.mean((th.abs(r - 1) > eps).float()).item() for r in model.ratios]) for eps in (0.2, 0.3)}
    assert logged == fractions[0.2]
    # The case tells the ranges apart
    assert fractions[0.3] < fractions[0.2]


def test_surrogate_and_penalty_are_logged_apart():
    model = PPOPenalty("MlpPolicy", "CartPole-v1", seed=0, learning_rate=3e-3, beta=5.0, **SMALL)
    model.learn(SMALL["n_steps"])
    logged = model.logger.name_to_value
    assert logged["train/kl_penalty"] > 0
    assert logged["train/surrogate_loss"] + logged["train/kl_penalty"] == pytest.approx(logged["train/policy_gradient_loss"])
    # Without a penalty, the surrogate is the whole policy loss
    model = PPOPenalty("MlpPolicy", "CartPole-v1", seed=0, beta=0.0, kl_target=None, **SMALL)
    model.learn(SMALL["n_steps"])
    logged = model.logger.name_to_value
    assert logged["train/kl_penalty"] == 0.0
    assert logged["train/surrogate_loss"] == pytest.approx(logged["train/policy_gradient_loss"])
