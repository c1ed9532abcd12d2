"""
Side-by-side wall time of SB3's PPO, PPOClip and PPOPenalty (default and fast mode) on the same task, seed and machine.

Each run is a fresh process with an empty compilation cache (what a user's first run pays): it builds the model,
times a first ``learn()`` of ``--warmup`` steps (which compiles, in fast mode), then a second ``learn()`` of
``--timesteps`` more steps (the steady state). The algorithms run alternately (PPO, PPOClip, PPOPenalty, ...)
``--repeats`` times, each repeat starting with the next one, so that a change in the machine's load hits all of them
alike. The table gives, per algorithm, the median steady throughput and its ratio to SB3's PPO; the one-off cost of
the first ``learn()`` beyond its steps at the steady rate (compilation, in fast mode), its excess over SB3 PPO's
(the compilation time), the budget from which the algorithm is faster end to end than SB3's PPO (break-even), and
the end-to-end ratio at 100k and 1M steps that these measured figures give (one-off cost + steps / steady rate); and
the measured end-to-end ratio of the first ``learn()``. It also checks that PPOClip's final parameters equal SB3
PPO's with ``torch.equal``. ``--profile`` instead runs each algorithm once under cProfile and prints where the time
goes (collection, update, and the parts of a gradient step); ``--memory`` runs each algorithm ``--repeats`` times,
each run in a process of its own, and compares their median peak resident memory. ``--warm-cache`` starts each timed
run from a compilation cache that an untimed run of the same algorithm filled: what a user's later runs on the same
machine pay (dynamo still traces; inductor's compiled graphs and kernels come from the cache).

Usage::

    python -m benchmarks.speed --task cartpole --warmup 20480 --timesteps 20480 --repeats 3
    python -m benchmarks.speed --task cartpole --warmup 1000000 --timesteps 0 --repeats 1 --algos "PPOClip fast_mode"
    python -m benchmarks.speed --task cartpole --warmup 1000000 --timesteps 0 --repeats 1 --warm-cache
    python -m benchmarks.speed --task cnn --device cuda
    python -m benchmarks.speed --task hopper --profile
    python -m benchmarks.speed --task cnn-84 --memory --repeats 3
"""

import argparse
import concurrent.futures
import cProfile
import functools
import multiprocessing
import os
import platform
import pstats
import resource
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import FakeImageEnv

from benchmarks.harness import PAPER_HYPERPARAMETERS
from sb3_ppo_variants import PPOClip, PPOPenalty
from sb3_ppo_variants.zoo import constructor_arguments, zoo_hyperparameters


class SeededImageEnv(FakeImageEnv):
    """SB3's ``FakeImageEnv`` (random images, trivial dynamics) whose images follow the reset seed, so runs repeat."""

    def __init__(self, size: int = 36, n_channels: int = 1) -> None:
        super().__init__(screen_height=size, screen_width=size, n_channels=n_channels, discrete=True)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        if seed is not None:
            self.observation_space.seed(seed)
        return super().reset(seed=seed, options=options)


@dataclass
class SpeedTask:
    """
    :param env_id: A registered env id, or a callable that makes the env
    :param n_envs: Number of envs (DummyVecEnv)
    :param hyperparameters: Constructor arguments shared by all algorithms (PPOPenalty drops ``clip_range``)
    :param policy: Policy alias
    :param timesteps: Default budget of one ``learn()``
    :param description: Where the hyperparameters come from, for the report
    """

    env_id: str | Callable[[], gym.Env]
    n_envs: int
    hyperparameters: dict[str, Any]
    policy: str = "MlpPolicy"
    timesteps: int = 50_000
    description: str = ""


def _zoo_task(env_id: str, timesteps: int) -> SpeedTask:
    keywords, n_envs, _ = constructor_arguments(zoo_hyperparameters("ppo_clip", env_id))
    return SpeedTask(env_id, n_envs, keywords, timesteps=timesteps, description=f"zoo_configs/ppo_clip.yml, {n_envs} envs")


