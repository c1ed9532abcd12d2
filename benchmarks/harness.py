"""
Benchmark harness: declarative runs (algorithm + settings, env, seed, timesteps), run by a pool of worker processes,
resumable (every finished run appends one row to a CSV; a re-run skips the runs already there).

    python -m benchmarks.harness --suite paper --workers 2          # the PPO paper's Table 1 sweep
    python -m benchmarks.harness --suite zoo --timesteps 100000     # side by side with SB3 PPO and sb3-contrib TRPO
    python -m benchmarks.report                                      # tables and plots into docs/

Per run: the paper's score (mean return of the last 100 training episodes), a deterministic evaluation return
(10 episodes), wall time and steps/second (``runs.csv``); the learning curve, from the run's Monitor logs
(``curves.csv``, see :func:`learning_curve`; the raw logs are not kept) and, for PPOPenalty, beta and the KL of every
update (``beta/``), under ``benchmarks/results/<suite>/``.
"""

import argparse
import csv
import dataclasses
import json
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

RESULTS = Path(__file__).resolve().parent / "results"
CSV_FIELDS = [
    "suite",
    "run_id",
    "algo",
    "setting",
    "env_id",
    "seed",
    "timesteps",
    "final_score",
    "n_episodes",
    "eval_return",
    "wall_time_s",
    "steps_per_s",
    "beta_at_bounds",
    "finished_at",
]
# A run's stored learning curve: the trailing mean over CURVE_SMOOTHING episodes of the training episode return, at
# CURVE_POINTS evenly spaced timesteps from 0 to the run's budget (what the report plots)
CURVE_POINTS = 200
CURVE_SMOOTHING = 10
CURVE_FIELDS = ["run_id", "timesteps", *(f"r{index}" for index in range(CURVE_POINTS))]
PAPER_ENVS = [
    "HalfCheetah-v5",
    "Hopper-v5",
    "InvertedDoublePendulum-v5",
    "InvertedPendulum-v5",
    "Reacher-v5",
    "Swimmer-v5",
    "Walker2d-v5",
]
# Schulman et al. 2017, Table 3 (MuJoCo): horizon 2048, Adam 3e-4, 10 epochs, minibatch 64, gamma 0.99, lambda 0.95,
# 64x64 tanh networks (SB3's default MlpPolicy), no entropy bonus, one environment. Other settings: SB3's defaults.
PAPER_HYPERPARAMETERS: dict[str, Any] = {
    "n_steps": 2048,
    "learning_rate": 3e-4,
    "n_epochs": 10,
    "batch_size": 64,
    "gamma": 0.99,
    "gae_lambda": 0.95,
    "ent_coef": 0.0,
}
# The paper's settings (Table 1), as (algo, constructor keywords)
PAPER_SETTINGS: dict[str, tuple[str, dict[str, Any]]] = {
    "none": ("ppo_penalty", {"beta": 0.0, "kl_target": None}),
    **{f"clip-{eps}": ("ppo_clip", {"clip_range": eps}) for eps in (0.1, 0.2, 0.3)},
    **{f"adaptive-{d}": ("ppo_penalty", {"kl_target": d, "beta": 1.0}) for d in (0.003, 0.01, 0.03)},
    **{f"fixed-{beta:g}": ("ppo_penalty", {"kl_target": None, "beta": beta}) for beta in (0.3, 1.0, 3.0, 10.0)},
}
HEADLINE_SETTINGS = ["none", "clip-0.2", "adaptive-0.01", "fixed-1"]
ZOO_ENVS = {
    "CartPole-v1": 100_000,
    "Acrobot-v1": 1_000_000,
    "Pendulum-v1": 100_000,
    "LunarLander-v3": 1_000_000,
    "LunarLanderContinuous-v3": 1_000_000,
    "Hopper-v5": 1_000_000,
    "HalfCheetah-v5": 1_000_000,
}
SEEDS = (0, 1, 2)


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One run: an algorithm with settings on an env, a seed and a budget."""

    suite: str
    algo: str  # ppo_clip, ppo_penalty, sb3_ppo, trpo or random
    setting: str
    env_id: str
    seed: int
    timesteps: int
    hyperparameters: dict[str, Any] = dataclasses.field(default_factory=dict, hash=False, compare=False)
    normalize: bool = False
    n_envs: int = 1

    @property
    def run_id(self) -> str:
        return f"{self.setting}|{self.env_id}|seed{self.seed}|{self.timesteps}"


def paper_suite(
    timesteps: int = 200_000, envs: Iterable[str] = PAPER_ENVS, settings: Iterable[str] = PAPER_SETTINGS
) -> list[RunSpec]:
    """Suite 1: the paper's Table 1 sweep (and a random policy per env, the normalization's 0)."""
    runs = [RunSpec("paper", "random", "random", env_id, seed, timesteps) for env_id in envs for seed in SEEDS]
    for setting in settings:
        algo, keywords = PAPER_SETTINGS[setting]
        runs += [
            RunSpec("paper", algo, setting, env_id, seed, timesteps, {**PAPER_HYPERPARAMETERS, **keywords})
            for env_id in envs
            for seed in SEEDS
        ]
    return runs


def _zoo_entry(path: Path, env_id: str) -> dict[str, Any] | None:
    with open(path) as file:
        entries = yaml.safe_load(file)
    # rl_zoo3 tunes the v4 MuJoCo tasks; their v5 versions have the same dynamics and spaces
    return entries.get(env_id) or entries.get(env_id.replace("-v5", "-v4"))


def zoo_suite(timesteps: int | None = None, envs: Iterable[str] = ZOO_ENVS) -> list[RunSpec]:
    """Suite 2: our zoo_configs against rl_zoo3's tuned SB3 PPO and sb3-contrib TRPO, same budget per env."""
    import rl_zoo3

    from sb3_ppo_variants.zoo import zoo_config_path

    zoo_folder = Path(rl_zoo3.__file__).parent / "hyperparams"
    sources = {
        "ppo_penalty": zoo_config_path("ppo_penalty"),
        "ppo_clip": zoo_config_path("ppo_clip"),
        "sb3_ppo": zoo_folder / "ppo.yml",
        "trpo": zoo_folder / "trpo.yml",
    }
    runs = []
    for env_id in envs:
        budget = timesteps or ZOO_ENVS[env_id]
        for algo, path in sources.items():
            entry = _zoo_entry(path, env_id)
            if entry is None:
                continue
            normalize, n_envs = bool(entry.pop("normalize", False)), int(entry.pop("n_envs", 1))
            entry = {key: value for key, value in entry.items() if key not in ("n_timesteps", "policy")}
            runs += [RunSpec("zoo", algo, algo, env_id, seed, budget, entry, normalize, n_envs) for seed in SEEDS]
    return runs


