"""
RL Baselines3 Zoo (rl_zoo3) and Optuna integration: ``ppo_clip`` and ``ppo_penalty`` as zoo algorithms, their
search spaces, fault-tolerant tuning at any scale, and the ``sb3-ppo-variants`` command line.

Needs the ``zoo`` extra: ``pip install "sb3-ppo-variants[zoo]"``.
"""

from sb3_ppo_variants.zoo.registration import (
    ZOO_ALGOS,
    constructor_arguments,
    register_algorithms,
    zoo_config_path,
    zoo_hyperparameters,
)

__all__ = ["ZOO_ALGOS", "constructor_arguments", "register_algorithms", "zoo_config_path", "zoo_hyperparameters"]
