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
from typing import Any

import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.utils import LinearSchedule

from sb3_ppo_variants import PPOClip, PPOPenalty

# rl-zoo's tuned PPO hyperparameters (ppo.yml); PPOPenalty gets the same minus the clip range
TASKS: dict[str, dict[str, Any]] = {
    "cartpole": {
        "env_id": "CartPole-v1",
        "n_envs": 8,
        "hyperparameters": {
            "n_steps": 32,
            "batch_size": 256,
            "gae_lambda": 0.8,
            "gamma": 0.98,
            "n_epochs": 20,
            "ent_coef": 0.0,
            "learning_rate": LinearSchedule(1e-3, 0.0, 1.0),
        },
        "clip_range": LinearSchedule(0.2, 0.0, 1.0),
    },
    "pendulum-gsde": {
        "env_id": "Pendulum-v1",
        "n_envs": 4,
        "hyperparameters": {
            "n_steps": 1024,
            "gae_lambda": 0.95,
            "gamma": 0.9,
            "n_epochs": 10,
            "ent_coef": 0.0,
            "learning_rate": 1e-3,
            "use_sde": True,
            "sde_sample_freq": 4,
        },
        "clip_range": 0.2,
    },
}


def _run(algo: type, task: dict[str, Any], timesteps: int, seed: int, device: str) -> tuple[float, dict[str, th.Tensor]]:
    kwargs = dict(task["hyperparameters"])
    if algo is not PPOPenalty:
        kwargs["clip_range"] = task["clip_range"]
    env = make_vec_env(task["env_id"], n_envs=task["n_envs"], seed=seed)
    model = algo("MlpPolicy", env, seed=seed, device=device, **kwargs)
    start = time.perf_counter()
    model.learn(timesteps)
    elapsed = time.perf_counter() - start
    env.close()
    return elapsed, model.policy.state_dict()


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

    task = TASKS[args.task]
    algos: dict[str, type] = {"SB3 PPO": PPO, "PPOClip": PPOClip, "PPOPenalty": PPOPenalty}
    times: dict[str, list[float]] = {name: [] for name in algos}
    identical = []
    for repeat in range(args.repeats):
        states = {}
        for name, algo in algos.items():
            elapsed, states[name] = _run(algo, task, args.timesteps, args.seed, args.device)
            times[name].append(elapsed)
            print(f"repeat {repeat + 1}/{args.repeats} {name}: {elapsed:.2f} s", flush=True)
        identical.append(all(th.equal(value, states["PPOClip"][key]) for key, value in states["SB3 PPO"].items()))

    reference = statistics.median(times["SB3 PPO"])
    print(
        f"\n{task['env_id']}, {task['n_envs']} envs, {args.timesteps} steps, seed {args.seed}, device {args.device}, "
        f"{args.threads} torch thread(s), {args.repeats} alternating repeats; {platform.processor() or platform.machine()}, "
        f"torch {th.__version__}\n"
    )
    print("| algorithm | median wall time (s) | ratio to SB3 PPO | timesteps/s |")
    print("|---|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.2f} | {median / reference:.3f} | {args.timesteps / median:.0f} |")
    print(f"\nPPOClip final parameters equal SB3 PPO's (torch.equal) in {sum(identical)}/{len(identical)} repeats")


if __name__ == "__main__":
    main()
