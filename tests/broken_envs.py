"""Environments for failure tests, registered when imported (e.g. with ``--gym-packages broken_envs``)."""

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.envs.classic_control import CartPoleEnv

# Printed by AnnouncingCartPole-v0 at the first step of a process: a test reading the output then knows that
# training has started (an env steps only in learn(), after the trial's hyperparameters are all sampled)
TRAINING_STARTED = "ANNOUNCING-CARTPOLE: TRAINING STARTED"


class NaNAfterStepsEnv(gym.Env):
    """A Discrete-action env whose observations become NaN after ``broken_from`` steps."""

    def __init__(self, broken_from: int = 100) -> None:
        self.observation_space = spaces.Box(-1.0, 1.0, (3,), dtype=np.float32)
        self.action_space = spaces.Discrete(2)
        self.broken_from = broken_from
        self.n_steps = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        return self.np_random.uniform(-1, 1, 3).astype(np.float32), {}

    def step(self, action):
        self.n_steps += 1
        observation = self.np_random.uniform(-1, 1, 3).astype(np.float32)
        if self.n_steps >= self.broken_from:
            observation[0] = np.nan
        return observation, 1.0, False, self.n_steps % 20 == 0, {}


class AnnouncingCartPoleEnv(CartPoleEnv):
    """CartPole that prints ``TRAINING_STARTED`` (flushed) at the first step taken in its process."""

    announced = False

    def step(self, action):
        if not AnnouncingCartPoleEnv.announced:
            AnnouncingCartPoleEnv.announced = True
            print(TRAINING_STARTED, flush=True)
        return super().step(action)


if "NaNAfterSteps-v0" not in gym.registry:
    gym.register("NaNAfterSteps-v0", entry_point=NaNAfterStepsEnv)
if "AnnouncingCartPole-v0" not in gym.registry:
    gym.register("AnnouncingCartPole-v0", entry_point=AnnouncingCartPoleEnv, max_episode_steps=500)