def make_task(name: str) -> SpeedTask:
    """:param name: One of ``TASKS``"""
    if name == "cartpole":
        return _zoo_task("CartPole-v1", 50_000)
    if name == "pendulum-gsde":
        return _zoo_task("Pendulum-v1", 20_480)
    if name == "hopper":
        return SpeedTask("Hopper-v5", 1, dict(PAPER_HYPERPARAMETERS), timesteps=20_480, description="the paper's, 1 env")
    if name == "cnn":
        # Atari-like PPO settings (rl-zoo's atari entry, smaller rollout) on 36x36 grayscale images, NatureCNN
        cnn_hyperparameters = {"n_steps": 128, "batch_size": 256, "n_epochs": 4, "learning_rate": 2.5e-4, "ent_coef": 0.01}
        return SpeedTask(
            SeededImageEnv,
            8,
            cnn_hyperparameters,
            policy="CnnPolicy",
            timesteps=8_192,
            description="CnnPolicy (NatureCNN) on 36x36x1 random images, 8 envs, rl-zoo Atari-like settings",
        )
    if name == "cnn-84":
        # Atari-sized frames (84x84 grayscale), a large rollout: where the passes over the whole rollout weigh most
        return SpeedTask(
            functools.partial(SeededImageEnv, size=84),
            4,
            {"n_steps": 1024, "batch_size": 256, "n_epochs": 1, "learning_rate": 2.5e-4, "ent_coef": 0.01},
            policy="CnnPolicy",
            timesteps=8_192,
            description="CnnPolicy (NatureCNN) on 84x84x1 random images, 4 envs x 1024 steps, minibatch 256, 1 epoch",
        )
    raise ValueError(f"task must be one of {TASKS}, got {name!r}")


TASKS = ("cartpole", "pendulum-gsde", "hopper", "cnn", "cnn-84")
ALGORITHMS: dict[str, tuple[type, bool]] = {
    "SB3 PPO": (PPO, False),
    "PPOClip": (PPOClip, False),
    "PPOPenalty": (PPOPenalty, False),
    "PPOClip fast_mode": (PPOClip, True),
    "PPOPenalty fast_mode": (PPOPenalty, True),
}


def _make_model(name: str, task: SpeedTask, seed: int, device: str) -> Any:
    algo, fast_mode = ALGORITHMS[name]
    keywords = dict(task.hyperparameters)
    if algo is PPOPenalty:
        keywords.pop("clip_range", None)
    if fast_mode:
        keywords["fast_mode"] = True
    env = make_vec_env(task.env_id, n_envs=task.n_envs, seed=seed)
    return algo(task.policy, env, seed=seed, device=device, **keywords)


@dataclass
class TimedRun:
    """
    :param first: Wall time of the first ``learn()`` (s), compilation included
    :param steady: Wall time of the second ``learn()`` (s); 0 without one
    :param cpu_time: CPU time of both (s)
    :param state: The policy's final parameters
    """

    first: float
    steady: float
    cpu_time: float
    state: dict[str, th.Tensor]


def _timed_run(
    name: str,
    task_name: str,
    warmup: int,
    timesteps: int,
    seed: int,
    device: str,
    threads: int,
    cache_dir: str | None = None,
) -> TimedRun:
    """
    One run, meant for a fresh process (see the module docstring).

    :param cache_dir: The compilation cache (inductor's) that the run starts from, or None for an empty one
    """
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache_dir or tempfile.mkdtemp(prefix="sb3pv-speed-inductor-")
    th.set_num_threads(threads)
    model = _make_model(name, make_task(task_name), seed, device)

    def timed_learn(steps: int, first: bool) -> float:
        if device.startswith("cuda"):
            th.cuda.synchronize()
        start = time.perf_counter()
        model.learn(steps, reset_num_timesteps=first)
        if device.startswith("cuda"):
            th.cuda.synchronize()
        return time.perf_counter() - start

    cpu_start = time.process_time()
    first = timed_learn(warmup, first=True)
    steady = timed_learn(timesteps, first=False) if timesteps > 0 else 0.0
    cpu_time = time.process_time() - cpu_start
    model.get_env().close()
    return TimedRun(first, steady, cpu_time, {key: value.cpu() for key, value in model.policy.state_dict().items()})


def _in_fresh_process(function: Callable[..., Any], *args: Any) -> Any:
    """:return: ``function(*args)``, run in a new (spawned) Python process"""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(function, *args).result()


