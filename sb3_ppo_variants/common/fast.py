"""
The opt-in fast path (``fast_mode=True``): the work that repeats, compiled with ``torch.compile``.

On the small networks of most RL tasks, training time goes to Python's and PyTorch's overhead per operation, not
to arithmetic. Compilation removes part of it: the whole gradient step (forward pass, the variant's objective, value
and entropy terms, backward pass, gradient clipping and the optimizer step) becomes a few graphs of fused kernels,
and so does the policy's forward pass in the rollout; each call still pays dynamo's guards and the compiled graphs'
wrappers (see ``benchmarks/results/speed.md`` for what that leaves). On CUDA both also run as CUDA graphs
(``mode="reduce-overhead"``).

What keeps a run from recompiling: the scalars that change between updates (learning rate, clip ranges, beta) enter
as tensors, the learning rate as a tensor kept in the optimizer's parameter groups (:meth:`FastPath.set_learning_rate`).

Where compilation is unavailable (an old torch, an unsupported Python) or fails (no C++ compiler, a policy that
dynamo cannot trace), :class:`FastPath` warns once, naming the reason, and the eager path runs from then on: with
the optimizer's fused implementation. An update during which compilation failed is undone and run again eagerly,
on the same minibatches.
"""

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import torch as th
from stable_baselines3.common.policies import BasePolicy

# Oldest torch whose torch.compile traces SB3's policies, torch.distributions and the optimizers' step as needed here
MINIMUM_TORCH_VERSION = (2, 6)

Function = TypeVar("Function", bound=Callable[..., Any])


class CompilationFailedError(RuntimeError):
    """Raised out of a compiled function when compiling (or running) it failed; the caller runs eagerly instead."""


def _torch_version() -> tuple[int, int]:
    major, minor = th.__version__.split(".")[:2]
    return int(major), int(minor)


def compilation_unavailable_reason() -> str | None:
    """:return: Why ``torch.compile`` cannot run here, or None if it may (a C++ compiler is only checked by compiling)"""
    if not hasattr(th, "compile") or _torch_version() < MINIMUM_TORCH_VERSION:
        minimum = ".".join(map(str, MINIMUM_TORCH_VERSION))
        return f"torch {th.__version__} has no torch.compile that fast_mode can use (it needs torch >= {minimum})"
    if not th._dynamo.is_dynamo_supported():
        return "torch.compile does not support this Python version"
    return None


# Dynamo keeps, per compiled frame, one cache entry for each optimizer it has stepped (it guards on the optimizer's
# identity), also once the model is gone; its default limit (8) would silently turn the fast path eager from the
# 9th model of a process on (an Optuna study, a test session). Raised while this package's compiled functions run.
RECOMPILE_LIMIT = 4096


def _dynamo_options(trace_backward: bool) -> dict[str, Any]:
    """
    Dynamo settings while a compiled function runs (set only then, so no other compiled code sees them): the
    recompile limits (see ``RECOMPILE_LIMIT``), and with ``trace_backward``, ``trace_autograd_ops`` (torch >= 2.13),
    which traces ``loss.backward()`` into the graph of the forward pass where it can. SB3's policies keep the
    distribution of their last forward pass on ``action_dist``, tensors that outlive the step, so dynamo still breaks
    the graph at ``backward()`` for them, and the backward pass runs through the compiled backward graph.

    :param trace_backward: Whether to trace the backward pass; only for a function that computes its loss itself
        (dynamo turns the backward pass of a loss that a function receives into a no-op)
    """
    config = th._dynamo.config
    wanted = {"recompile_limit": RECOMPILE_LIMIT, "accumulated_recompile_limit": RECOMPILE_LIMIT}
    if trace_backward:
        wanted["trace_autograd_ops"] = True
    return {name: value for name, value in wanted.items() if hasattr(config, name)}


def _clone_outputs(outputs: Any) -> Any:
    """Copies of the tensors in ``outputs`` (a CUDA graph writes its outputs into the same memory at every replay)."""
    if isinstance(outputs, th.Tensor):
        return outputs.clone()
    if isinstance(outputs, tuple) and hasattr(outputs, "_fields"):
        return type(outputs)(*(_clone_outputs(value) for value in outputs))
    if isinstance(outputs, tuple | list):
        return type(outputs)(_clone_outputs(value) for value in outputs)
    if isinstance(outputs, dict):
        return {key: _clone_outputs(value) for key, value in outputs.items()}
    return outputs


