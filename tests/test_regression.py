"""
Regression guarantee: on CPU, with the same seed and hyperparameters, PPOClip ends with exactly the parameters
(and optimizer state) of SB3's PPO, and logs the same ``train/*`` values.
"""

from typing import Any

import pytest
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import (
    FakeImageEnv,
    IdentityEnvMultiBinary,
    IdentityEnvMultiDiscrete,
    SimpleMultiObsEnv,
)
from stable_baselines3.common.logger import KVWriter, Logger
from stable_baselines3.common.utils import LinearSchedule, set_random_seed

from sb3_ppo_variants import PPOClip

SMALL = {"n_steps": 64, "batch_size": 32, "n_epochs": 3}


class RecordingFormat(KVWriter):
    """Keeps every dumped ``train/*`` key-value, in order."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, Any], step: int = 0) -> None:
        self.records.append({key: value for key, value in key_values.items() if key.startswith("train/")})


def _train(algo_class: type, env_id: Any, n_envs: int, policy: str, timesteps: int, **kwargs: Any) -> tuple[Any, list]:
    # Some envs draw from numpy's global generator when they are built (SimpleMultiObsEnv's images): seed it first,
    # or each run (and each earlier test in the process) would give them other observations
    set_random_seed(0)
    env = make_vec_env(env_id, n_envs=n_envs, seed=0)
    model = algo_class(policy, env, seed=3, device="cpu", **kwargs)
    recorder = RecordingFormat()
    model.set_logger(Logger(folder=None, output_formats=[recorder]))
    model.learn(timesteps)
    # The last update's logs are not dumped by learn(): take them too
    recorder.records.append({k: v for k, v in model.logger.name_to_value.items() if k.startswith("train/")})
    return model, recorder.records


def _assert_same_training(case: dict[str, Any]) -> None:
    reference, reference_logs = _train(PPO, **case)
    ours, our_logs = _train(PPOClip, **case)

    reference_state, our_state = reference.policy.state_dict(), ours.policy.state_dict()
    assert reference_state.keys() == our_state.keys()
    for name, tensor in reference_state.items():
        assert th.equal(tensor, our_state[name]), f"parameter {name} differs"

    reference_optimizer = reference.policy.optimizer.state_dict()["state"]
    our_optimizer = ours.policy.optimizer.state_dict()["state"]
    for index, state in reference_optimizer.items():
        for key, value in state.items():
            assert th.equal(value, our_optimizer[index][key]), f"optimizer state {index}/{key} differs"

    assert len(our_logs) == len(reference_logs) > 1
    for reference_record, our_record in zip(reference_logs, our_logs, strict=True):
        assert our_record.keys() == reference_record.keys()
        for key, value in reference_record.items():
            assert our_record[key] == value, f"{key}: {our_record[key]} != {value}"
    assert ours.num_timesteps == reference.num_timesteps
    assert ours._n_updates == reference._n_updates


CASES = {
    "discrete-1env": {"env_id": "CartPole-v1", "n_envs": 1, "policy": "MlpPolicy", "timesteps": 256},
    "discrete-4envs": {"env_id": "CartPole-v1", "n_envs": 4, "policy": "MlpPolicy", "timesteps": 512},
    "box": {"env_id": "Pendulum-v1", "n_envs": 1, "policy": "MlpPolicy", "timesteps": 256},
    "multidiscrete": {"env_id": IdentityEnvMultiDiscrete, "n_envs": 2, "policy": "MlpPolicy", "timesteps": 256},
    "multibinary": {"env_id": IdentityEnvMultiBinary, "n_envs": 2, "policy": "MlpPolicy", "timesteps": 256},
    "dict-observations": {"env_id": SimpleMultiObsEnv, "n_envs": 2, "policy": "MultiInputPolicy", "timesteps": 256},
    "gsde": {
        "env_id": "Pendulum-v1",
        "n_envs": 2,
        "policy": "MlpPolicy",
        "timesteps": 512,
        "use_sde": True,
        "sde_sample_freq": 4,
    },
    "clip-range-vf": {"env_id": "Pendulum-v1", "n_envs": 1, "policy": "MlpPolicy", "timesteps": 256, "clip_range_vf": 0.2},
    "no-advantage-normalization": {
        "env_id": "CartPole-v1",
        "n_envs": 2,
        "policy": "MlpPolicy",
        "timesteps": 256,
        "normalize_advantage": False,
    },
    "schedules": {
        "env_id": "CartPole-v1",
        "n_envs": 2,
        "policy": "MlpPolicy",
        "timesteps": 384,
        "learning_rate": LinearSchedule(1e-3, 0.0, 1.0),
        "clip_range": LinearSchedule(0.3, 0.05, 1.0),
        "clip_range_vf": lambda progress_remaining: 0.1 + 0.1 * progress_remaining,
    },
    "separate-networks-and-ent-coef": {
        "env_id": "CartPole-v1",
        "n_envs": 1,
        "policy": "MlpPolicy",
        "timesteps": 256,
        "ent_coef": 0.01,
        "policy_kwargs": {"share_features_extractor": False, "net_arch": {"pi": [16], "vf": [32]}},
    },
    # The default Adam runs its multi-tensor implementation here: check it with its other options too
    "adam-options": {
        "env_id": "Pendulum-v1",
        "n_envs": 2,
        "policy": "MlpPolicy",
        "timesteps": 256,
        "policy_kwargs": {"optimizer_kwargs": {"amsgrad": True, "weight_decay": 1e-3, "eps": 1e-5}},
    },
    # Odd minibatch and observation sizes: minibatches that start off the CPU's 64-byte alignment, where the math
    # library picks other kernels (found with one torch thread for 3 rows; see also the test with two threads)
    "odd-minibatches": {"env_id": "Acrobot-v1", "n_envs": 1, "policy": "MlpPolicy", "timesteps": 256, "batch_size": 3},
    "tensor-adam-hyperparameters": {
        "env_id": "CartPole-v1",
        "n_envs": 1,
        "policy": "MlpPolicy",
        "timesteps": 128,
        "policy_kwargs": {"optimizer_kwargs": {"betas": (th.tensor(0.9), th.tensor(0.999))}},
    },
    # A rollout that batch_size does not divide: the last minibatch of every epoch is shorter
    "truncated-minibatch": {"env_id": "CartPole-v1", "n_envs": 2, "policy": "MlpPolicy", "timesteps": 200, "n_steps": 50},
}


@pytest.mark.parametrize("case_name", CASES)
def test_ppo_clip_matches_sb3_ppo(case_name: str) -> None:
    _assert_same_training({**SMALL, **CASES[case_name]})


class SeededImageEnv(FakeImageEnv):
    """FakeImageEnv whose random images follow the reset seed (the original's do not, so runs would differ)."""

    def __init__(self) -> None:
        super().__init__(screen_height=36, screen_width=36, n_channels=1, discrete=True)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self.observation_space.seed(seed)
        return super().reset(seed=seed, options=options)


def test_ppo_clip_matches_sb3_ppo_images_cnn() -> None:
    _assert_same_training(
        {
            "env_id": SeededImageEnv,
            "n_envs": 1,
            "policy": "CnnPolicy",
            "timesteps": 64,
            "n_steps": 32,
            "batch_size": 16,
            "n_epochs": 2,
        }
    )


def test_ppo_clip_matches_sb3_ppo_target_kl_early_stop() -> None:
    case = {
        **SMALL,
        "env_id": "CartPole-v1",
        "n_envs": 2,
        "policy": "MlpPolicy",
        "timesteps": 256,
        "learning_rate": 3e-3,
        "target_kl": 1e-4,
    }
    _assert_same_training(case)
    # The case must really stop early: fewer than n_epochs updates per rollout
    model, _ = _train(PPOClip, **case)
    n_rollouts = 256 // (SMALL["n_steps"] * 2)
    assert model._n_updates < n_rollouts * SMALL["n_epochs"]


def test_ppo_clip_matches_sb3_ppo_odd_minibatches_two_threads() -> None:
    # With two threads the kernels differ for other sizes (7 rows here) than with one
    threads = th.get_num_threads()
    th.set_num_threads(2)
    try:
        _assert_same_training(
            {**SMALL, "env_id": "Acrobot-v1", "n_envs": 1, "policy": "MlpPolicy", "timesteps": 256, "batch_size": 7}
        )
    finally:
        th.set_num_threads(threads)