# Where a run's time goes: (label, cProfile function name, file name fragment(s); "" matches any file)
PROFILE_PARTS = (
    ("collect_rollouts (env steps + policy forward + buffer)", "collect_rollouts", "on_policy_algorithm"),
    ("  env step_wait", "step_wait", ""),
    ("train (the update)", "train", "ppo"),  # ppo.py (SB3) or sb3_ppo_variants, not torch's Module.train
    # SB3's (policies.py) or this package's (common/evaluation.py), which runs the same operations
    ("  evaluate_actions (forward)", "evaluate_actions", ("policies", "sb3_ppo_variants/common/evaluation")),
    ("  backward", "<method 'run_backward' of 'torch._C._EngineBase' objects>", ""),
    ("  optimizer step", "step", "torch/optim/"),
    ("  clip_grad_norm_", "clip_grad_norm_", "clip_grad"),
)


def _env_name(task: SpeedTask) -> str:
    env_id = task.env_id.func if isinstance(task.env_id, functools.partial) else task.env_id
    return env_id if isinstance(env_id, str) else env_id.__name__


def _device_name(device: str) -> str:
    return th.cuda.get_device_name() if device.startswith("cuda") else platform.processor() or platform.machine()


def _memory_run(name: str, task_name: str, timesteps: int, seed: int, device: str, threads: int) -> tuple[float, float]:
    """
    One run in a process of its own (see :func:`_memory_table`).

    :return: The process's resident memory (MiB) once the model is built, and its peak over the whole run
    """
    th.set_num_threads(threads)
    model = _make_model(name, make_task(task_name), seed, device)
    with open("/proc/self/statm") as statm:
        built = int(statm.read().split()[1]) * resource.getpagesize() / 2**20
    model.learn(timesteps)
    return built, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _memory_table(args: argparse.Namespace, task: SpeedTask, names: list[str]) -> str:
    """
    :return: The Markdown block of a memory comparison: each algorithm's peak resident memory, each run in a fresh
        process, ``args.repeats`` runs per algorithm in rotating order (a process's peak moves by tens of MiB from run
        to run with the allocator's reuse of freed memory): the median, its range, and the ratio of the medians
    """
    measured: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for repeat in range(args.repeats):
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            run = _in_fresh_process(_memory_run, name, args.task, args.timesteps, args.seed, args.device, args.threads)
            measured[name].append(run)
            print(f"repeat {repeat + 1}/{args.repeats} {name}: {run[0]:.0f} MiB once built, peak {run[1]:.0f} MiB", flush=True)

    def medians(name: str) -> tuple[float, float]:
        return statistics.median(built for built, _ in measured[name]), statistics.median(peak for _, peak in measured[name])

    reference_built, reference_peak = medians("SB3 PPO")
    lines = [
        f"### Peak memory: {args.task} ({_env_name(task)}, {task.description})\n",
        f"Command: `python -m benchmarks.speed {shlex.join(args.argv)}`. {args.timesteps} steps, one fresh process per "
        f"run (Linux peak resident set size), {args.repeats} runs per algorithm in rotating order, seed {args.seed}, "
        f"device {args.device} ({_device_name(args.device)}), torch {th.__version__}, {date.today().isoformat()}.\n",
        "| algorithm | peak resident memory (MiB), median (min-max) | ratio to SB3 PPO | growth after the model is built "
        "(MiB) | growth ratio to SB3 PPO |",
        "|---|---|---|---|---|",
    ]
    for name in names:
        built, peak = medians(name)
        peaks = [peak for _, peak in measured[name]]
        growth, reference_growth = peak - built, reference_peak - reference_built
        growth_ratio = f"{growth / reference_growth:.2f}" if reference_growth > 0 else "n/a"
        lines.append(
            f"| {name} | {peak:.0f} ({min(peaks):.0f}-{max(peaks):.0f}) | {peak / reference_peak:.2f} | {growth:.0f} "
            f"| {growth_ratio} |"
        )
    return "\n".join(lines) + "\n"


def _as_tuple(fragments: str | tuple[str, ...]) -> tuple[str, ...]:
    return fragments if isinstance(fragments, tuple) else (fragments,)


def _profile(name: str, task: SpeedTask, timesteps: int, seed: int, device: str) -> dict[str, float]:
    model = _make_model(name, task, seed, device)
    profiler = cProfile.Profile()
    profiler.enable()
    model.learn(timesteps)
    profiler.disable()
    model.get_env().close()
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    total = max(cumulative for (_, _, function), (_, _, _, cumulative, _) in stats.items() if function == "learn")
    times = {"learn (total)": total}
    for label, function_name, file_fragment in PROFILE_PARTS:
        times[label] = sum(
            cumulative
            for (file_name, _, function), (_, _, _, cumulative, _) in stats.items()
            if function == function_name and any(fragment in file_name for fragment in _as_tuple(file_fragment))
        )
    return times


