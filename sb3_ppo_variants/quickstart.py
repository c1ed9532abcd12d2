"""
Train PPOPenalty with its default hyperparameters, then evaluate it.

Usage: ``python -m sb3_ppo_variants.quickstart [--env CartPole-v1] [--timesteps 100000] [--seed 0] [--save PATH]``
"""

import argparse
from collections.abc import Sequence

import numpy as np
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_ppo_variants import PPOPenalty


def main(argv: Sequence[str] | None = None) -> float:
    """
    :param argv: Command-line arguments (default: ``sys.argv[1:]``)
    :return: The mean evaluation return
    """
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--env", default="CartPole-v1", help="Gymnasium environment id")
    parser.add_argument("--timesteps", type=int, default=100_000, help="Training budget in environment steps")
    parser.add_argument("--seed", type=int, default=0, help="Random seed")
    parser.add_argument("--eval-episodes", type=int, default=20, help="Episodes of the final deterministic evaluation")
    parser.add_argument("--save", default=None, help="Where to save the trained model (.zip), optional")
    parser.add_argument("--no-progress-bar", action="store_true", help="Do not show the progress bar")
    args = parser.parse_args(argv)

    model = PPOPenalty("MlpPolicy", make_vec_env(args.env, n_envs=1, seed=args.seed), seed=args.seed, device="cpu")
    model.learn(args.timesteps, progress_bar=not args.no_progress_bar)
    if args.save:
        model.save(args.save)

    eval_env = make_vec_env(args.env, n_envs=1, seed=args.seed + 10_000)
    returns, _ = evaluate_policy(
        model, eval_env, n_eval_episodes=args.eval_episodes, deterministic=True, return_episode_rewards=True
    )
    mean_return, std_return = float(np.mean(returns)), float(np.std(returns))
    print(
        f"PPOPenalty on {args.env} after {model.num_timesteps} steps: "
        f"mean evaluation return {mean_return:.1f} +/- {std_return:.1f} over {args.eval_episodes} episodes "
        f"(final beta {model.beta:.4g})"
    )
    return mean_return


if __name__ == "__main__":
    main()
