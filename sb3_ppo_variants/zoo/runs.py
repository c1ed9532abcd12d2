"""
One seeded training run and its final evaluation, as the benchmarks and ``validate`` measure them: the training
envs seeded with the run's seed, a separate one-env evaluation env seeded with ``seed + 10_000`` (so that its
episodes stay out of training and of the learning curve), and deterministic evaluation episodes of the final model.
"""

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecEnv, VecNormalize, sync_envs_normalization

# Added to a run's seed for its evaluation env
EVAL_SEED_OFFSET = 10_000


def algorithm_class(algo: str) -> type[BaseAlgorithm]:
    """
    :param algo: ``ppo_clip``, ``ppo_penalty``, ``ppo`` (SB3's PPO), ``trpo`` (sb3-contrib's TRPO), or any other name
        of rl_zoo3's algorithm table
    :return: The algorithm's class
    """
    from stable_baselines3 import PPO

    from sb3_ppo_variants.zoo.registration import ZOO_ALGOS

    if algo in ZOO_ALGOS:
        return ZOO_ALGOS[algo]
    # These without importing rl_zoo3, whose import patches gymnasium's TimeLimit for every env made afterwards
    if algo == "ppo":
        return PPO
    if algo == "trpo":
        from sb3_contrib import TRPO

        return TRPO
    from rl_zoo3.utils import ALGOS

    if algo not in ALGOS:
        raise ValueError(f"algo must be one of {sorted({*ALGOS, *ZOO_ALGOS})}, got {algo!r}")
    return ALGOS[algo]


@contextmanager
def seeded_envs(
    env_id: str,
    n_envs: int,
    seed: int,
    normalize: dict[str, Any] | None = None,
    gamma: float = 0.99,
    env_kwargs: dict[str, Any] | None = None,
    monitor_dir: str | None = None,
) -> Iterator[tuple[VecEnv, VecEnv]]:
    """
    The envs of one run, closed on exit.

    :param env_id: The environment's id
    :param n_envs: Training envs
    :param seed: The run's seed
    :param normalize: ``VecNormalize``'s keywords for the training envs (the evaluation env then normalizes
        observations with their statistics, rewards not at all), or None for no normalization
    :param gamma: The discount of ``VecNormalize``'s reward scaling
    :param env_kwargs: Keywords for the env's constructor
    :param monitor_dir: Where the training envs' Monitor files go (None: not written)
    :return: (training envs, evaluation env)
    """
    with ExitStack() as closing:
        env = make_vec_env(env_id, n_envs=n_envs, seed=seed, env_kwargs=env_kwargs, monitor_dir=monitor_dir)
        closing.callback(env.close)
        eval_env = make_vec_env(env_id, n_envs=1, seed=seed + EVAL_SEED_OFFSET, env_kwargs=env_kwargs)
        closing.callback(eval_env.close)
        if normalize is not None:
            env = VecNormalize(env, gamma=gamma, **normalize)
            eval_env = VecNormalize(eval_env, training=False, norm_reward=False)
        yield env, eval_env


def final_returns(model: BaseAlgorithm, env: VecEnv, eval_env: VecEnv, episodes: int) -> list[float]:
    """
    :param model: The trained model
    :param env: Its training envs (their normalization statistics, if any, go to the evaluation env first)
    :param eval_env: The evaluation env
    :param episodes: Deterministic evaluation episodes
    :return: The return of each episode
    """
    sync_envs_normalization(env, eval_env)
    returns, _ = evaluate_policy(
        model, eval_env, n_eval_episodes=episodes, deterministic=True, warn=False, return_episode_rewards=True
    )
    return [float(value) for value in returns]  # type: ignore[union-attr]
