"""
Rollout buffers that also hold the parameters of the policy's action distribution at collection time.

They behave like SB3's ``RolloutBuffer`` / ``DictRolloutBuffer`` (same ``add``, same GAE, same random
permutation per ``get()`` call, so the same RNG consumption), with two differences:

- the whole flattened rollout is turned into tensors on the buffer's device once per rollout; each ``get()``
  call gathers them once in its permuted order, and minibatches are slices of those (no host copies, and one
  gather per tensor per epoch instead of one per minibatch). This holds one more copy of the rollout in memory
  during an update;
- ``old_distribution_params`` (one row per transition, see :mod:`sb3_ppo_variants.common.kl`), set once the
  rollout is collected (by PPOPenalty), is returned with every minibatch.
"""

from collections.abc import Callable, Generator
from typing import Any, NamedTuple, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import DictRolloutBuffer, RolloutBuffer
from stable_baselines3.common.type_aliases import TensorDict
from stable_baselines3.common.vec_env import VecNormalize

from sb3_ppo_variants.common.checks import InvalidArgumentError


class ProximalRolloutBufferSamples(NamedTuple):
    observations: th.Tensor
    actions: th.Tensor
    old_values: th.Tensor
    old_log_prob: th.Tensor
    advantages: th.Tensor
    returns: th.Tensor
    old_distribution_params: th.Tensor | None


class ProximalDictRolloutBufferSamples(NamedTuple):
    observations: TensorDict
    actions: th.Tensor
    old_values: th.Tensor
    old_log_prob: th.Tensor
    advantages: th.Tensor
    returns: th.Tensor
    old_distribution_params: th.Tensor | None


def _flat_transition_tensors(buffer: RolloutBuffer | DictRolloutBuffer) -> dict[str, th.Tensor]:
    """Everything but the observations, as flat tensors on the buffer's device (arrays already flattened)."""
    return {
        # Cast to float32 like SB3's ``_get_samples`` (MultiBinary actions are stored as int8)
        "actions": th.as_tensor(buffer.actions.astype(np.float32, copy=False), device=buffer.device),
        "old_values": th.as_tensor(buffer.values.flatten(), device=buffer.device),
        "old_log_prob": th.as_tensor(buffer.log_probs.flatten(), device=buffer.device),
        "advantages": th.as_tensor(buffer.advantages.flatten(), device=buffer.device),
        "returns": th.as_tensor(buffer.returns.flatten(), device=buffer.device),
    }


def _permutation(buffer_size: int, device: th.device) -> th.Tensor:
    """A fresh ``np.random.permutation`` per ``get()`` call, as SB3 draws it (so seeded runs match)."""
    return th.as_tensor(np.random.permutation(buffer_size), device=device)


def _minibatch_slices(buffer_size: int, batch_size: int | None) -> Generator[slice, None, None]:
    """Consecutive minibatches of the permuted rollout, the last one possibly shorter (as SB3)."""
    if batch_size is None:
        batch_size = buffer_size
    for start_idx in range(0, buffer_size, batch_size):
        yield slice(start_idx, start_idx + batch_size)


Samples = TypeVar("Samples", ProximalRolloutBufferSamples, ProximalDictRolloutBufferSamples)


# PyTorch allocates CPU tensors on 64-byte boundaries, and the CPU math libraries may pick another kernel (another
# order of floating-point operations) for data that does not start on one
_CPU_ALIGNMENT = 64


def _rows(tensor: th.Tensor, batch: slice) -> th.Tensor:
    """
    :return: The rows ``batch`` of ``tensor``: a view, or on the CPU a copy where the view would not be aligned as a
        fresh tensor is (e.g. odd minibatch sizes), so that the arithmetic is bit for bit SB3's on its fresh minibatches
    """
    rows = tensor[batch]
    if rows.device.type == "cpu" and rows.data_ptr() % _CPU_ALIGNMENT:
        return rows.clone()
    return rows


def map_observations(function: Callable[[Any], Any], observations: Any) -> Any:
    """
    :param function: What to do with an array or tensor of observations
    :param observations: An array or tensor, or a dict of them (Dict observation spaces)
    :return: ``function`` of the observations, or the dict of ``function`` of each of them
    """
    if isinstance(observations, dict):
        return {key: function(value) for key, value in observations.items()}
    return function(observations)


def _sliced(samples: Samples, batch: slice) -> Samples:
    """:return: The rows ``batch`` of every tensor of ``samples`` (a field may also be a dict of tensors, or None)"""

    def rows(value: Any) -> Any:
        return None if value is None else map_observations(lambda tensor: _rows(tensor, batch), value)

    return samples._replace(**{name: rows(getattr(samples, name)) for name in samples._fields})


