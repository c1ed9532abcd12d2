"""
Guards that stop training with a clear error before a non-finite value reaches the model.

A NaN observation or reward (a broken environment), or an update whose loss or gradient overflows,
would otherwise be written into the parameters silently and ruin the model (and every later checkpoint).
"""

import math

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback


class NonFiniteError(FloatingPointError):
    """Raised when training meets a NaN or infinite value; the model's parameters are left unchanged."""


def _describe_non_finite(name: str, values: np.ndarray) -> str:
    bad = ~np.isfinite(values)
    env_indices = np.unique(np.nonzero(bad)[0]).tolist() if values.ndim > 0 else []
    return f"{name} (env indices {env_indices})"


class NonFiniteRolloutGuard(BaseCallback):
    """
    Checks each environment step's new observations and rewards, and stops with :class:`NonFiniteError`
    before a non-finite value reaches the policy or the rollout buffer.

    Added by the algorithms to the user's callbacks; it does not change the training in any other way.
    """

    def _on_step(self) -> bool:
        observations = self.locals["new_obs"]
        named_arrays = {"rewards": np.asarray(self.locals["rewards"])}
        if isinstance(observations, dict):
            named_arrays.update({f"observations['{key}']": np.asarray(obs) for key, obs in observations.items()})
        else:
            named_arrays["observations"] = np.asarray(observations)
        bad = [
            _describe_non_finite(name, values)
            for name, values in named_arrays.items()
            if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all()
        ]
        if bad:
            raise NonFiniteError(
                f"The environment returned non-finite {', '.join(bad)} at timestep {self.num_timesteps}. "
                "Training stopped before the value reached the model: check the environment "
                "(stable_baselines3.common.vec_env.VecCheckNan helps to find the first bad step)."
            )
        return True


def check_finite_update(terms: dict[str, float]) -> None:
    """
    Raise :class:`NonFiniteError` naming every non-finite term of an update, before the optimizer step.

    :param terms: Scalar values of the update, e.g. the loss terms and the gradient norm
    """
    bad = [name for name, value in terms.items() if not math.isfinite(value)]
    if bad:
        values = ", ".join(f"{name}={terms[name]}" for name in bad)
        raise NonFiniteError(
            f"Non-finite {values} in a gradient step; the step was not applied and the parameters are unchanged. "
            "Common causes: a learning rate or coefficient too large, or unnormalized rewards/observations."
        )
