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
import traceback
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Semaphore
from typing import Any

import torch as th
from stable_baselines3.common.callbacks import EvalCallback

# How the result of a seed's training travels to the trial's process
EVALUATION, DONE, ERROR = "evaluation", "done", "error"

Training = Callable[[int, EvalCallback], None]
"""Trains one seed: called with the seed and the callback to evaluate with (built by ``make_callback``)."""


class SeedFailedError(RuntimeError):
    """
    A seed's training raised: ``error_type`` is the name of the exception's class, the message names the seed.

    :param seed: The seed
    :param error_type: The name of the exception's class in the child process
    :param message: Its message
    """

    def __init__(self, seed: int, error_type: str, message: str) -> None:
        super().__init__(f"seed {seed}: {error_type}: {message}")
        self.seed, self.error_type, self.message = seed, error_type, message


class LockstepEvalCallback(EvalCallback):
    """
    SB3's ``EvalCallback`` (the evaluation, the best model saved) that, after each evaluation, sends its mean return
    to the trial's process and goes on only if told so.

    :param channel: The child's end of the pipe to the trial's process
    :param gate: The semaphore that bounds the seeds training at once (held while training)
    :param kwargs: ``EvalCallback``'s arguments
    """

    def __init__(self, channel: Connection, gate: Semaphore, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.channel, self.gate = channel, gate

    def _on_step(self) -> bool:
        if not (self.eval_freq > 0 and self.n_calls % self.eval_freq == 0):
            return True
        super()._on_step()
        self.gate.release()
        self.channel.send((EVALUATION, float(self.last_mean_reward)))
        go_on = bool(self.channel.recv())
        self.gate.acquire()
        return go_on


def _train_in_child(
    train: Training,
    seed: int,
    channel: Connection,
    gate: Semaphore,
    threads: int,
    make_callback_kwargs: Callable[[int], dict[str, Any]],
) -> None:
    """The child process: train one seed, and send how it ended."""
    th.set_num_threads(threads)
    gate.acquire()
    try:
        train(seed, LockstepEvalCallback(channel, gate, **make_callback_kwargs(seed)))
        channel.send((DONE, None))
    except BaseException as error:  # everything goes to the trial's process, which decides
        channel.send((ERROR, (type(error).__name__, str(error) or traceback.format_exc(limit=1).strip())))
    finally:
        gate.release()
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
    """

    def __init__(
        self,
        train: Training,
        seeds: list[int],
        make_callback_kwargs: Callable[[int], dict[str, Any]],
        parallel: int,
    ) -> None:
        if "fork" not in multiprocessing.get_all_start_methods():
            raise RuntimeError("trials of several seeds need processes started by fork (Linux, macOS): use --trial-seeds 1")
        self.seeds = seeds
        context = multiprocessing.get_context("fork")
        gate = context.Semaphore(parallel)
        threads = max(1, th.get_num_threads() // parallel)
        self._channels: list[Connection] = []
        self._processes = []
        for seed in seeds:
            parent_end, child_end = context.Pipe()
            process = context.Process(
                target=_train_in_child,
                args=(train, seed, child_end, gate, threads, make_callback_kwargs),
                daemon=True,
            )
            process.start()
            child_end.close()
            self._channels.append(parent_end)
            self._processes.append(process)

    def _receive(self, index: int) -> tuple[str, Any]:
        try:
            return self._channels[index].recv()
        except EOFError:
            self._processes[index].join()
            code = self._processes[index].exitcode
            return ERROR, ("ProcessExited", f"its process ended without a result (exit code {code})")

    def evaluations(self) -> Iterator[list[float]]:
        """
        :return: The seeds' mean returns at each evaluation, in the seeds' order; after each, :meth:`answer` must be
            called before the next is read
        :raises SeedFailedError: If a seed's training raised (the other seeds are stopped)
        """
        while True:
            messages = [self._receive(index) for index in range(len(self.seeds))]
            failed = [(seed, content) for seed, (kind, content) in zip(self.seeds, messages, strict=True) if kind == ERROR]
            if failed:
                self.stop()
                seed, (error_type, message) = failed[0]
                raise SeedFailedError(seed, error_type, message)
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
        """End every seed's process (those still running are terminated)."""
        for channel in self._channels:
            with contextlib.suppress(OSError):  # a child that ended has closed its end
                channel.send(False)
        for process in self._processes:
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()
                process.join()
        for channel in self._channels:
            channel.close()
