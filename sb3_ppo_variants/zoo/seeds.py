"""
Trials that train several seeds: the seeds run in lockstep, one process each, so that the trial reports (and the
pruner judges) the mean of the seeds' evaluations at each evaluation point.

Each seed trains in a forked child process (forked, so that it inherits the experiment as it is: envs, wrappers,
registered algorithms, callables in the hyperparameters). At each evaluation its callback sends the mean return to
the trial's process and waits for the answer: go on, or stop (the trial is pruned). A gate (a semaphore) bounds how
many seeds train at the same time, to the cores there are for them; a seed that waits for the answer holds no place
at the gate, so the others always reach the same evaluation.
"""

import contextlib
import multiprocessing
import os
import time
import traceback
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection, wait
from multiprocessing.synchronize import Semaphore
from typing import Any

import torch as th
from stable_baselines3.common.callbacks import EvalCallback

# How the result of a seed's training travels to the trial's process, and the kinds of its errors
EVALUATION, DONE, ERROR = "evaluation", "done", "error"
NON_FINITE, PRUNABLE, FAILURE = "non-finite", "prunable", "failure"
# How often a child waiting for the trial's process (or for the gate) checks that the trial's process is still there
PARENT_CHECK_S = 1.0
# How long the seeds of a stopped trial get to end on their own (their training stops at its next step)
STOP_TIMEOUT_S = 10.0

Training = Callable[[int, EvalCallback], None]
"""Trains one seed: called with the seed and the callback to evaluate with (built by ``make_callback``)."""


class SeedFailedError(RuntimeError):
    """
    A seed's training raised, or its process ended without a result.

    :param seed: The seed
    :param error_type: The name of the exception's class in the child process (``ProcessExited`` for a process
        that ended without a result)
    :param message: Its message
    :param kind: ``non-finite``, ``prunable`` (an ``AssertionError`` or ``ValueError``, as rl_zoo3 prunes) or
        ``failure``
    """

    def __init__(self, seed: int, error_type: str, message: str, kind: str) -> None:
        super().__init__(f"seed {seed}: {error_type}: {message}")
        self.seed, self.error_type, self.message, self.kind = seed, error_type, message, kind


class _Gate:
    """
    The child's side of the gate: a place taken while training, given back while waiting for the trial's process,
    and given back once at the end if held; waits check that the trial's process is still there.

    :param semaphore: The semaphore shared by a trial's seeds
    :param parent_pid: The trial's process
    """

    def __init__(self, semaphore: Semaphore, parent_pid: int) -> None:
        self.semaphore, self.parent_pid, self.held = semaphore, parent_pid, False

    def check_parent(self) -> None:
        # A forked child does not see its pipe close when the trial's process dies (other forked children hold that
        # end): without its parent a child ends at once
        if os.getppid() != self.parent_pid:
            os._exit(1)

    def take(self) -> None:
        while not self.semaphore.acquire(timeout=PARENT_CHECK_S):
            self.check_parent()
        self.held = True

    def give_back(self) -> None:
        if self.held:
            self.held = False
            self.semaphore.release()


