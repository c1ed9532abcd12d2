"""
The opt-in fast path (``fast_mode=True``): the work that repeats, compiled with ``torch.compile``.

On the small networks of most RL tasks, training time goes to Python's and PyTorch's overhead per operation, not
to arithmetic. Compilation removes part of it: the gradient step (forward pass, the variant's objective, value and
entropy terms, backward pass and gradient clipping) becomes one graph of fused kernels, and so do the policy's
forward pass in the rollout and a variant's passes over the whole rollout; each call still pays dynamo's guards and
the compiled graph's wrappers (see ``benchmarks/results/speed.md`` for what that leaves). The optimizer's step runs
eagerly after it, with its fused implementation (one kernel for every parameter; see
:mod:`sb3_ppo_variants.common.optim`): compiled, it would cost two graph breaks per step, and kernels of its own to
compile, for no faster arithmetic. On CUDA the compiled functions also run as CUDA graphs (``mode="reduce-overhead"``).

What keeps a run from recompiling: the scalars that change between updates (clip ranges, beta) enter as tensors; the
learning rate is read by the eager optimizer step, outside the compiled code.

Dynamo's settings that the compiled functions need (:func:`_dynamo_options`) are set for a whole update or a whole
rollout (:meth:`FastPath.settings`), not for each call: they are read only when dynamo compiles, and setting them costs
tens of microseconds, as much as a compiled forward pass saves on a small network.

Where compilation is unavailable (an old torch, an unsupported Python) or fails (no C++ compiler, a policy that
dynamo cannot trace), :class:`FastPath` warns once, naming the reason, and the eager path runs from then on: with
the optimizer's fused implementation. An update during which compilation failed is undone and run again eagerly,
on the same minibatches.
"""

import contextlib
import functools
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import torch as th
from stable_baselines3.common.policies import BasePolicy

# Oldest torch whose torch.compile traces SB3's policies and torch.distributions as needed here
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


# Dynamo keeps, per compiled frame, cache entries for the models it has compiled it for (it guards on the objects
# that the frame reads), also once a model is gone; its default limit (8) would silently turn the fast path eager
# from the 9th model of a process on (an Optuna study, a test session). Raised during this package's updates and
# rollouts in fast mode (see FastPath.settings).
RECOMPILE_LIMIT = 4096


def _dynamo_options(trace_backward: bool) -> dict[str, Any]:
    """
    Dynamo settings while this package's compiled functions run (see :meth:`FastPath.settings`): the recompile limits
    (see ``RECOMPILE_LIMIT``), and with ``trace_backward``, ``trace_autograd_ops`` (torch >= 2.13), which traces
    ``loss.backward()`` into the graph of the forward pass where it can (SB3's policies keep the distribution of their
    last forward pass on ``action_dist``: the gradient step drops it before the backward pass, else its tensors would
    outlive the step and dynamo would break the graph at ``backward()``).

    :param trace_backward: Whether to trace the backward pass; only while the compiled functions compute their loss
        themselves (dynamo turns the backward pass of a loss that a function receives into a no-op)
    """
    config = th._dynamo.config
    wanted = {"recompile_limit": RECOMPILE_LIMIT, "accumulated_recompile_limit": RECOMPILE_LIMIT}
    if trace_backward:
        wanted["trace_autograd_ops"] = True
    return {name: value for name, value in wanted.items() if hasattr(config, name)}


