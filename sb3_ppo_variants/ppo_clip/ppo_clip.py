import torch as th
from stable_baselines3.common.distributions import Distribution

from sb3_ppo_variants.common.objectives import PolicyLoss, clipped_surrogate_loss
from sb3_ppo_variants.common.proximal import ProximalPolicyAlgorithm, RolloutSamples, UpdateScalars


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

    _clip_range_required = True

    def _policy_objective(
        self,
        ratio: th.Tensor,
        advantages: th.Tensor,
        distribution: Distribution | None,
        rollout_data: RolloutSamples,
        scalars: UpdateScalars,
    ) -> PolicyLoss:
        return PolicyLoss(clipped_surrogate_loss(ratio, advantages, scalars["clip_range"]), {})