class LockstepEvalCallback(EvalCallback):
    """
    SB3's ``EvalCallback`` (the evaluation, the best model saved) that, after each evaluation, sends its mean return
    to the trial's process and goes on only if told so.

    :param channel: The child's end of the pipe to the trial's process
    :param gate: The gate that bounds the seeds training at once (a place held while training)
    :param kwargs: ``EvalCallback``'s arguments
    """

    def __init__(self, channel: Connection, gate: _Gate, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.channel, self.gate = channel, gate

    def _on_step(self) -> bool:
        if not (self.eval_freq > 0 and self.n_calls % self.eval_freq == 0):
            return True
        super()._on_step()
        self.gate.give_back()
        self.channel.send((EVALUATION, float(self.last_mean_reward)))
        while not self.channel.poll(PARENT_CHECK_S):
            self.gate.check_parent()
        go_on = bool(self.channel.recv())
        if go_on:
            self.gate.take()
        return go_on


def _error_kind(error: BaseException) -> str:
    """:return: How the trial treats a seed's error: as a non-finite training, a bad sample (pruned), or a failure"""
    from sb3_ppo_variants.common.finite import NonFiniteError

    if isinstance(error, NonFiniteError):
        return NON_FINITE
    # rl_zoo3 prunes these when they come out of training: sampled hyperparameters that make training fail
    return PRUNABLE if isinstance(error, AssertionError | ValueError) else FAILURE


def _train_in_child(
    train: Training,
    seed: int,
    channel: Connection,
    semaphore: Semaphore,
    threads: int,
    make_callback_kwargs: Callable[[int], dict[str, Any]],
    parent_pid: int,
) -> None:
    """The child process: train one seed, and send how it ended."""
    th.set_num_threads(threads)
    gate = _Gate(semaphore, parent_pid)
    gate.take()
    try:
        train(seed, LockstepEvalCallback(channel, gate, **make_callback_kwargs(seed)))
        channel.send((DONE, None))
    except BaseException as error:  # everything goes to the trial's process, which decides
        message = str(error) or traceback.format_exc(limit=1).strip()
        channel.send((ERROR, (type(error).__name__, message, _error_kind(error))))
    finally:
        gate.give_back()
        channel.close()


def available_cores() -> int:
    """:return: The cores that this process may run on"""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def parallel_seeds(n_seeds: int, n_jobs: int = 1) -> int:
    """
    :param n_seeds: Seeds per trial
    :param n_jobs: Trials that run at the same time in this process
    :return: How many seeds may train at the same time: one per core, shared among the parallel trials
    """
    return max(1, min(n_seeds, available_cores() // max(n_jobs, 1)))


class LockstepSeeds:
    """
    The seeds of one trial, each training in its own process, evaluated in lockstep.

    :param train: Trains one seed (run in the child process)
    :param seeds: The seeds
    :param make_callback_kwargs: Called in the child with the seed: the keyword arguments of its ``EvalCallback``
        (``eval_env``, ``eval_freq``, ``best_model_save_path``, ...)
    :param parallel: How many seeds train at the same time
    :param threads: Torch threads of each seed's process
    """

    def __init__(
        self,
        train: Training,
        seeds: list[int],
        make_callback_kwargs: Callable[[int], dict[str, Any]],
        parallel: int,
        threads: int = 1,
    ) -> None:
        if "fork" not in multiprocessing.get_all_start_methods():
            raise RuntimeError("trials of several seeds need processes started by fork (Linux, macOS): use --trial-seeds 1")
        self.seeds = seeds
        context = multiprocessing.get_context("fork")
        semaphore = context.Semaphore(parallel)
        self._channels: list[Connection] = []
        self._processes = []
        for seed in seeds:
            parent_end, child_end = context.Pipe()
            # Not daemonic: a seed may start processes of its own (SubprocVecEnv); stop() ends them all
            process = context.Process(
                target=_train_in_child,
                args=(train, seed, child_end, semaphore, threads, make_callback_kwargs, os.getpid()),
            )
            process.start()
            child_end.close()
            self._channels.append(parent_end)
            self._processes.append(process)

    def _receive_all(self) -> list[tuple[str, Any]]:
        """
        :return: One message from every seed
        :raises SeedFailedError: At once if a process ended without one: waiting for the others could be forever (it
            may have died holding the place at the gate that they wait for); the others are stopped
        """
        messages: dict[int, tuple[str, Any]] = {}
        pending = set(range(len(self.seeds)))
        while pending:
            waitables: dict[Any, int] = {self._channels[index]: index for index in pending}
            waitables.update({self._processes[index].sentinel: index for index in pending})
            for ready in wait(list(waitables)):
                index = waitables[ready]
                if index not in pending:
                    continue
                try:
                    if self._channels[index].poll():
                        messages[index] = self._channels[index].recv()
                        pending.discard(index)
                        continue
                except EOFError:  # the process ended, and with it its end of the pipe
                    self._processes[index].join(timeout=STOP_TIMEOUT_S)
                if not self._processes[index].is_alive():
                    self.stop()
                    code = self._processes[index].exitcode
                    message = f"its process ended without a result (exit code {code})"
                    raise SeedFailedError(self.seeds[index], "ProcessExited", message, FAILURE)
        return [messages[index] for index in range(len(self.seeds))]

    def evaluations(self) -> Iterator[list[float]]:
        """
        :return: The seeds' mean returns at each evaluation, in the seeds' order; after each, :meth:`answer` must be
            called before the next is read
        :raises SeedFailedError: If a seed's training raised, or its process ended (the other seeds are stopped)
        """
        while True:
            messages = self._receive_all()
            failed = [(seed, content) for seed, (kind, content) in zip(self.seeds, messages, strict=True) if kind == ERROR]
            if failed:
                self.stop()
                seed, (error_type, message, kind) = failed[0]
                raise SeedFailedError(seed, error_type, message, kind)
            kinds = {kind for kind, _ in messages}
            if kinds == {DONE}:
                return
            if kinds != {EVALUATION}:
                self.stop()
                raise RuntimeError(f"the seeds reached different evaluation points: {messages}")
            yield [float(value) for _, value in messages]

    def answer(self, go_on: bool) -> None:
        """:param go_on: Whether the seeds train on to their next evaluation (else they stop and their processes end)"""
        for channel in self._channels:
            channel.send(go_on)
        if not go_on:
            self.stop()

    def stop(self) -> None:
        """End every seed's process (those still running are terminated, with the processes they started)."""
        for channel in self._channels:
            with contextlib.suppress(OSError):  # a child that ended has closed its end
                channel.send(False)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in self._processes:
            process.join(timeout=max(deadline - time.monotonic(), 0.0))
        for process in self._processes:
            if process.is_alive():
                # Waiting for a place at the gate that a dead seed held, or slow to stop
                process.terminate()
                process.join()
        for channel in self._channels:
            channel.close()