@functools.cache
def start_vector_instruction_checks() -> tuple[threading.Thread, ...]:
    """
    Start, in background threads (once per process), the check that inductor makes of which vector instruction sets
    (AVX2, AVX-512, ...) the C++ compiler builds and the CPU runs. Inductor makes it at its first compilation of C++
    kernels, one test build after another in the main thread: about 6 s of a first compilation on a 2-core machine.
    Started with a model's fast path on the CPU (its first rollout), one thread per instruction set, the builds run
    side by side and while dynamo traces the first compiled function. Each set's answer is cached by inductor, which
    then reuses it (or waits for a build in progress: the builds hold a file lock). Any error leaves the check to
    inductor.

    Relies on ``torch._inductor.cpu_vec_isa`` (private), only to start inductor's own check earlier: where its names
    differ, nothing is started.

    :return: The threads started (none where the module or the x86 CPU flags are not found)
    """
    try:
        # Imported here, in the calling thread: the checks would import them (setuptools with them) on first use, and an
        # import in a background thread while the main thread imports torch's compiler can fail (a module not found)
        import torch.utils.cpp_extension  # noqa: F401
        from torch._inductor import codecache, cpp_builder, cpu_vec_isa  # noqa: F401

        cpu_flags = set(cpu_vec_isa.x86_isa_checker())
        instruction_sets = [isa for isa in cpu_vec_isa.supported_vec_isa_list if cpu_flags.issuperset(str(isa).split())]
    except (ImportError, AttributeError):
        return ()

    def check(isa: Any) -> None:
        # inductor's check, cached on the instruction set; where it fails, inductor makes it again (and reports) when
        # it needs the answer
        with contextlib.suppress(Exception):
            bool(isa)

    threads = tuple(threading.Thread(target=check, args=(isa,), daemon=True) for isa in instruction_sets)
    for thread in threads:
        thread.start()
    return threads


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
        if self.disabled_reason is not None:
            self._warn()
        elif device.type == "cpu":
            start_vector_instruction_checks()

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

    @contextmanager
    def settings(self, trace_backward: bool) -> Iterator[None]:
        """
        Dynamo's settings for the compiled functions (see :func:`_dynamo_options`), within the block: around a whole
        update or rollout, since dynamo reads them only when it compiles, and setting them costs about as much as a
        compiled call of a small network saves.

        :param trace_backward: Whether the compiled functions called within trace their backward pass
        """
        if not self.enabled:
            yield
            return
        with th._dynamo.config.patch(**_dynamo_options(trace_backward)):
            yield

    def compiled(self, name: str, function: Function, cuda_graphs: bool = True) -> Function:
        """
        :param name: A name for the function (one compiled version per name)
        :param function: The eager function (called within :meth:`settings`)
        :param cuda_graphs: Whether it may run as CUDA graphs on CUDA (its outputs are then copied, as the next replay
            overwrites them)
        :return: ``function`` compiled, raising :class:`CompilationFailedError` (after disabling the fast path) if
            compiling or running it fails; ``function`` itself when the fast path is disabled
        """
        if not self.enabled:
            return function
        if name not in self._compiled:
            self._compiled[name] = self._compile(name, function, cuda_graphs and self.cuda_graphs)
        return self._compiled[name]  # type: ignore[return-value]

    def _compile(self, name: str, function: Callable[..., Any], cuda_graphs: bool) -> Callable[..., Any]:
        compiled_function = th.compile(function, mode="reduce-overhead" if cuda_graphs else None)

        def run(*args: Any, **kwargs: Any) -> Any:
            if cuda_graphs:
                th.compiler.cudagraph_mark_step_begin()
            with self._compilation_failures(name):
                outputs = compiled_function(*args, **kwargs)
            return _clone_outputs(outputs) if cuda_graphs else outputs

        return run

    @contextmanager
    def _compilation_failures(self, name: str) -> Iterator[None]:
        """
        Within the block, a compilation error disables the fast path and raises :class:`CompilationFailedError`.

        :param name: What compiles within the block (named in the warning)
        """
        try:
            yield
        except th._dynamo.exc.TorchDynamoException as error:
            # dynamo's and inductor's errors (tracing, the backend, a C++ compiler, also inductor's compilation of a
            # backward pass at its first call); any other error (out of memory, a policy's own) is the eager
            # function's too, and propagates
            self.disable(f"compiling {name} failed with {_describe(error)}")
            raise CompilationFailedError(self.disabled_reason) from error

    def guarded(self, name: str, function: Function) -> Function:
        """
        :param name: What compiles when ``function`` runs (named in the warning)
        :param function: An eager function that may compile: the backward pass of a compiled loss, which inductor
            compiles at its first call
        :return: ``function``, raising :class:`CompilationFailedError` (after disabling the fast path) if compiling
            fails within it
        """

        def run(*args: Any, **kwargs: Any) -> Any:
            with self._compilation_failures(name):
                return function(*args, **kwargs)

        return run  # type: ignore[return-value]

    def compiled_or_eager(self, name: str, function: Function) -> Function:
        """
        :param name: A name for the function (one compiled version per name)
        :param function: The eager function (called within :meth:`settings`)
        :return: ``function`` compiled; where compiling it fails, the fast path is disabled and that call, and later
            ones, run ``function`` itself
        """
        compiled_function = self.compiled(name, function)

        def run(*args: Any, **kwargs: Any) -> Any:
            if self.enabled:
                try:
                    return compiled_function(*args, **kwargs)
                except CompilationFailedError:
                    pass
            return function(*args, **kwargs)

        return run  # type: ignore[return-value]

    @contextmanager
    def compiled_within(self, name: str, function: Function) -> Iterator[Function]:
        """
        Within the block, with dynamo's settings for functions that do not compute gradients: ``function`` compiled (see
        :meth:`compiled_or_eager`), or ``function`` itself when the fast path is disabled.

        :param name: A name for the function (one compiled version per name)
        :param function: The eager function
        """
        if not self.enabled:
            yield function
            return
        with self.settings(trace_backward=False):
            yield self.compiled_or_eager(name, function)

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
        with self.compiled_within("the policy's forward pass", policy.forward) as forward:
            # An instance attribute overrides the class's forward for nn.Module.__call__; removed when the block ends,
            # so the policy never keeps (or pickles, or copies) a compiled function
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


def _describe(error: BaseException) -> str:
    """:return: The innermost cause of a compilation error (dynamo and inductor wrap it), its type and first line"""
    while True:
        cause = getattr(error, "inner_exception", None) or error.__cause__
        if not isinstance(cause, BaseException):
            break
        error = cause
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else '(no message)'}"
