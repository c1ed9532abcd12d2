"""
Which implementation the policy's optimizer runs: PyTorch's single-tensor loop, its multi-tensor (``foreach``)
kernels, or its ``fused`` kernels. The algorithm (every hyperparameter, Adam's ``eps`` included) is the same in all
of them; only the order of floating-point operations may differ.

- Default mode: SB3's default optimizer, Adam, runs its multi-tensor kernels. On the CPU they apply, tensor by tensor,
  exactly the operations of the single-tensor implementation that PyTorch picks there by default (bit for bit SB3's
  parameters), with less overhead per step; on a GPU, ``foreach`` already is PyTorch's default.
- ``fast_mode``: the fused implementation where the optimizer has one (Adam, AdamW, SGD, ...), else ``foreach``. The
  optimizer step runs eagerly after the compiled part of the gradient step (see :mod:`sb3_ppo_variants.common.fast`),
  or after the eager one where compilation is unavailable: one kernel updates every parameter.
- A ``fused``, ``foreach`` or ``capturable`` in ``policy_kwargs["optimizer_kwargs"]`` is the user's choice, and
  always wins.

The choice is applied to the optimizer's parameter groups at every update, since loading a checkpoint restores the
parameter groups of the run that saved it (and SB3 builds the optimizer before it moves the policy to its device, so
fused kernels are chosen once the parameters are where they run: SB3 issue #1770); and
:func:`portable_optimizer_state` gives checkpoints the user's choice only, so that neither mode travels in a
checkpoint (e.g. into SB3's ``PPO``).
"""

import inspect
from typing import Any

import torch as th
from stable_baselines3.common.policies import BasePolicy

IMPLEMENTATION_KEYS = ("foreach", "fused", "capturable")


def requested_implementation(policy: BasePolicy) -> dict[str, Any]:
    """
    :param policy: The policy (its ``optimizer_kwargs`` are the user's, plus SB3's ``eps`` default for Adam)
    :return: The user's ``foreach``, ``fused`` and ``capturable`` choices, ``None`` where the user left the choice to
        PyTorch
    """
    optimizer_kwargs = getattr(policy, "optimizer_kwargs", None) or {}
    return {key: optimizer_kwargs.get(key) for key in IMPLEMENTATION_KEYS}


def _accepts(optimizer: th.optim.Optimizer, keyword: str) -> bool:
    return keyword in inspect.signature(type(optimizer)).parameters


def _has_tensor_hyperparameters(group: dict[str, Any]) -> bool:
    # The multi-tensor implementation rejects tensor hyperparameters that the single-tensor one accepts
    return any(isinstance(value, th.Tensor) for value in (group.get("lr"), *group.get("betas", ())))


def _host_step_counters_with_parameters(optimizer: th.optim.Optimizer, group: dict[str, Any]) -> None:
    """The fused kernels expect each parameter's step counter on its device (the others keep it anywhere)."""
    for parameter in group["params"]:
        state = optimizer.state.get(parameter, {})
        if isinstance(state.get("step"), th.Tensor):
            state["step"] = state["step"].to(device=parameter.device, dtype=th.float32)


def select_implementation(optimizer: th.optim.Optimizer, requested: dict[str, Any], fast_mode: bool) -> None:
    """
    Set the implementation of every parameter group (see the module docstring).

    :param optimizer: The policy's optimizer
    :param requested: The user's choice, from :func:`requested_implementation`
    :param fast_mode: Whether the fast implementation is wanted
    """
    user_chose = any(value is not None for value in requested.values())
    for group in optimizer.param_groups:
        for key in IMPLEMENTATION_KEYS:
            if key in group:
                group[key] = False if key == "capturable" and requested[key] is None else requested[key]
        if user_chose or group.get("differentiable"):
            continue
        if fast_mode and _accepts(optimizer, "fused"):
            group["fused"] = True
            _host_step_counters_with_parameters(optimizer, group)
        elif (fast_mode and _accepts(optimizer, "foreach")) or (
            type(optimizer) is th.optim.Adam and not _has_tensor_hyperparameters(group)
        ):
            group["foreach"] = True


def portable_optimizer_state(state_dict: dict[str, Any], requested: dict[str, Any]) -> dict[str, Any]:
    """
    :param state_dict: ``optimizer.state_dict()``
    :param requested: The user's choice, from :func:`requested_implementation`
    :return: The state with each parameter group's implementation set to the user's choice (as SB3 would save it)
    """
    for group in state_dict["param_groups"]:
        for key in IMPLEMENTATION_KEYS:
            if key in group:
                group[key] = False if key == "capturable" and requested[key] is None else requested[key]
    return state_dict
