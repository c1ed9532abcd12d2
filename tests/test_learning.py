"""
Learning tests (slow): rl-zoo-like hyperparameters reach the usual thresholds.

Each run stops as soon as a deterministic evaluation (10 episodes) reaches the threshold; the figures per seed
are printed (run with ``-s`` to see them).
"""

from typing import Any

import pytest
from stable_baselines3.common.callbacks import EvalCallback, StopTrainingOnRewardThreshold
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.utils import LinearSchedule

from sb3_ppo_variants import PPOClip, PPOPenalty

pytestmark = pytest.mark.slow

SEEDS = (0, 1, 2)

# rl-zoo's tuned PPO hyperparameters for CartPole-v1 (ppo.yml); PPOPenalty keeps its defaults
# (no clipping, kl_target=0.01, beta=1) instead of the clip range.
CARTPOLE: dict[str, Any] = {
    "n_envs": 8,
    "n_steps": 32,
    "batch_size": 256,
    "gae_lambda": 0.8,
    "gamma": 0.98,
    "n_epochs": 20,
    "ent_coef": 0.0,
    "learning_rate": LinearSchedule(1e-3, 0.0, 1.0),
}
# rl-zoo's PPO hyperparameters for Pendulum-v1 (gSDE)
PENDULUM: dict[str, Any] = {
    "n_envs": 4,
    "n_steps": 1024,
    "gae_lambda": 0.95,
    "gamma": 0.9,
    "n_epochs": 10,
    "ent_coef": 0.0,
    "learning_rate": 1e-3,
    "use_sde": True,
    "sde_sample_freq": 4,
}


def _best_evaluation(algo: type, env_id: str, seed: int, budget: int, threshold: float, hyperparameters: dict) -> float:
    kwargs = dict(hyperparameters)
    n_envs = kwargs.pop("n_envs")
    model = algo("MlpPolicy", make_vec_env(env_id, n_envs=n_envs, seed=seed), seed=seed, device="cpu", **kwargs)
    evaluation = EvalCallback(
        make_vec_env(env_id, n_envs=1, seed=seed + 1000),
        callback_on_new_best=StopTrainingOnRewardThreshold(threshold),
        eval_freq=max(5_000 // n_envs, 1),
        n_eval_episodes=10,
    )
    model.learn(budget, callback=evaluation)
    print(
        f"{algo.__name__} {env_id} seed={seed}: best mean evaluation return {evaluation.best_mean_reward:.1f} "
        f"after {model.num_timesteps} steps"
    )
    return evaluation.best_mean_reward


def _reached(algo: type, env_id: str, budget: int, threshold: float, hyperparameters: dict) -> list[float]:
    results = [_best_evaluation(algo, env_id, seed, budget, threshold, hyperparameters) for seed in SEEDS]
    return [result for result in results if result >= threshold]


@pytest.mark.parametrize("algo, extra", [(PPOClip, {"clip_range": LinearSchedule(0.2, 0.0, 1.0)}), (PPOPenalty, {})])
def test_cartpole(algo, extra):
    assert len(_reached(algo, "CartPole-v1", 100_000, 475.0, {**CARTPOLE, **extra})) >= 2


def test_pendulum_penalty_gsde():
    assert len(_reached(PPOPenalty, "Pendulum-v1", 200_000, -400.0, PENDULUM)) >= 2
