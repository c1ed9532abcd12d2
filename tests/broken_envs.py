"""Environments for failure tests, registered when imported (e.g. with ``--gym-packages broken_envs``)."""

import gymnasium as gym
import numpy as np
from gymnasium import spaces


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


if "NaNAfterSteps-v0" not in gym.registry:
    gym.register("NaNAfterSteps-v0", entry_point=NaNAfterStepsEnv)
