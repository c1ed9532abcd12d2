import math
from typing import Any, ClassVar, TypeVar

import torch as th
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.policies import ActorCriticCnnPolicy, ActorCriticPolicy, BasePolicy, MultiInputActorCriticPolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule, TensorDict

from sb3_ppo_variants.common.adaptive_beta import BETA_MAX, BETA_MIN, adapt_beta
from sb3_ppo_variants.common.buffers import _OldDistributionMixin
from sb3_ppo_variants.common.finite import NonFiniteError
from sb3_ppo_variants.common.kl import distribution_params, kl_divergence_from_params
from sb3_ppo_variants.common.objectives import kl_penalized_surrogate_loss
from sb3_ppo_variants.common.proximal import ProximalPolicyAlgorithm, RolloutSamples, check_number

SelfPPOPenalty = TypeVar("SelfPPOPenalty", bound="PPOPenalty")

# States per forward pass when the whole rollout goes through the policy (old parameters, mean KL)
_FULL_ROLLOUT_CHUNK_SIZE = 4096


def _chunk_observations(observations: th.Tensor | TensorDict, start: int, stop: int) -> th.Tensor | TensorDict:
    if isinstance(observations, dict):
        return {key: obs[start:stop] for key, obs in observations.items()}
    return observations[start:stop]


