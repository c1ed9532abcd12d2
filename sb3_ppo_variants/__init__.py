import os

from sb3_ppo_variants.common.checks import InvalidArgumentError
from sb3_ppo_variants.common.finite import NonFiniteError
from sb3_ppo_variants.ppo_clip import PPOClip
from sb3_ppo_variants.ppo_penalty import PPOPenalty

# Read version from file
version_file = os.path.join(os.path.dirname(__file__), "version.txt")
with open(version_file) as file_handler:
    __version__ = file_handler.read().strip()

__all__ = ["InvalidArgumentError", "NonFiniteError", "PPOClip", "PPOPenalty", "__version__"]