def tiny_suite() -> list[RunSpec]:
    """A suite of seconds, for tests: two settings and a random policy on CartPole."""
    hyperparameters = {"n_steps": 64, "batch_size": 32, "n_epochs": 2}
    return [
        RunSpec("tiny", algo, setting, "CartPole-v1", seed, 512, {**hyperparameters, **keywords})
        for setting, (algo, keywords) in {
            "clip-0.2": ("ppo_clip", {"clip_range": 0.2}),
            "adaptive-0.01": ("ppo_penalty", {"kl_target": 0.01}),
        }.items()
        for seed in (0, 1)
    ] + [RunSpec("tiny", "random", "random", "CartPole-v1", seed, 512) for seed in (0, 1)]


SUITES: dict[str, Callable[..., list[RunSpec]]] = {
    "paper": paper_suite,
    "paper-1m": lambda timesteps=1_000_000, envs=("Hopper-v5", "HalfCheetah-v5", "Walker2d-v5"): paper_suite(
        timesteps, envs, HEADLINE_SETTINGS
    ),
    "zoo": zoo_suite,
    "tiny": lambda timesteps=None, envs=None: tiny_suite(),
}


def _algorithm_class(algo: str) -> type:
    from sb3_ppo_variants.zoo.runs import algorithm_class

    return algorithm_class("ppo" if algo == "sb3_ppo" else algo)  # the suites' name for SB3's PPO


class _BetaRecorder:
    """SB3 callback (built lazily, SB3 imported in workers only) writing beta and KL after every update."""

    @staticmethod
    def make(path: Path) -> Any:
        from stable_baselines3.common.callbacks import BaseCallback

        class Recorder(BaseCallback):
            def _on_rollout_start(self) -> None:
                values = self.logger.name_to_value
                if "train/beta" in values:
                    with open(path, "a") as file:
                        file.write(f"{self.num_timesteps},{values['train/beta']},{values['train/kl']}\n")

            def _on_step(self) -> bool:
                return True

        with open(path, "w") as file:
            file.write("timesteps,beta,kl\n")
        return Recorder()