class FastPath:
    """
    The compiled functions of one model, and the fallback to the eager path.

    :param device: The policy's device: CUDA graphs on CUDA, plain compilation elsewhere
    """

    def __init__(self, device: th.device) -> None:
        self.device = device
        self.cuda_graphs = device.type == "cuda"
        self.disabled_reason = compilation_unavailable_reason()
        self._warned = False
        self._compiled: dict[str, Callable[..., Any]] = {}
        self._learning_rates: dict[int, th.Tensor] = {}
        if self.disabled_reason is not None:
            self._warn()

    @property
    def enabled(self) -> bool:
        """Whether the compiled functions run (False after a failure: the eager path runs from then on)."""
        return self.disabled_reason is None

    def _warn(self) -> None:
        if not self._warned:
            self._warned = True
            warnings.warn(
                f"fast_mode runs without compilation: {self.disabled_reason}. Training goes on with the eager path "
                "(the optimizer's fused implementation, unless optimizer_kwargs chooses one), which is slower but the "
                "same algorithm.",
                UserWarning,
                stacklevel=3,
            )

    def disable(self, reason: str) -> None:
        """:param reason: Why the compiled path stops (named in the one warning)"""
        self.disabled_reason = reason
        self._compiled.clear()
        self._warn()

    def compiled(self, name: str, function: Function, cuda_graphs: bool = True, trace_backward: bool = False) -> Function:
        """
        :param name: A name for the function (one compiled version per name)
        :param function: The eager function
        :param cuda_graphs: Whether it may run as CUDA graphs on CUDA (its outputs are then copied, as the next replay
            overwrites them)
        :param trace_backward: Whether the backward pass is traced into the graph (see :func:`_dynamo_options`)
        :return: ``function`` compiled, raising :class:`CompilationFailedError` (after disabling the fast path) if
            compiling or running it fails; ``function`` itself when the fast path is disabled
        """
        if not self.enabled:
            return function
        if name not in self._compiled:
            self._compiled[name] = self._compile(name, function, cuda_graphs and self.cuda_graphs, trace_backward)
        return self._compiled[name]  # type: ignore[return-value]

    def _compile(self, name: str, function: Callable[..., Any], cuda_graphs: bool, trace_backward: bool) -> Callable[..., Any]:
        compiled_function = th.compile(function, mode="reduce-overhead" if cuda_graphs else None)
        options = _dynamo_options(trace_backward)

        def run(*args: Any, **kwargs: Any) -> Any:
            if cuda_graphs:
                th.compiler.cudagraph_mark_step_begin()
            try:
                with th._dynamo.config.patch(**options):
                    outputs = compiled_function(*args, **kwargs)
            except th._dynamo.exc.TorchDynamoException as error:
                # dynamo's and inductor's errors (tracing, the backend, a C++ compiler); any other error (out of
                # memory, a policy's own) is the eager function's too, and propagates
                self.disable(f"compiling {name} failed with {_describe(error)}")
                raise CompilationFailedError(self.disabled_reason) from error
            return _clone_outputs(outputs) if cuda_graphs else outputs

        return run

    @contextmanager
    def compiled_forward(self, policy: BasePolicy) -> Iterator[None]:
        """
        Within the block, calls of ``policy`` (its ``forward``, as in SB3's rollout collection) run compiled; a failure
        to compile disables the fast path and that call, and later ones, run eagerly.

        :param policy: The policy
        """
        if not self.enabled:
            yield
            return
        eager_forward = policy.forward
        compiled_forward = self.compiled("the policy's forward pass", eager_forward)

        def forward(*args: Any, **kwargs: Any) -> Any:
            if self.enabled:
                try:
                    return compiled_forward(*args, **kwargs)
                except CompilationFailedError:
                    pass
            return eager_forward(*args, **kwargs)

        # An instance attribute overrides the class's forward for nn.Module.__call__; removed when the block ends, so
        # the policy never keeps (or pickles, or copies) a compiled function
        policy.forward = forward  # type: ignore[method-assign]
        try:
            yield
        finally:
            del policy.forward

    def as_tensors(self, scalars: dict[str, Any], dtype: th.dtype) -> dict[str, th.Tensor | None]:
        """
        :param scalars: An update's coefficients (floats, or None where unused)
        :param dtype: The policy's floating-point type
        :return: The coefficients as 0-d tensors on the device: a compiled step reads their values, not their constants
        """
        return {
            name: None if value is None else th.tensor(value, dtype=dtype, device=self.device)
            for name, value in scalars.items()
        }

    def set_learning_rate(self, optimizer: th.optim.Optimizer) -> None:
        """
        Keep each parameter group's learning rate (the float that SB3's schedule just wrote) in a tensor of the
        group's own, the same tensor at every update: a changing float would make the optimizer step recompile.

        :param optimizer: The policy's optimizer
        """
        for index, group in enumerate(optimizer.param_groups):
            value = float(group["lr"])
            tensor = self._learning_rates.get(index)
            if tensor is None:
                dtype = group["params"][0].dtype
                tensor = self._learning_rates[index] = th.tensor(value, dtype=dtype, device=self.device)
            tensor.fill_(value)
            group["lr"] = tensor


def _describe(error: BaseException) -> str:
    """:return: The innermost cause of a compilation error (dynamo and inductor wrap it), its type and first line"""
    while True:
        cause = getattr(error, "inner_exception", None) or error.__cause__
        if not isinstance(cause, BaseException):
            break
        error = cause
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else '(no message)'}"
