"""
Guards that stop training with a clear error before a non-finite value reaches the model.

A NaN observation or reward (a broken environment), or an update whose loss or gradient overflows,
would otherwise be written into the parameters silently and ruin the model (and every later checkpoint).
"""

import math
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback


class NonFiniteError(FloatingPointError):
    """Raised when training meets a NaN or infinite value; the model's parameters are left unchanged."""


def _non_finite_arrays(named_values: dict[str, Any]) -> list[str]:
    """Describe each floating-point array (or dict of arrays) of ``named_values`` that holds a NaN or inf."""
    found = []
    for name, values in named_values.items():
        if isinstance(values, dict):
            found += _non_finite_arrays({f"{name}['{key}']": value for key, value in values.items()})
            continue
        array = np.asarray(values)
        if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
            bad_envs = np.unique(np.nonzero(~np.isfinite(array))[0]).tolist() if array.ndim > 0 else []
            found.append(f"{name} (env indices {bad_envs})")
    return found


class NonFiniteRolloutGuard(BaseCallback):
    """
    Stops training with :class:`NonFiniteError` as soon as the environment returns a non-finite observation
    (on reset, on a step, or as the terminal observation that bootstraps a truncated episode) or reward, before
    the value reaches the policy or the rollout buffer.

    Added by the algorithms to the user's callbacks; it does not change the training in any other way.
    Note: a ``VecNormalize`` wrapper has already updated its running statistics with the value.
    """

    def _check(self, named_values: dict[str, Any], extra_found: list[str] | None = None) -> None:
        found = _non_finite_arrays(named_values) + (extra_found or [])
        if found:
            raise NonFiniteError(
                f"The environment returned non-finite {', '.join(found)} at timestep {self.num_timesteps}. "
                "Training stopped before the value reached the model: check the environment "
                "(stable_baselines3.common.vec_env.VecCheckNan helps to find the first bad step)."
            )

    def _on_rollout_start(self) -> None:
        # The observation the rollout starts from comes from reset() (first rollout) or from the last step
        self._check({"observations": self.model._last_obs})

    def _on_step(self) -> bool:
        # Terminal observations bootstrap the value of truncated episodes
        bad_terminal_envs = [
            index
            for index, info in enumerate(self.locals["infos"])
            if info.get("terminal_observation") is not None and _non_finite_arrays({"": info["terminal_observation"]})
        ]
        terminal = [f"terminal_observation (env indices {bad_terminal_envs})"] if bad_terminal_envs else []
        self._check({"rewards": self.locals["rewards"], "observations": self.locals["new_obs"]}, terminal)
        return True


def check_finite_update(terms: dict[str, float], step: int) -> None:
    """
    Raise :class:`NonFiniteError` naming every non-finite term of a gradient step.

    :param terms: Scalar values of the step, e.g. the loss terms and the gradient norm
    :param step: The step's number within its update, for the message
    """
    bad = [name for name, value in terms.items() if not math.isfinite(value)]
    if bad:
        values = ", ".join(f"{name}={terms[name]}" for name in bad)
        raise NonFiniteError(
            f"Non-finite {values} in gradient step {step} of the update; the update was undone and the parameters are "
            "unchanged (as before the update). Common causes: a learning rate or coefficient too large, or unnormalized "
            "rewards/observations."
        )