def _random_run(spec: RunSpec, monitor_path: str) -> dict[str, Any]:
    import gymnasium as gym
    from stable_baselines3.common.monitor import Monitor

    env = Monitor(gym.make(spec.env_id), monitor_path)
    env.reset(seed=spec.seed)
    env.action_space.seed(spec.seed)
    for _ in range(spec.timesteps):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()
    returns = env.get_episode_rewards()
    env.close()
    score = float(np.mean(returns[-100:])) if returns else float("nan")
    return {"final_score": score, "n_episodes": len(returns), "eval_return": score, "beta_at_bounds": ""}


def learning_curve(monitor_folder: Path, timesteps: int) -> list[float] | None:
    """
    :param monitor_folder: A run's Monitor logs (one file per env)
    :param timesteps: The run's budget
    :return: The trailing mean of the training episode returns over ``CURVE_SMOOTHING`` episodes (the first points:
        over fewer) as a function of timesteps, at ``CURVE_POINTS`` evenly spaced timesteps from 0 to ``timesteps``;
        None with fewer than 2 episodes
    """
    from stable_baselines3.common.monitor import load_results

    data = load_results(str(monitor_folder)).sort_values("t")
    if len(data) < 2:
        return None
    episode_ends = np.cumsum(data["l"].to_numpy())
    smoothed = data["r"].rolling(CURVE_SMOOTHING, min_periods=1).mean().to_numpy()
    return np.interp(np.linspace(0, timesteps, CURVE_POINTS), episode_ends, smoothed).tolist()


def curve_row(run_id: str, timesteps: int, curve: list[float]) -> dict[str, Any]:
    """:return: The ``curves.csv`` row of a run's learning curve"""
    return {"run_id": run_id, "timesteps": timesteps, **{f"r{index}": f"{value:.6g}" for index, value in enumerate(curve)}}


def read_curves(csv_path: Path) -> dict[str, tuple[int, np.ndarray]]:
    """:return: ``{run_id: (budget, curve)}`` of a suite's ``curves.csv`` (empty if there is none)"""
    if not csv_path.exists():
        return {}
    with open(csv_path, newline="") as file:
        return {
            row["run_id"]: (int(row["timesteps"]), np.array([float(row[f"r{index}"]) for index in range(CURVE_POINTS)]))
            for row in csv.DictReader(file)
        }


