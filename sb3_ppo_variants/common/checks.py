"""
Argument validation: one table of every checked argument of both algorithms, the rules between arguments, and one
error class.

:class:`InvalidArgumentError` is both a ``ValueError`` (what Python code expects of a bad value) and an
``AssertionError`` (what SB3's ``PPO`` raises for the same arguments, so code and tests written against SB3 keep
working). The checks are explicit ``raise`` statements: they also run under ``python -O``.
"""

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from sb3_ppo_variants.common.adaptive_beta import BETA_MAX, BETA_MIN


class InvalidArgumentError(ValueError, AssertionError):
    """An argument (or a schedule's value) is outside its allowed range; the message names it and the range."""


@dataclass(frozen=True)
class Number:
    """
    A real number in a range.

    :param minimum: Lower bound, or None
    :param maximum: Upper bound (inclusive), or None
    :param include_minimum: Whether ``minimum`` itself is allowed
    :param allow_inf: Whether ``+inf`` is allowed (NaN never is)
    :param optional: Whether ``None`` is allowed
    :param schedule: Whether a callable of the progress remaining is allowed (its values are checked when used,
        see :func:`check_schedule_value`)
    """

    minimum: float | None = None
    maximum: float | None = None
    include_minimum: bool = True
    allow_inf: bool = False
    optional: bool = False
    schedule: bool = False

    def check(self, name: str, value: Any) -> None:
        if (value is None and self.optional) or (callable(value) and self.schedule):
            return
        lower = "" if self.minimum is None else f"{'>=' if self.include_minimum else '>'} {self.minimum}"
        upper = "" if self.maximum is None else f"<= {self.maximum}"
        allowed = " and ".join(part for part in (lower, upper) if part)
        alternatives = "".join((", a schedule" if self.schedule else "", " or None" if self.optional else ""))
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise InvalidArgumentError(f"{name} must be a number {allowed or 'finite'}{alternatives}, got {value!r}")
        minimum = self.minimum
        too_low = minimum is not None and (value < minimum or (value == minimum and not self.include_minimum))
        too_high = self.maximum is not None and value > self.maximum
        non_finite = math.isnan(value) or (math.isinf(value) and not (self.allow_inf and value > 0))
        if non_finite or too_low or too_high:
            requirement = " and ".join(part for part in ("" if self.allow_inf else "finite", allowed) if part)
            raise InvalidArgumentError(f"{name} must be {requirement}, got {value}")


@dataclass(frozen=True)
class Integer:
    """
    An integer ``>= minimum``.

    :param minimum: Smallest allowed value
    """

    minimum: int

    def check(self, name: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < self.minimum:
            raise InvalidArgumentError(f"{name} must be an integer >= {self.minimum}, got {value!r}")


# Every checked constructor argument of PPOClip and PPOPenalty. The clip ranges must be > 0 as floats (a clip range of
# 0 freezes the policy; SB3 rejects clip_range_vf <= 0); a schedule may reach 0 at the end of training.
ARGUMENTS: dict[str, Number | Integer] = {
    "learning_rate": Number(minimum=0.0, schedule=True),
    "n_steps": Integer(minimum=1),
    "batch_size": Integer(minimum=1),
    "n_epochs": Integer(minimum=1),
    "gamma": Number(minimum=0.0, maximum=1.0),
    "gae_lambda": Number(minimum=0.0, maximum=1.0),
    "clip_range": Number(minimum=0.0, include_minimum=False, schedule=True, optional=True),
    "clip_range_vf": Number(minimum=0.0, include_minimum=False, schedule=True, optional=True),
    "ent_coef": Number(),
    "vf_coef": Number(minimum=0.0),
    "max_grad_norm": Number(minimum=0.0, include_minimum=False, allow_inf=True),
    "target_kl": Number(minimum=0.0, include_minimum=False, optional=True),
    "kl_target": Number(minimum=0.0, include_minimum=False, optional=True),
    "beta": Number(minimum=0.0),
    "beta_factor": Number(minimum=1.0, include_minimum=False),
    "kl_tolerance": Number(minimum=1.0),
}


def check_arguments(arguments: Mapping[str, Any]) -> None:
    """
    Check every argument of ``arguments`` that ``ARGUMENTS`` lists (others are ignored), then the rules between them.

    :param arguments: Argument names and values, e.g. a constructor's ``locals()``
    :raises InvalidArgumentError: naming the first argument out of its range
    """
    for name, rule in ARGUMENTS.items():
        if name in arguments:
            rule.check(name, arguments[name])
    # Advantage normalization divides by the std of the minibatch: undefined for a single sample
    # (see https://github.com/DLR-RM/stable-baselines3/issues/440)
    if arguments.get("normalize_advantage") and arguments.get("batch_size") == 1:
        raise InvalidArgumentError("batch_size must be an integer >= 2 when normalize_advantage=True, got 1")
    if arguments.get("kl_target") is not None and "beta" in arguments and not BETA_MIN <= arguments["beta"] <= BETA_MAX:
        raise InvalidArgumentError(
            f"beta must be in [{BETA_MIN}, {BETA_MAX}] when kl_target is set (the adaptive beta is kept in that range, "
            f"and a beta of 0 could never grow), got {arguments['beta']}"
        )


def check_rollout_size(n_steps: int, n_envs: int, batch_size: int, normalize_advantage: bool) -> None:
    """
    Reject a rollout of one transition with advantage normalization, and warn (as SB3 does) when the minibatch size
    does not divide the rollout.

    :param n_steps: Steps per environment and rollout
    :param n_envs: Number of environments
    :param batch_size: Minibatch size
    :param normalize_advantage: Whether advantages are normalized per minibatch
    """
    buffer_size = n_steps * n_envs
    if normalize_advantage and buffer_size < 2:
        raise InvalidArgumentError(
            f"n_steps * n_envs must be > 1 when normalize_advantage=True, got n_steps={n_steps} and n_envs={n_envs}"
        )
    if buffer_size % batch_size > 0:
        warnings.warn(
            f"You have specified a mini-batch size of {batch_size},"
            f" but because the `RolloutBuffer` is of size `n_steps * n_envs = {buffer_size}`,"
            f" after every {buffer_size // batch_size} untruncated mini-batches,"
            f" there will be a truncated mini-batch of size {buffer_size % batch_size}\n"
            f"We recommend using a `batch_size` that is a factor of `n_steps * n_envs`.\n"
            f"Info: (n_steps={n_steps} and n_envs={n_envs})"
        )


def check_schedule_value(name: str, value: float, progress_remaining: float) -> float:
    """
    Check the value of a schedule where it can be wrong: a non-finite value always is; a negative one is while the
    progress remaining is >= 0. The last rollout of a run may overshoot the budget, so that the progress remaining is
    slightly negative: a linear schedule to 0 (rl_zoo3's ``lin_<x>``) then gives a tiny negative value, which SB3's
    ``PPO`` uses as it is, and so do these algorithms (bit for bit the same run).

    :param name: The schedule's parameter name
    :param value: Its value at ``progress_remaining``
    :param progress_remaining: The progress remaining (1 at the start of training, 0 at the budget)
    :return: ``value``
    """
    negative = value < 0 and progress_remaining >= 0
    if not math.isfinite(value) or negative:
        requirement = "finite and >= 0.0" if progress_remaining >= 0 else "finite"
        raise InvalidArgumentError(
            f"{name} (schedule value at progress_remaining={progress_remaining:.4g}) must be {requirement}, got {value}"
        )
    return value
