"""
Evaluate an untrained PPOPenalty, train it with its default hyperparameters, then evaluate it again.

Usage: ``python -m sb3_ppo_variants.quickstart [--env CartPole-v1] [--timesteps 100000] [--seed 1] [--save PATH]``

The default seed is 1 because with seed 0 the untrained policy happens to balance CartPole already (500 steps),
which would show nothing of what training does.
"""

import argparse
from collections.abc import Sequence

import numpy as np
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_ppo_variants import PPOPenalty


def _mean_return(model: PPOPenalty, env_id: str, seed: int, n_episodes: int) -> tuple[float, float]:
    """:return: Mean and std of the deterministic return over ``n_episodes`` episodes of a fresh env"""
    returns, _ = evaluate_policy(
        model, make_vec_env(env_id, n_envs=1, seed=seed + 10_000), n_eval_episodes=n_episodes, deterministic=True,
        return_episode_rewards=True,
    )  # fmt: skip
    return float(np.mean(returns)), float(np.std(returns))


def main(argv: Sequence[str] | None = None) -> tuple[float, float]:
    """
    :param argv: Command-line arguments (default: ``sys.argv[1:]``)
    :return: The mean evaluation return before and after training
    """
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--env", default="CartPole-v1", help="Gymnasium environment id")
    parser.add_argument("--timesteps", type=int, default=100_000, help="Training budget in environment steps")
    parser.add_argument("--seed", type=int, default=1, help="Random seed")
    parser.add_argument("--eval-episodes", type=int, default=20, help="Episodes of the final deterministic evaluation")
    parser.add_argument("--save", default=None, help="Where to save the trained model (.zip), optional")
    parser.add_argument("--no-progress-bar", action="store_true", help="Do not show the progress bar")
    args = parser.parse_args(argv)

    model = PPOPenalty("MlpPolicy", make_vec_env(args.env, n_envs=1, seed=args.seed), seed=args.seed, device="cpu")
    before, _ = _mean_return(model, args.env, args.seed, args.eval_episodes)
    model.learn(args.timesteps, progress_bar=not args.no_progress_bar)
    if args.save:
        model.save(args.save)
    after, std_after = _mean_return(model, args.env, args.seed, args.eval_episodes)
    print(
        f"PPOPenalty on {args.env}: mean evaluation return {before:.1f} untrained, {after:.1f} +/- {std_after:.1f} after "
        f"{model.num_timesteps} steps ({args.eval_episodes} deterministic episodes each; final beta {model.beta:.4g})"
    )
    return before, after


if __name__ == "__main__":
    main()
