# Installed as the package data ``sb3_ppo_variants.zoo_configs``: the zoo-format hyperparameter files
# (see ``sb3_ppo_variants.zoo.zoo_config_path``).
