"""
Optuna search spaces, in rl_zoo3's sampler/converter format.

PPOClip searches exactly the zoo's PPO space. PPOPenalty searches the same space and adds:

- ``kl_target``, log-uniform in [1e-3, 1e-1]: the paper tried 0.003, 0.01 and 0.03 on MuJoCo with close
  results (normalized scores .68/.74/.71), so its best value is task-dependent around 0.01; one factor of ~3
  beyond each end of the paper's grid leaves room for tasks that want much smaller or larger steps, and the
  log scale matches the rule's multiplicative nature.
- ``beta``, the initial penalty coefficient, log-uniform in [0.1, 10]: the paper's 1 within a factor of 10. The
  rule doubles or halves beta every update, so the initial value only matters for the first few updates.
- ``combine_clipping`` in {False, True}: whether PPO-Clip's clipping (the zoo's ``clip_range`` choice) is added
  to the penalty, the paper's "in addition to" variant. The zoo's ``clip_range`` is always sampled; it is used
  only when ``combine_clipping`` is True, and is ``None`` otherwise (which also overrides a YAML ``clip_range``).

``tune --fixed NAME:VALUE ...`` holds some of a space's parameters (by the names that ``trials.csv`` shows, e.g.
``one_minus_gamma:0.1`` for gamma 0.9) at one value and searches the others (Optuna's ``PartialFixedSampler``); a
value outside the searched range is allowed, as a task may need one (Pendulum's gamma 0.9 lies below the zoo's 0.97).
"""

import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from rl_zoo3.hyperparams_opt import convert_onpolicy_params, sample_ppo_params

from sb3_ppo_variants.zoo.storage import holds_value

KL_TARGET_RANGE = (1e-3, 1e-1)
INITIAL_BETA_RANGE = (0.1, 10.0)


def convert_ppo_penalty_params(sampled_params: dict[str, Any]) -> dict[str, Any]:
    """
    Turn the raw parameters of a PPOPenalty trial into constructor keywords.

    :param sampled_params: ``trial.params`` of a trial sampled by :func:`sample_ppo_penalty_params`
    :return: Hyperparameters for ``PPOPenalty`` (``policy_kwargs`` included; ``clip_range=None`` without clipping)
    """
    params = dict(sampled_params)
    combine_clipping = params.pop("combine_clipping", True)
    hyperparams = convert_onpolicy_params(params)
    if not combine_clipping:
        hyperparams["clip_range"] = None
    return hyperparams


def sample_ppo_clip_params(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """
    The zoo's PPO search space.

    :param trial: The Optuna trial
    :param n_actions: Number of actions (unused, zoo signature)
    :param n_envs: Number of environments (unused, zoo signature)
    :param additional_args: Zoo extras (unused)
    :return: Hyperparameters for ``PPOClip``
    """
    return sample_ppo_params(trial, n_actions, n_envs, additional_args)


def sample_ppo_penalty_params(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """
    The zoo's PPO search space plus ``kl_target``, the initial ``beta`` and whether clipping is combined.

    :param trial: The Optuna trial
    :param n_actions: Number of actions (unused, zoo signature)
    :param n_envs: Number of environments (unused, zoo signature)
    :param additional_args: Zoo extras (unused)
    :return: Hyperparameters for ``PPOPenalty``
    """
    sample_ppo_params(trial, n_actions, n_envs, additional_args)
    trial.suggest_float("kl_target", *KL_TARGET_RANGE, log=True)
    trial.suggest_float("beta", *INITIAL_BETA_RANGE, log=True)
    trial.suggest_categorical("combine_clipping", [False, True])
    # Converting the trial's recorded parameters keeps sampling and `--trial-id` loading identical
    return convert_ppo_penalty_params(trial.params)


SAMPLERS = {"ppo_clip": sample_ppo_clip_params, "ppo_penalty": sample_ppo_penalty_params}
CONVERTERS = {"ppo_clip": convert_onpolicy_params, "ppo_penalty": convert_ppo_penalty_params}


class FixedParameterError(ValueError):
    """A ``--fixed`` parameter that the search space does not have, or a value that it cannot take (one line)."""


def search_space(sampler: Callable[..., dict[str, Any]]) -> dict[str, BaseDistribution]:
    """
    :param sampler: An rl_zoo3 sampler (``trial, n_actions, n_envs, additional_args``)
    :return: The parameters that it suggests, with their distributions: those of one trial that it samples in a
        throwaway in-memory study (a parameter suggested only on some branch may be missing)
    """
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created in memory" line
    try:
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=random.randrange(2**32)))
    finally:
        optuna.logging.set_verbosity(verbosity)
    sampler(study.ask(), 1, 1, {"using_her_replay_buffer": False, "her_kwargs": {}})
    return dict(study.trials[0].distributions)


def _parsed_value(name: str, text: str, distribution: BaseDistribution) -> Any:
    """:return: ``text`` as a value of ``distribution`` (which it may lie outside, except a log scale's <= 0)"""
    if isinstance(distribution, CategoricalDistribution):
        for choice in distribution.choices:
            if str(choice) == text:
                return choice
        raise FixedParameterError(f"--fixed {name}:{text}: {name} is one of {', '.join(map(str, distribution.choices))}")
    try:
        value = int(text) if isinstance(distribution, IntDistribution) else float(text)
    except ValueError:
        kind = "an integer" if isinstance(distribution, IntDistribution) else "a number"
        raise FixedParameterError(f"--fixed {name}:{text}: {name} must be {kind}") from None
    log_scale = getattr(distribution, "log", False)
    if not math.isfinite(value) or (log_scale and value <= 0):
        bound = ", > 0 on its log scale" if log_scale else ""
        raise FixedParameterError(f"--fixed {name}:{text}: {name} must be finite{bound}")
    return value


def fixed_parameters(specs: Sequence[str], space: dict[str, BaseDistribution]) -> tuple[dict[str, Any], list[str]]:
    """
    :param specs: ``NAME:VALUE`` strings, as given to ``--fixed``
    :param space: The search space, from :func:`search_space`
    :return: The fixed values by name, and one note per value outside its searched range
    :raises FixedParameterError: For a malformed spec, an unknown or repeated name, or a value its parameter cannot take
    """
    fixed: dict[str, Any] = {}
    notes = []
    for spec in specs:
        name, separator, text = spec.partition(":")
        if not separator or not name or not text:
            raise FixedParameterError(f"--fixed takes NAME:VALUE pairs (e.g. one_minus_gamma:0.1), got {spec!r}")
        if name not in space:
            raise FixedParameterError(f"--fixed {spec}: the search space has no {name!r}; it has {', '.join(sorted(space))}")
        if name in fixed:
            raise FixedParameterError(f"--fixed {spec}: {name} is given twice")
        distribution = space[name]
        fixed[name] = value = _parsed_value(name, text, distribution)
        if isinstance(distribution, (FloatDistribution, IntDistribution)) and not holds_value(distribution, value):
            low, high = distribution.low, distribution.high
            notes.append(f"--fixed {spec}: outside the searched range [{low}, {high}], used as given")
    return fixed, notes
