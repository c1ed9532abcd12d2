"""
Side-by-side wall time of SB3's PPO, PPOClip and PPOPenalty on the same task, seed and machine.

The algorithms run alternately (PPO, PPOClip, PPOPenalty, PPO, ...) ``--repeats`` times, so that a change in the
machine's load hits all of them alike; the table gives the median wall time of ``learn()`` per algorithm, its ratio
to SB3's PPO, and whether PPOClip's final parameters equal PPO's bit for bit.

Usage: ``python benchmarks/speed.py --task cartpole --timesteps 50000 --repeats 5``
"""

import argparse
import platform
import statistics
import time

import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

from sb3_ppo_variants import PPOClip, PPOPenalty
from sb3_ppo_variants.zoo import constructor_arguments, zoo_hyperparameters

# rl-zoo's tuned PPO hyperparameters (zoo_configs/ppo_clip.yml); PPOPenalty gets the same minus the clip range
TASKS = {"cartpole": "CartPole-v1", "pendulum-gsde": "Pendulum-v1"}


def _run(
    algo: type, env_id: str, timesteps: int, seed: int, device: str, fast_mode: bool = False
) -> tuple[float, float, dict[str, th.Tensor]]:
    keywords, n_envs, _ = constructor_arguments(zoo_hyperparameters("ppo_clip", env_id))
    if algo is PPOPenalty:
        keywords.pop("clip_range")
    env = make_vec_env(env_id, n_envs=n_envs, seed=seed)
    if fast_mode:
        keywords["fast_mode"] = True
    model = algo("MlpPolicy", env, seed=seed, device=device, **keywords)
    start, cpu_start = time.perf_counter(), time.process_time()
    model.learn(timesteps)
    elapsed, cpu_time = time.perf_counter() - start, time.process_time() - cpu_start
    env.close()
    return elapsed, cpu_time, model.policy.state_dict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASKS), default="cartpole")
    parser.add_argument("--timesteps", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (SB3 users on small nets: 1)")
    args = parser.parse_args()
    th.set_num_threads(args.threads)

    env_id = TASKS[args.task]
    algos: dict[str, tuple[type, bool]] = {
        "SB3 PPO": (PPO, False),
        "PPOClip": (PPOClip, False),
        "PPOPenalty": (PPOPenalty, False),
        "PPOClip fast_mode": (PPOClip, True),
        "PPOPenalty fast_mode": (PPOPenalty, True),
    }
    times: dict[str, list[float]] = {name: [] for name in algos}
    cpu_times: dict[str, list[float]] = {name: [] for name in algos}
    identical = []
    for repeat in range(args.repeats):
        states = {}
        for name, (algo, fast_mode) in algos.items():
            elapsed, cpu_time, states[name] = _run(algo, env_id, args.timesteps, args.seed, args.device, fast_mode)
            times[name].append(elapsed)
            cpu_times[name].append(cpu_time)
            print(f"repeat {repeat + 1}/{args.repeats} {name}: {elapsed:.2f} s wall, {cpu_time:.2f} s CPU", flush=True)
        identical.append(all(th.equal(value, states["PPOClip"][key]) for key, value in states["SB3 PPO"].items()))

    reference = statistics.median(times["SB3 PPO"])
    cpu_reference = statistics.median(cpu_times["SB3 PPO"])
    print(
        f"\n{env_id} (zoo_configs/ppo_clip.yml), {args.timesteps} steps, seed {args.seed}, device {args.device}, "
        f"{args.threads} torch thread(s), {args.repeats} alternating repeats; {platform.processor() or platform.machine()}, "
        f"torch {th.__version__}\n"
    )
    # CPU time (one torch thread, so one core) is far less sensitive than wall time to other load on a shared machine
    print("| algorithm | median wall time (s) | wall ratio to SB3 PPO | timesteps/s | median CPU time (s) | CPU ratio |")
    print("|---|---|---|---|---|---|")
    for name, values in times.items():
        median, cpu_median = statistics.median(values), statistics.median(cpu_times[name])
        print(
            f"| {name} | {median:.2f} | {median / reference:.3f} | {args.timesteps / median:.0f} "
            f"| {cpu_median:.2f} | {cpu_median / cpu_reference:.3f} |"
        )
    print(f"\nPPOClip final parameters equal SB3 PPO's (torch.equal) in {sum(identical)}/{len(identical)} repeats")


if __name__ == "__main__":
    main()