def execute(spec: RunSpec, output_folder: Path) -> tuple[dict[str, Any], list[float] | None]:
    """
    Train (or, for ``random``, act randomly) and measure one run.

    :param spec: The run
    :param output_folder: The suite's folder (beta traces go below it)
    :return: The ``runs.csv`` row, and the learning curve (see :func:`learning_curve`)
    """
    import torch as th

    from sb3_ppo_variants.common.adaptive_beta import BETA_MAX, BETA_MIN
    from sb3_ppo_variants.zoo import constructor_arguments
    from sb3_ppo_variants.zoo.runs import final_returns, seeded_envs

    th.set_num_threads(1)
    safe_id = spec.run_id.replace("|", "_")
    # The Monitor logs live only as long as the run: what stays is the learning curve computed from them
    monitor_folder = Path(tempfile.mkdtemp(prefix=f"{safe_id}-monitor-"))
    start = time.perf_counter()
    if spec.algo == "random":
        row = _random_run(spec, str(monitor_folder / "0"))
    else:
        normalize: dict[str, Any] | None = {} if spec.normalize else None
        gamma = spec.hyperparameters.get("gamma", 0.99)
        envs = seeded_envs(spec.env_id, spec.n_envs, spec.seed, normalize, gamma, monitor_dir=str(monitor_folder))
        with envs as (env, eval_env):
            model = _algorithm_class(spec.algo)(
                "MlpPolicy", env, seed=spec.seed, device="cpu", **constructor_arguments(spec.hyperparameters)[0]
            )
            callback = None
            if spec.algo == "ppo_penalty":
                (output_folder / "beta").mkdir(exist_ok=True)
                callback = _BetaRecorder.make(output_folder / "beta" / f"{safe_id}.csv")
            learn_start = time.perf_counter()
            model.learn(spec.timesteps, callback=callback)
            learn_time = time.perf_counter() - learn_start
            episode_returns = [info["r"] for info in model.ep_info_buffer] if model.ep_info_buffer else []
            eval_returns = final_returns(model, env, eval_env, episodes=10)
        betas = []
        if callback is not None:
            betas = [
                float(line.split(",")[1]) for line in (output_folder / "beta" / f"{safe_id}.csv").read_text().splitlines()[1:]
            ]
        row = {
            # SB3's episode buffer holds the last 100 training episodes: the paper's metric
            "final_score": float(np.mean(episode_returns)) if episode_returns else float("nan"),
            "n_episodes": len(episode_returns),
            "eval_return": float(np.mean(eval_returns)),
            "beta_at_bounds": sum(beta in (BETA_MIN, BETA_MAX) for beta in betas) if callback is not None else "",
        }
    wall_time = time.perf_counter() - start
    curve = learning_curve(monitor_folder, spec.timesteps)
    shutil.rmtree(monitor_folder, ignore_errors=True)
    row = {
        "suite": spec.suite,
        "run_id": spec.run_id,
        "algo": spec.algo,
        "setting": spec.setting,
        "env_id": spec.env_id,
        "seed": spec.seed,
        "timesteps": spec.timesteps,
        **row,
        "wall_time_s": round(wall_time, 2),
        # Training throughput: learn() alone (the random policy: the whole run)
        "steps_per_s": round(spec.timesteps / (wall_time if spec.algo == "random" else learn_time), 1),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    return row, curve


def finished_run_ids(csv_path: Path) -> set[str]:
    """:return: The ids of the runs already in the CSV"""
    if not csv_path.exists():
        return set()
    with open(csv_path, newline="") as file:
        return {row["run_id"] for row in csv.DictReader(file)}


def append_row(csv_path: Path, row: dict[str, Any], fields: list[str] = CSV_FIELDS) -> None:
    """Append one row (and the header to a new file), flushed to disk: earlier rows are never rewritten."""
    new_file = not csv_path.exists()
    with open(csv_path, "a", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=fields)
        if new_file:
            writer.writeheader()
        writer.writerow(row)
        file.flush()
        os.fsync(file.fileno())


def _execute_packed(packed: tuple[RunSpec, Path]) -> tuple[dict[str, Any], list[float] | None]:
    return execute(*packed)


def run_suite(runs: list[RunSpec], csv_path: Path, workers: int, max_runs: int | None = None) -> int:
    """
    Run the runs not yet in ``csv_path`` with ``workers`` processes, appending a row as each finishes.

    :param runs: The suite
    :param csv_path: The results file (also the resume state)
    :param workers: Number of worker processes
    :param max_runs: Stop after this many runs (None: all)
    :return: Number of runs executed
    """
    done = finished_run_ids(csv_path)
    pending = [run for run in runs if run.run_id not in done][:max_runs]
    print(
        f"{len(runs)} runs in the suite, {len(runs) - len(pending) if max_runs is None else len(done)} already done, "
        f"{len(pending)} to run with {workers} worker(s); results: {csv_path}",
        flush=True,
    )
    if not pending:
        return 0
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    packed = [(run, csv_path.parent) for run in pending]
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, maxtasksperchild=1) as pool:
        for index, (row, curve) in enumerate(pool.imap_unordered(_execute_packed, packed), start=1):
            # The curve first: a run in runs.csv is done, and a resumed suite skips it
            if curve is not None:
                append_row(csv_path.parent / "curves.csv", curve_row(row["run_id"], row["timesteps"], curve), CURVE_FIELDS)
            append_row(csv_path, row)
            elapsed = time.time() - start
            eta = elapsed / index * (len(pending) - index)
            print(
                f"[{index}/{len(pending)}] {row['run_id']} {row['algo']}: score {row['final_score']:.1f}, "
                f"eval {row['eval_return']:.1f}, {row['steps_per_s']:.0f} steps/s | ETA {eta / 60:.1f} min",
                flush=True,
            )
    return len(pending)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run a benchmark suite (resumable).")
    parser.add_argument("--suite", choices=sorted(SUITES), required=True)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--timesteps", type=int, default=None, help="Override the suite's budget per run")
    parser.add_argument("--max-runs", type=int, default=None, help="Stop after this many runs (resume later)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="Results folder")
    parser.add_argument("--envs", nargs="+", default=None, help="Only these envs (paper and zoo suites)")
    args = parser.parse_args(argv)
    kwargs: dict[str, Any] = {} if args.timesteps is None else {"timesteps": args.timesteps}
    if args.envs is not None:
        kwargs["envs"] = args.envs
    runs = SUITES[args.suite](**kwargs)
    run_suite(runs, args.results / args.suite / "runs.csv", args.workers, args.max_runs)
    print(json.dumps({"suite": args.suite, "csv": str(args.results / args.suite / "runs.csv")}))


if __name__ == "__main__":
    main()
