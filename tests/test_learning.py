"""
Learning tests (slow): rl-zoo-like hyperparameters reach the usual thresholds.

Each run stops as soon as a deterministic evaluation (10 episodes) reaches the threshold; the figures per seed
are printed (run with ``-s`` to see them).
"""

from typing import Any

import pytest
from stable_baselines3.common.callbacks import EvalCallback, StopTrainingOnRewardThreshold
from stable_baselines3.common.env_util import make_vec_env

from sb3_ppo_variants import PPOClip, PPOPenalty
from sb3_ppo_variants.zoo import constructor_arguments, zoo_hyperparameters

pytestmark = pytest.mark.slow

SEEDS = (0, 1, 2)


def _zoo_ppo(env_id: str, without_clipping: bool = False) -> dict[str, Any]:
    """rl-zoo's tuned PPO hyperparameters (zoo_configs/ppo_clip.yml); PPOPenalty keeps its defaults instead of clipping."""
    keywords, n_envs, _ = constructor_arguments(zoo_hyperparameters("ppo_clip", env_id))
    if without_clipping:
        keywords.pop("clip_range")
    return {"n_envs": n_envs, **keywords}


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


@pytest.mark.parametrize("fast_mode", [False, True])
@pytest.mark.parametrize("algo", [PPOClip, PPOPenalty])
def test_cartpole(algo, fast_mode):
    hyperparameters = {**_zoo_ppo("CartPole-v1", without_clipping=algo is PPOPenalty), "fast_mode": fast_mode}
    assert len(_reached(algo, "CartPole-v1", 100_000, 475.0, hyperparameters)) >= 2


@pytest.mark.parametrize("fast_mode", [False, True])
def test_pendulum_penalty_gsde(fast_mode):
    hyperparameters = {**_zoo_ppo("Pendulum-v1", without_clipping=True), "fast_mode": fast_mode}
    assert hyperparameters["use_sde"]
    assert len(_reached(PPOPenalty, "Pendulum-v1", 200_000, -400.0, hyperparameters)) >= 2
