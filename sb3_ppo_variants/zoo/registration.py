"""Registration of the algorithms, samplers and converters into rl_zoo3's tables."""

from importlib import resources
from pathlib import Path

from stable_baselines3.common.base_class import BaseAlgorithm

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