class PPOPenalty(ProximalPolicyAlgorithm):
    """
    Proximal Policy Optimization with the adaptive KL penalty objective (PPO-Penalty).

    Each minibatch maximizes ``E[r * A] - beta * KL[pi_old(.|s) || pi_new(.|s)]`` with the exact KL of
    the joint action distribution. After the epochs of every update, with ``d`` the mean KL over the whole
    rollout (computed with the final parameters), beta is halved if ``d < kl_target / kl_tolerance`` and
    doubled if ``d > kl_target * kl_tolerance`` (section 4 of the paper), and kept within
    ``[1e-4, 1e4]`` (see :mod:`sb3_ppo_variants.common.adaptive_beta` for why).

    It takes every argument of SB3's ``PPO`` with the same default and meaning (see
    :class:`~sb3_ppo_variants.common.proximal.ProximalPolicyAlgorithm`), except ``clip_range`` which
    defaults to ``None`` (no clipping); the parameters below are those that differ or are new.
    Loading a checkpoint of SB3's ``PPO`` keeps its ``clip_range`` (clipping on top of the penalty): pass
    ``custom_objects={"clip_range": None}`` for the pure penalty.

    Paper: https://arxiv.org/abs/1707.06347 (section 4, "Adaptive KL Penalty Coefficient")

    :param clip_range: ``None`` (default): the pure penalty objective. A float or schedule clips the
        surrogate as PPO-Clip does, in addition to the penalty.
    :param target_kl: SB3's per-minibatch early stopping (an epoch stops when the approximate KL of a
        minibatch exceeds ``1.5 * target_kl``). Unrelated to ``kl_target``; default ``None``.
    :param kl_target: The paper's ``d_targ``, the KL divergence per update that beta adapts towards.
        ``None`` keeps beta fixed (the paper's "fixed KL" setting).
    :param beta: Initial penalty coefficient (the paper's 1.0). ``beta=0.0, kl_target=None`` is the plain
        unclipped surrogate (the paper's "no clipping or penalty").
    :param beta_factor: Factor by which beta is multiplied or divided (the paper's 2)
    :param kl_tolerance: Beta changes only when the KL leaves ``[kl_target / kl_tolerance, kl_target * kl_tolerance]``
        (the paper's 1.5)
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": ActorCriticPolicy,
        "CnnPolicy": ActorCriticCnnPolicy,
        "MultiInputPolicy": MultiInputActorCriticPolicy,
    }

    def __init__(
        self,
        policy: str | type[ActorCriticPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 3e-4,
        n_steps: int = 2048,
        batch_size: int = 64,
        n_epochs: int = 10,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        clip_range: float | Schedule | None = None,
        clip_range_vf: float | Schedule | None = None,
        normalize_advantage: bool = True,
        ent_coef: float = 0.0,
        vf_coef: float = 0.5,
        max_grad_norm: float = 0.5,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        rollout_buffer_class: type[RolloutBuffer] | None = None,
        rollout_buffer_kwargs: dict[str, Any] | None = None,
        target_kl: float | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        *,
        kl_target: float | None = 0.01,
        beta: float = 1.0,
        beta_factor: float = 2.0,
        kl_tolerance: float = 1.5,
        fast_mode: bool = False,
        _init_setup_model: bool = True,
    ):
        self._check_penalty_arguments(kl_target, beta, beta_factor, kl_tolerance)
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            batch_size=batch_size,
            n_epochs=n_epochs,
            gamma=gamma,
            gae_lambda=gae_lambda,
            clip_range=clip_range,
            clip_range_vf=clip_range_vf,
            normalize_advantage=normalize_advantage,
            ent_coef=ent_coef,
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            rollout_buffer_class=rollout_buffer_class,
            rollout_buffer_kwargs=rollout_buffer_kwargs,
            target_kl=target_kl,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=False,
            fast_mode=fast_mode,
        )
        self.kl_target = kl_target
        self.beta = float(beta)
        self.beta_factor = beta_factor
        self.kl_tolerance = kl_tolerance

        if _init_setup_model:
            self._setup_model()

    @staticmethod
    def _check_penalty_arguments(kl_target: float | None, beta: float, beta_factor: float, kl_tolerance: float) -> None:
        check_number("beta", beta, minimum=0.0)
        check_number("beta_factor", beta_factor, minimum=1.0, include_minimum=False)
        check_number("kl_tolerance", kl_tolerance, minimum=1.0)
        if kl_target is not None:
            check_number("kl_target", kl_target, minimum=0.0, include_minimum=False)
            if not BETA_MIN <= beta <= BETA_MAX:
                raise ValueError(
                    f"beta must be in [{BETA_MIN}, {BETA_MAX}] when kl_target is set (the adaptive beta is kept in "
                    f"that range, and a beta of 0 could never grow), got {beta}"
                )

    def _setup_model(self) -> None:
        super()._setup_model()
        if not isinstance(self.rollout_buffer, _OldDistributionMixin):
            raise ValueError(
                "rollout_buffer_class must be a subclass of sb3_ppo_variants.common.buffers.ProximalRolloutBuffer or "
                f"ProximalDictRolloutBuffer (it stores the old action distributions), got {type(self.rollout_buffer).__name__}"
            )

    @th.no_grad()
    def _over_rollout(self, old_params: th.Tensor | None) -> th.Tensor:
        """
        One batched pass of the current policy over every state of the rollout.

        :param old_params: None to return the distribution parameters, else the old parameters to
            return the KL divergence from
        :return: Distribution parameters ``(n_transitions, n_params)`` or KL divergences ``(n_transitions,)``
        """
        self.policy.set_training_mode(False)
        observations = self.rollout_buffer.flat_observations()
        n_transitions = self.rollout_buffer.buffer_size * self.rollout_buffer.n_envs
        results = []
        for start in range(0, n_transitions, _FULL_ROLLOUT_CHUNK_SIZE):
            stop = start + _FULL_ROLLOUT_CHUNK_SIZE
            distribution = self.policy.get_distribution(_chunk_observations(observations, start, stop))
            if old_params is None:
                results.append(distribution_params(distribution))
            else:
                results.append(kl_divergence_from_params(old_params[start:stop], distribution))
        return th.cat(results)

    def _before_policy_update(self) -> None:
        if not self.rollout_buffer.full:
            raise RuntimeError("train() needs a full rollout buffer: collect a rollout first (learn() does)")
        # Once per rollout: the policy that collected it. A second train() on the same rollout keeps that reference.
        if self.rollout_buffer.old_distribution_params is None:
            self.rollout_buffer.set_old_distribution_params(self._over_rollout(old_params=None))

    def _policy_loss(
        self,
        ratio: th.Tensor,
        advantages: th.Tensor,
        distribution: Distribution,
        rollout_data: RolloutSamples,
        clip_range: float | None,
    ) -> th.Tensor:
        assert rollout_data.old_distribution_params is not None, "old distribution parameters are set before the epochs"
        kl_divergence = kl_divergence_from_params(rollout_data.old_distribution_params, distribution)
        return kl_penalized_surrogate_loss(ratio, advantages, kl_divergence, self.beta, clip_range)

    def _after_policy_update(self) -> None:
        old_params = self.rollout_buffer.old_distribution_params
        assert old_params is not None
        mean_kl = self._over_rollout(old_params).mean().item()
        if not math.isfinite(mean_kl):
            raise NonFiniteError(f"The mean KL divergence of the update is {mean_kl}; beta was not updated")
        if self.kl_target is not None:
            self.beta = adapt_beta(self.beta, mean_kl, self.kl_target, self.beta_factor, self.kl_tolerance)
        self.logger.record("train/kl", mean_kl)
        self.logger.record("train/beta", self.beta)

    def learn(
        self: SelfPPOPenalty,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "PPOPenalty",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfPPOPenalty:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