def _profile_table(args: argparse.Namespace, task: SpeedTask, names: list[str]) -> str:
    """:return: The Markdown block of a profile: its command and conditions, and where each algorithm's time goes"""
    profiles = {name: _profile(name, task, args.timesteps, args.seed, args.device) for name in names}
    lines = [
        f"### Where the time goes: {args.task} ({_env_name(task)}, {task.description})\n",
        f"Command: `python -m benchmarks.speed {shlex.join(args.argv)}`. {args.timesteps} steps, one run each, seed "
        f"{args.seed}, device {args.device}, torch {th.__version__}, {date.today().isoformat()}. Cumulative seconds under "
        "cProfile, which inflates Python-heavy parts; shares of learn in brackets (single runs are noisy: read the "
        "shares).\n",
        "| part | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for label in profiles[names[0]]:
        shares = {name: profiles[name][label] / profiles[name]["learn (total)"] for name in names}
        cells = [f"{profiles[name][label]:.2f} ({shares[name]:.0%})" for name in names]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--task", choices=TASKS, default="cartpole")
    parser.add_argument("--warmup", type=int, help="Steps of the first learn(), which compiles (default: the task's budget)")
    parser.add_argument("--timesteps", type=int, help="Steps of the timed steady-state learn() (default: the task's budget)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (SB3 users on small nets: 1)")
    parser.add_argument("--algos", nargs="+", choices=list(ALGORITHMS), default=list(ALGORITHMS))
    parser.add_argument("--profile", action="store_true", help="Profile one run of each algorithm instead")
    parser.add_argument("--memory", action="store_true", help="Measure each algorithm's peak memory instead")
    parser.add_argument(
        "--warm-cache",
        action="store_true",
        help="Start each timed run from a compilation cache that an untimed run of the same algorithm filled "
        "(a later run on the same machine) instead of an empty one",
    )
    parser.add_argument("--output", type=Path, help="Also write the table (Markdown) to this file")
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    th.set_num_threads(args.threads)
    task = make_task(args.task)
    args.timesteps = task.timesteps if args.timesteps is None else args.timesteps
    args.warmup = task.timesteps if args.warmup is None else args.warmup
    names = ["SB3 PPO", *(name for name in args.algos if name != "SB3 PPO")]
    if args.profile:
        _write_table(_profile_table(args, task, names), args.output)
        return
    if args.memory:
        _write_table(_memory_table(args, task, names), args.output)
        return

    cache_dirs = _filled_caches(args, task, names) if args.warm_cache else {}
    runs: dict[str, list[TimedRun]] = {name: [] for name in names}
    identical = []
    for repeat in range(args.repeats):
        states = {}
        # Each repeat starts with another algorithm, so that none always runs in the same position
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            run = _in_fresh_process(
                _timed_run,
                *(name, args.task, args.warmup, args.timesteps, args.seed, args.device, args.threads),
                cache_dirs.get(name),
            )
            runs[name].append(run)
            states[name] = run.state
            print(
                f"repeat {repeat + 1}/{args.repeats} {name}: first learn() {run.first:.2f} s, steady {run.steady:.2f} s",
                flush=True,
            )
        if "PPOClip" in states:
            identical.append(all(th.equal(value, states["PPOClip"][key]) for key, value in states["SB3 PPO"].items()))

    _write_table(_ratio_table(args, task, runs, identical), args.output)


def _filled_caches(args: argparse.Namespace, task: SpeedTask, names: list[str]) -> dict[str, str]:
    """
    :return: Per algorithm that compiles (fast mode), a compilation cache filled by an untimed run (one rollout and
        one update, in a fresh process): what a user's later runs on the same machine start from
    """
    rollout = task.hyperparameters.get("n_steps", 2048) * task.n_envs
    cache_dirs = {}
    for name in (name for name in names if ALGORITHMS[name][1]):
        cache_dirs[name] = tempfile.mkdtemp(prefix="sb3pv-speed-warm-inductor-")
        _in_fresh_process(_timed_run, name, args.task, rollout, 0, args.seed, args.device, args.threads, cache_dirs[name])
    return cache_dirs


def _write_table(table: str, output: Path | None) -> None:
    """Print ``table``, and write it to ``output`` if given."""
    print("\n" + table)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(table)


@dataclass
class CostModel:
    """
    An algorithm's wall time for a budget of N steps, from its runs: ``one_off + N / rate``.

    :param rate: Median steady throughput (steps/s)
    :param one_off: Median time of the first ``learn()`` beyond its steps at the steady rate (s)
    """

    rate: float
    one_off: float

    @classmethod
    def of(cls, runs: list[TimedRun], warmup: int, timesteps: int) -> "CostModel":
        rate = timesteps / statistics.median(run.steady for run in runs)
        return cls(rate, statistics.median(run.first for run in runs) - warmup / rate)

    def time(self, steps: int) -> float:
        return self.one_off + steps / self.rate

    def break_even(self, reference: "CostModel") -> str:
        """:return: The budget from which this algorithm is faster end to end than ``reference``"""
        extra, saved_per_step = self.one_off - reference.one_off, 1 / reference.rate - 1 / self.rate
        if saved_per_step <= 0:
            return "never"
        return f"{max(extra / saved_per_step, 0):,.0f}"


def _ratio_range(reference: list[float], ours: list[float]) -> str:
    """:return: The median ratio reference / ours, and its range over the repeats (each repeat's own ratio)"""
    per_repeat = [theirs / mine for theirs, mine in zip(reference, ours, strict=True)]
    return f"{statistics.median(reference) / statistics.median(ours):.2f}x ({min(per_repeat):.2f}-{max(per_repeat):.2f})"


def _ratio_table(args: argparse.Namespace, task: SpeedTask, runs: dict[str, list[TimedRun]], identical: list[bool]) -> str:
    """:return: The Markdown block of one comparison: its command and conditions, the table, the equality check"""
    reference_runs = runs["SB3 PPO"]
    steady = args.timesteps > 0
    cache = (
        "a compilation cache filled by an untimed run of the same algorithm (one rollout and one update)"
        if args.warm_cache
        else "an empty compilation cache"
    )
    lines = [
        f"### {args.task}: {_env_name(task)}, {task.description}{', warm compilation cache' if args.warm_cache else ''}\n",
        f"Command: `python -m benchmarks.speed {shlex.join(args.argv)}`. Per run, in a fresh process with {cache}: "
        f"a first learn() of {args.warmup} steps"
        + (f", then {args.timesteps} more steps (steady state)" if steady else "")
        + f"; seed {args.seed}, device {args.device} ({_device_name(args.device)}), {args.threads} torch thread(s), "
        f"{args.repeats} repeats in rotating order, torch {th.__version__}, {date.today().isoformat()}.\n",
    ]
    if steady:
        models = {name: CostModel.of(values, args.warmup, args.timesteps) for name, values in runs.items()}
        reference = models["SB3 PPO"]
        lines += [
            "| algorithm | steady timesteps/s | steady throughput ratio to SB3 PPO (min-max) | first learn() (s) "
            "| compilation (s) | break-even budget (steps) | end-to-end ratio at 100k steps | at 1M steps |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, values in runs.items():
            model = models[name]
            steady_ratio = _ratio_range([run.steady for run in reference_runs], [run.steady for run in values])
            first = statistics.median(run.first for run in values)
            compilation = model.one_off - reference.one_off
            end_to_end = [f"{reference.time(steps) / model.time(steps):.2f}x" for steps in (100_000, 1_000_000)]
            lines.append(
                f"| {name} | {model.rate:.0f} | {steady_ratio} | {first:.1f} | {compilation:.1f} "
                f"| {model.break_even(reference) if name != 'SB3 PPO' else 'n/a'} | {end_to_end[0]} | {end_to_end[1]} |"
            )
        lines.append(
            "\ncompilation: the first learn()'s one-off cost (its time beyond its steps at the steady rate) minus SB3 "
            "PPO's; break-even and the end-to-end ratios follow from the one-off costs and steady rates measured here."
        )
    else:
        lines += [
            f"| algorithm | learn() of {args.warmup} steps, end to end (s) | end-to-end throughput ratio to SB3 PPO "
            "(min-max) |",
            "|---|---|---|",
        ]
        for name, values in runs.items():
            ratio = _ratio_range([run.first for run in reference_runs], [run.first for run in values])
            lines.append(f"| {name} | {statistics.median(run.first for run in values):.1f} | {ratio} |")
    if identical:
        equal = f"{sum(identical)}/{len(identical)}"
        lines.append(f"\nPPOClip's final parameters equal SB3 PPO's (torch.equal) in {equal} repeats.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
