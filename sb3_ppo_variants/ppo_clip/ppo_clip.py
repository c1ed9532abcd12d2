from typing import ClassVar, TypeVar

import torch as th
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.policies import ActorCriticCnnPolicy, ActorCriticPolicy, BasePolicy, MultiInputActorCriticPolicy
from stable_baselines3.common.type_aliases import MaybeCallback

from sb3_ppo_variants.common.objectives import clipped_surrogate_loss
from sb3_ppo_variants.common.proximal import ProximalPolicyAlgorithm, RolloutSamples

SelfPPOClip = TypeVar("SelfPPOClip", bound="PPOClip")


class PPOClip(ProximalPolicyAlgorithm):
    """
    Proximal Policy Optimization with the clipped surrogate objective (PPO-Clip).

    A drop-in replacement for SB3's ``PPO``: it takes the same arguments with the same defaults and
    meanings (see :class:`~sb3_ppo_variants.common.proximal.ProximalPolicyAlgorithm` for each of them),
    and on CPU a run with the same seed and hyperparameters ends with exactly the parameters of SB3's ``PPO``.
    ``clip_range`` (default 0.2) must be a float > 0 or a schedule.

    Paper: https://arxiv.org/abs/1707.06347
    Code: the training step follows Stable-Baselines3's PPO (https://github.com/DLR-RM/stable-baselines3)
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": ActorCriticPolicy,
        "CnnPolicy": ActorCriticCnnPolicy,
        "MultiInputPolicy": MultiInputActorCriticPolicy,
    }
    _clip_range_required = True

    def _policy_loss(
        self,
        ratio: th.Tensor,
        advantages: th.Tensor,
        distribution: Distribution,
        rollout_data: RolloutSamples,
        clip_range: float | None,
    ) -> th.Tensor:
        assert clip_range is not None
        return clipped_surrogate_loss(ratio, advantages, clip_range)

    def learn(
        self: SelfPPOClip,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "PPOClip",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfPPOClip:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
