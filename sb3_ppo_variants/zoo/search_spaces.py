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
"""

from typing import Any

import optuna
from rl_zoo3.hyperparams_opt import convert_onpolicy_params, sample_ppo_params

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
