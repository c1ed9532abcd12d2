"""Registration of the algorithms, samplers and converters into rl_zoo3's tables."""

from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.utils import LinearSchedule
from torch import nn

from sb3_ppo_variants.ppo_clip import PPOClip
from sb3_ppo_variants.ppo_penalty import PPOPenalty

ZOO_ALGOS: dict[str, type[BaseAlgorithm]] = {"ppo_clip": PPOClip, "ppo_penalty": PPOPenalty}


def zoo_config_path(algo: str) -> Path:
    """
    :param algo: ``ppo_clip`` or ``ppo_penalty``
    :return: Path of the algorithm's zoo-format hyperparameter file shipped with the package
    """
    if algo not in ZOO_ALGOS:
        raise ValueError(f"algo must be one of {sorted(ZOO_ALGOS)}, got {algo!r}")
    return Path(str(resources.files("sb3_ppo_variants.zoo_configs") / f"{algo}.yml"))


def register_algorithms() -> None:
    """Add ``ppo_clip`` and ``ppo_penalty`` to ``rl_zoo3.ALGOS``, ``HYPERPARAMS_SAMPLER`` and ``HYPERPARAMS_CONVERTER``."""
    from rl_zoo3.hyperparams_opt import HYPERPARAMS_CONVERTER, HYPERPARAMS_SAMPLER
    from rl_zoo3.utils import ALGOS

    from sb3_ppo_variants.zoo.search_spaces import CONVERTERS, SAMPLERS

    ALGOS.update(ZOO_ALGOS)
    HYPERPARAMS_SAMPLER.update(SAMPLERS)
    HYPERPARAMS_CONVERTER.update(CONVERTERS)


def zoo_hyperparameters(algo: str, env_id: str) -> dict[str, Any]:
    """
    :param algo: ``ppo_clip`` or ``ppo_penalty``
    :param env_id: An environment id with an entry in the algorithm's YAML file
    :return: The entry, as written (``lin_<x>`` schedules and ``policy_kwargs`` as strings)
    """
    with open(zoo_config_path(algo)) as file:
        entries = yaml.safe_load(file)
    if env_id not in entries:
        raise ValueError(
            f"env_id must be one of the entries of {zoo_config_path(algo).name}: {sorted(entries)}, got {env_id!r}"
        )
    return dict(entries[env_id])


def constructor_arguments(entry: dict[str, Any]) -> tuple[dict[str, Any], int, bool]:
    """
    Turn a zoo YAML entry into what a script needs without rl_zoo3: the algorithm's keyword arguments, with
    ``lin_<x>`` strings as linear schedules from x to 0 and ``policy_kwargs`` evaluated, and the env settings.

    :param entry: A zoo YAML entry
    :return: (constructor keyword arguments, number of envs, whether to wrap the env in ``VecNormalize``)
    """
    keywords = {key: value for key, value in entry.items() if key not in ("n_timesteps", "policy", "n_envs", "normalize")}
    for key, value in keywords.items():
        if isinstance(value, str) and value.startswith("lin_"):
            keywords[key] = LinearSchedule(float(value[len("lin_") :]), 0.0, 1.0)
    if "policy_kwargs" in keywords:
        keywords["policy_kwargs"] = policy_kwargs_dict(keywords["policy_kwargs"])
    return keywords, int(entry.get("n_envs", 1)), bool(entry.get("normalize", False))


def policy_kwargs_dict(policy_kwargs: str | dict[str, Any] | None) -> dict[str, Any]:
    """
    :param policy_kwargs: ``policy_kwargs`` of a zoo entry: a Python expression such as ``"dict(log_std_init=-2)"``
        (evaluated with ``nn`` = ``torch.nn``, as rl_zoo3 does), a dict, or None
    :return: A new dict
    """
    if policy_kwargs is None:
        return {}
    if isinstance(policy_kwargs, str):
        return dict(eval(policy_kwargs, {"nn": nn, "dict": dict}))
    return dict(policy_kwargs)
