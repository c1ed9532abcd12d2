"""
Guards that stop training with a clear error before a non-finite value reaches the model.

A NaN observation or reward (a broken environment), or an update whose loss or gradient overflows,
would otherwise be written into the parameters silently and ruin the model (and every later checkpoint).
"""

import copy
import math
from types import TracebackType
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import BasePolicy


class NonFiniteError(FloatingPointError):
    """
    Raised when training meets a NaN or infinite value: from the environment, before the value reaches the policy or
    the rollout buffer; in an update, after undoing the whole update. Either way the model is left as it was.
    """


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


def _check_finite_update(terms: dict[str, float], step: int) -> None:
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


def _copy_of(state: Any) -> Any:
    """
    :param state: An optimizer's ``state_dict()``: dicts, lists and tuples of tensors and immutable values
    :return: A copy that shares nothing mutable with it (several times faster than ``copy.deepcopy``)
    """
    if isinstance(state, th.Tensor):
        return state.detach().clone()
    if isinstance(state, dict):
        return {key: _copy_of(value) for key, value in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(_copy_of(value) for value in state)
    return copy.copy(state)


class UpdateRollback:
    """
    Undo a whole update if one of its gradient steps was not finite, or if anything else goes wrong within it.

    Entering takes a copy of the policy's and its optimizer's state. Each gradient step records its scalar terms
    (:meth:`record`, tensors: no host synchronization); :meth:`check` (once per update, by the caller) reads them with
    one transfer and, if one is not finite, restores the copy and raises :class:`NonFiniteError` naming the terms and
    the step. Any exception leaving the block (a non-finite KL, an interrupt) also restores the copy: the policy and
    its optimizer are always those of before the update or those of after it.

    :param policy: The policy whose parameters, and whose ``optimizer``, the update changes
    :param term_names: Names of the terms recorded per step, in :meth:`record`'s order
    """

    def __init__(self, policy: BasePolicy, term_names: tuple[str, ...]) -> None:
        self.policy = policy
        self.term_names = term_names
        self._steps: list[th.Tensor] = []
        self._checked = 0

    def __enter__(self) -> "UpdateRollback":
        self._policy_state = {name: tensor.detach().clone() for name, tensor in self.policy.state_dict().items()}
        self._optimizer_state = _copy_of(self.policy.optimizer.state_dict())
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc_value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if exc_type is None:
            try:
                self.check()
            except NonFiniteError:
                self.restore()
                raise
        else:
            self.restore()

    def record(self, *terms: th.Tensor) -> None:
        """:param terms: The step's scalar terms (0-d tensors), in ``term_names``' order"""
        self._steps.append(th.stack([term.detach() for term in terms]))

    def restore(self) -> None:
        """Put back the policy's and the optimizer's state of before the update."""
        self.policy.load_state_dict(self._policy_state)
        self.policy.optimizer.load_state_dict(self._optimizer_state)

    def check(self) -> None:
        """
        Raise :class:`NonFiniteError` if a step recorded since the last check was not finite, or if the optimizer made
        a parameter non-finite from finite terms (e.g. Adam with ``eps=0``); the block then restores.
        """
        unchecked, first_step = self._steps[self._checked :], self._checked
        self._checked = len(self._steps)
        if not unchecked:
            return
        terms = th.stack(unchecked)
        finite_steps = th.isfinite(terms).all(dim=1)
        # One multi-tensor norm for all parameters: non-finite if and only if a parameter is (short of an overflow at
        # norms beyond 1e19)
        finite_parameters = th.isfinite(th.nn.utils.get_total_norm(list(self.policy.parameters()), foreach=True))
        steps_ok, parameters_ok = th.stack([finite_steps.all(), finite_parameters]).tolist()  # one host transfer
        if not steps_ok:
            first_bad = int(th.nonzero(~finite_steps)[0, 0])
            bad_terms = dict(zip(self.term_names, terms[first_bad].tolist(), strict=True))
            _check_finite_update(bad_terms, step=first_step + first_bad + 1)
        if not parameters_ok:
            raise NonFiniteError(
                f"The optimizer made a parameter non-finite in gradient steps {first_step + 1}-{len(self._steps)} of the "
                "update, from finite losses and gradients; the update was undone and the parameters are unchanged (as "
                "before the update). Check the optimizer's settings (e.g. Adam's eps > 0)."
            )