class _ProximalBuffer:
    """What both proximal buffers add to SB3's, written once: the device tensors, the minibatches and the old parameters."""

    buffer_size: int
    n_envs: int
    device: th.device
    full: bool
    generator_ready: bool
    observations: Any  # an array, or a dict of arrays (DictRolloutBuffer)
    old_distribution_params: th.Tensor | None
    _samples_class: type[ProximalRolloutBufferSamples] | type[ProximalDictRolloutBufferSamples]
    swap_and_flatten: Any

    def reset(self) -> None:
        super().reset()  # type: ignore[misc]
        self.old_distribution_params = None
        self._tensors: dict[str, Any] | None = None

    def set_old_distribution_params(self, params: th.Tensor) -> None:
        """
        :param params: Flat distribution parameters, one row per transition in the order of
            :meth:`flat_observations`, shape ``(buffer_size * n_envs, n_params)``
        """
        n_transitions = self.buffer_size * self.n_envs
        if params.ndim != 2 or params.shape[0] != n_transitions:
            raise ValueError(
                f"Expected distribution parameters of shape ({n_transitions}, n_params), got {tuple(params.shape)}"
            )
        self.old_distribution_params = params.detach()

    def _prepare_tensors(self) -> dict[str, Any]:
        """:return: The whole rollout, flattened over envs (SB3's order), as tensors on the buffer's device"""
        if not self.generator_ready:
            self.observations = map_observations(self.swap_and_flatten, self.observations)
            for name in ("actions", "values", "log_probs", "advantages", "returns"):
                self.__dict__[name] = self.swap_and_flatten(self.__dict__[name])
            self.generator_ready = True
        if self._tensors is None:
            observations = map_observations(lambda array: th.as_tensor(array, device=self.device), self.observations)
            self._tensors = {"observations": observations, **_flat_transition_tensors(self)}  # type: ignore[arg-type]
        return self._tensors

    def flat_observations(self) -> th.Tensor | TensorDict:
        """All observations of the (full) rollout, flattened over envs, as tensors on the buffer's device."""
        return self._prepare_tensors()["observations"]

    def get(self, batch_size: int | None = None) -> Generator[Any, None, None]:
        assert self.full, "The rollout buffer must be full before sampling from it"
        n_transitions = self.buffer_size * self.n_envs
        permuted = self._get_samples(_permutation(n_transitions, self.device))
        for batch in _minibatch_slices(n_transitions, batch_size):
            # A minibatch of the whole rollout is the permuted rollout itself (no views to take)
            yield permuted if batch.start == 0 and batch.stop >= n_transitions else _sliced(permuted, batch)

    def _get_samples(self, batch_inds: np.ndarray | th.Tensor, env: VecNormalize | None = None) -> Any:
        tensors = self._prepare_tensors()
        batch_inds = th.as_tensor(batch_inds, device=self.device)
        return self._samples_class(
            observations=map_observations(lambda observations: observations[batch_inds], tensors["observations"]),
            actions=tensors["actions"][batch_inds],
            old_values=tensors["old_values"][batch_inds],
            old_log_prob=tensors["old_log_prob"][batch_inds],
            advantages=tensors["advantages"][batch_inds],
            returns=tensors["returns"][batch_inds],
            old_distribution_params=None if self.old_distribution_params is None else self.old_distribution_params[batch_inds],
        )


class ProximalRolloutBuffer(_ProximalBuffer, RolloutBuffer):
    """
    ``RolloutBuffer`` with device-resident minibatches and the old distribution parameters.

    :param buffer_size: Max number of element in the buffer
    :param observation_space: Observation space
    :param action_space: Action space
    :param device: PyTorch device
    :param gae_lambda: Factor for trade-off of bias vs variance for Generalized Advantage Estimator
    :param gamma: Discount factor
    :param n_envs: Number of parallel environments
    """

    _samples_class = ProximalRolloutBufferSamples


class ProximalDictRolloutBuffer(_ProximalBuffer, DictRolloutBuffer):
    """
    ``DictRolloutBuffer`` with device-resident minibatches and the old distribution parameters.

    :param buffer_size: Max number of element in the buffer
    :param observation_space: Observation space (a ``spaces.Dict``)
    :param action_space: Action space
    :param device: PyTorch device
    :param gae_lambda: Factor for trade-off of bias vs variance for Generalized Advantage Estimator
    :param gamma: Discount factor
    :param n_envs: Number of parallel environments
    """

    _samples_class = ProximalDictRolloutBufferSamples


PROXIMAL_BUFFERS: dict[type[RolloutBuffer], type[RolloutBuffer]] = {
    RolloutBuffer: ProximalRolloutBuffer,
    DictRolloutBuffer: ProximalDictRolloutBuffer,
    ProximalRolloutBuffer: ProximalRolloutBuffer,
    ProximalDictRolloutBuffer: ProximalDictRolloutBuffer,
}


def rollout_buffer_classes(
    requested: type[RolloutBuffer] | None, observation_space: spaces.Space, old_distributions: bool
) -> tuple[type[RolloutBuffer], type[RolloutBuffer]]:
    """
    The buffer class to name (as SB3 names it: what checkpoints store, so that SB3's ``PPO`` can load them) and the
    class to build.

    SB3's buffers, and ours, are built as their proximal versions (same samples, plus the old distribution
    parameters). Another class is built as given, when ``old_distributions`` are not needed.

    :param requested: The ``rollout_buffer_class`` argument
    :param observation_space: The observation space
    :param old_distributions: Whether the buffer must hold the old distribution parameters (PPOPenalty)
    :return: (the class to name, the class to build)
    """
    dict_observations = isinstance(observation_space, spaces.Dict)
    if requested is None:
        requested = DictRolloutBuffer if dict_observations else RolloutBuffer
    if issubclass(requested, DictRolloutBuffer) and not dict_observations:
        raise InvalidArgumentError(
            f"rollout_buffer_class={requested.__name__}: DictRolloutBuffer must be used with Dict obs space only, "
            f"got {type(observation_space).__name__}"
        )
    if dict_observations and not issubclass(requested, DictRolloutBuffer):
        raise InvalidArgumentError(
            f"rollout_buffer_class={requested.__name__} cannot hold Dict observations: use DictRolloutBuffer (or None)"
        )
    built = PROXIMAL_BUFFERS.get(requested, requested)
    if old_distributions and not issubclass(built, _ProximalBuffer):
        raise InvalidArgumentError(
            "rollout_buffer_class must be SB3's RolloutBuffer or DictRolloutBuffer, or a subclass of "
            "sb3_ppo_variants.common.buffers.ProximalRolloutBuffer or ProximalDictRolloutBuffer (it stores the old "
            f"action distributions), got {requested.__name__}"
        )
    return requested, built
