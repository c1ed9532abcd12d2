import math
import operator
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.preprocessing import get_flattened_obs_dim
from stable_baselines3.common.type_aliases import GymEnv, PyTorchObs, Schedule
from stable_baselines3.common.vec_env import VecEnv

from sb3_ppo_variants.common.adaptive_beta import adapt_beta
from sb3_ppo_variants.common.buffers import ProximalDictRolloutBuffer, ProximalRolloutBuffer, map_observations
from sb3_ppo_variants.common.checks import check_arguments
from sb3_ppo_variants.common.evaluation import training_mode
from sb3_ppo_variants.common.finite import NonFiniteError
from sb3_ppo_variants.common.kl import distribution_params, kl_divergence_between_params, kl_divergence_from_params
from sb3_ppo_variants.common.objectives import PolicyLoss, kl_penalized_surrogate_loss
from sb3_ppo_variants.common.proximal import ProximalPolicyAlgorithm, RolloutSamples, UpdateScalars

# Observation bytes (as float32, the policy's input) per forward pass when the whole rollout goes through the policy
# (old distribution, mean KL): a pass's activations grow with its input, so this keeps them small next to a training
# step's memory whatever the network (64 images of 84x84: a pass of 256 raised the peak memory of a CnnPolicy run by
# about 30 MiB), while small observations still go in few passes
FULL_ROLLOUT_PASS_BYTES = 2 * 2**20


def states_per_pass(observation_space: spaces.Space, n_transitions: int) -> int:
    """
    :param observation_space: The observation space (images, vectors or a Dict of them)
    :param n_transitions: The rollout's size: a pass never takes more
    :return: States per forward pass over the whole rollout: the largest power of two whose observations fit in
        ``FULL_ROLLOUT_PASS_BYTES`` (at least 1). A power of two divides the usual rollout sizes evenly: passes of one
        size (compiled in fast mode, each size of pass is one compilation)
    """
    bytes_per_state = 4 * int(get_flattened_obs_dim(observation_space))
    fitting = max(1, FULL_ROLLOUT_PASS_BYTES // bytes_per_state)
    return min(n_transitions, 1 << (fitting.bit_length() - 1))


class PPOPenalty(ProximalPolicyAlgorithm):
    """
    Proximal Policy Optimization with the adaptive KL penalty objective (PPO-Penalty).

    Each minibatch maximizes ``E[r * A] - beta * KL[pi_old(.|s) || pi_new(.|s)]`` with the exact KL of
    the joint action distribution, where ``pi_old`` is the policy that collected the rollout (its distribution
    parameters are computed in one batched pass once the rollout is collected). After the epochs of every update,
    with ``d`` the mean KL over the whole rollout (computed with the final parameters), beta is halved if
    ``d < kl_target / kl_tolerance`` and doubled if ``d > kl_target * kl_tolerance`` (section 4 of the paper), and
    kept within ``[1e-4, 1e4]`` (see :mod:`sb3_ppo_variants.common.adaptive_beta` for why).

    It takes every argument of SB3's ``PPO`` with the same default and meaning, except ``clip_range``, which
    defaults to ``None`` (no clipping). Loading a checkpoint of SB3's ``PPO`` keeps its ``clip_range`` (clipping on
    top of the penalty): pass ``custom_objects={"clip_range": None}`` for the pure penalty.

    Logs, next to SB3's PPO keys: ``train/kl`` (d), ``train/beta`` (after the update), ``train/surrogate_loss`` and
    ``train/kl_penalty`` (``beta * KL``, averaged over minibatches; ``train/policy_gradient_loss`` is their sum).
    Without clipping, ``train/clip_fraction`` is the fraction of ratios outside ``[0.8, 1.2]``, a diagnostic.

    Paper: https://arxiv.org/abs/1707.06347 (section 4, "Adaptive KL Penalty Coefficient")

    :param policy: The policy model to use (MlpPolicy, CnnPolicy, ...)
    :param env: The environment to learn from (if registered in Gym, can be str)
    :param learning_rate: The learning rate, it can be a function of the current progress remaining (from 1 to 0)
    :param n_steps: The number of steps to run for each environment per update
        (i.e. rollout buffer size is n_steps * n_envs where n_envs is number of environment copies running in parallel)
    :param batch_size: Minibatch size
    :param n_epochs: Number of epochs when optimizing the surrogate loss
    :param gamma: Discount factor
    :param gae_lambda: Factor for trade-off of bias vs variance for Generalized Advantage Estimator
    :param clip_range: ``None`` (default): the pure penalty objective. A float (> 0) or schedule clips the
        surrogate as PPO-Clip does, in addition to the penalty (the paper's "in addition to" variant).
    :param clip_range_vf: Clipping parameter for the value function (> 0), it can be a function of the current
        progress remaining (from 1 to 0). ``None`` (default) means no clipping of the value function.
        IMPORTANT: this clipping depends on the reward scaling.
    :param normalize_advantage: Whether to normalize or not the advantage
    :param ent_coef: Entropy coefficient for the loss calculation
    :param vf_coef: Value function coefficient for the loss calculation
    :param max_grad_norm: The maximum value for the gradient clipping
    :param use_sde: Whether to use generalized State Dependent Exploration (gSDE)
        instead of action noise exploration (default: False)
    :param sde_sample_freq: Sample a new noise matrix every n steps when using gSDE
        Default: -1 (only sample at the beginning of the rollout)
    :param rollout_buffer_class: Rollout buffer class to use: ``None`` (SB3's ``RolloutBuffer`` or
        ``DictRolloutBuffer``, built as ``ProximalRolloutBuffer`` or ``ProximalDictRolloutBuffer``), or a subclass of
        those two (the buffer stores the old distribution parameters).
    :param rollout_buffer_kwargs: Keyword arguments to pass to the rollout buffer on creation
    :param target_kl: SB3's early stopping, unrelated to ``kl_target``: an epoch stops at the first minibatch whose
        approximate KL exceeds ``1.5 * target_kl``. Default ``None`` (it warns when set, as it is easily mistaken for
        ``kl_target``).
    :param stats_window_size: Window size for the rollout logging, specifying the number of episodes to average
        the reported success rate, mean episode length, and mean reward over
    :param tensorboard_log: the log location for tensorboard (if None, no logging)
    :param policy_kwargs: additional arguments to be passed to the policy on creation
    :param verbose: Verbosity level: 0 for no output, 1 for info messages (such as device or wrappers used), 2 for
        debug messages
    :param seed: Seed for the pseudo random generators
    :param device: Device (cpu, cuda, ...) on which the code should be run.
        Setting it to auto, the code will be run on the GPU if possible.
    :param kl_target: The paper's ``d_targ``, the KL divergence per update that beta adapts towards (> 0).
        ``None`` keeps beta fixed (the paper's "fixed KL" setting).
    :param beta: Initial penalty coefficient (the paper's 1.0; in [1e-4, 1e4] when ``kl_target`` is set).
        ``beta=0.0, kl_target=None`` is the plain unclipped surrogate (the paper's "no clipping or penalty").
    :param beta_factor: Factor (> 1) by which beta is multiplied or divided (the paper's 2)
    :param kl_tolerance: Beta changes only when the KL leaves ``[kl_target / kl_tolerance, kl_target * kl_tolerance]``
        (>= 1; the paper's 1.5)
    :param fast_mode: Opt-in speed at the price of bit-for-bit reproducibility: the gradient step, the rollout's policy
        forward and the passes over the whole rollout run compiled (beta enters as a tensor: it changes without
        recompiling), with the same hyperparameters (see :class:`~sb3_ppo_variants.common.proximal.ProximalPolicyAlgorithm`).
        Beta is still adapted once per update on the exact mean KL. Not saved with the model. Default: False.
    :param _init_setup_model: Whether or not to build the network at the creation of the instance
    """

    _needs_distributions = True

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
        check_arguments(locals())
        if target_kl is not None:
            warnings.warn(
                f"target_kl={target_kl} is SB3's early stop (an epoch stops at the first minibatch whose approximate KL "
                f"exceeds 1.5 * target_kl), not the penalty's target: that is kl_target (now {kl_target}). "
                "Pass target_kl=None unless you want both.",
                UserWarning,
            )
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

    def _rollout_chunks(self, buffer: ProximalRolloutBuffer | ProximalDictRolloutBuffer) -> Iterator[PyTorchObs]:
        """:return: The rollout's observations (flattened over envs) in consecutive chunks"""
        observations = buffer.flat_observations()
        n_transitions = buffer.buffer_size * buffer.n_envs
        chunk_size = states_per_pass(self.observation_space, n_transitions)
        for start in range(0, n_transitions, chunk_size):
            yield map_observations(operator.itemgetter(slice(start, start + chunk_size)), observations)

    def _distribution_params_on(self, observations: PyTorchObs) -> th.Tensor:
        """:return: The current policy's distribution parameters on ``observations``"""
        return distribution_params(self.policy.get_distribution(observations))

    def _rollout_distribution_params(self, buffer: ProximalRolloutBuffer | ProximalDictRolloutBuffer) -> th.Tensor:
        """
        One pass over the whole rollout, without gradients, in evaluation mode; in fast mode, compiled (one function for
        both uses: the old parameters at collection and the current ones after the update).

        :return: The current policy's distribution parameters on every state of the rollout
        """
        fast_path = self._fast_path_of_update()
        chunk_pass: AbstractContextManager[Callable[[PyTorchObs], th.Tensor]] = (
            nullcontext(self._distribution_params_on)
            if fast_path is None
            else fast_path.compiled_within("the distribution parameters of the rollout", self._distribution_params_on)
        )
        with th.no_grad(), training_mode(self.policy, False), chunk_pass as params_on:
            return th.cat([params_on(observations) for observations in self._rollout_chunks(buffer)])

    def _rollout_kl_divergences(self, old_params: th.Tensor) -> th.Tensor:
        """
        :param old_params: The old distribution parameters of every state of the rollout
        :return: The exact KL[old || current] on every state of the rollout (evaluation mode)
        """
        new_params = self._rollout_distribution_params(self.rollout_buffer)
        return kl_divergence_between_params(old_params, new_params, self.policy.action_dist)

    def collect_rollouts(
        self, env: VecEnv, callback: BaseCallback, rollout_buffer: RolloutBuffer, n_rollout_steps: int
    ) -> bool:
        complete = super().collect_rollouts(env, callback, rollout_buffer, n_rollout_steps)
        if complete:
            assert isinstance(rollout_buffer, ProximalRolloutBuffer | ProximalDictRolloutBuffer), "see _setup_model"
            # The policy that collected the rollout, once per rollout: the reference of the KL in train()
            rollout_buffer.set_old_distribution_params(self._rollout_distribution_params(rollout_buffer))
        return complete

    def _policy_objective(
        self,
        ratio: th.Tensor,
        advantages: th.Tensor,
        distribution: Distribution | None,
        rollout_data: RolloutSamples,
        scalars: UpdateScalars,
    ) -> PolicyLoss:
        if rollout_data.old_distribution_params is None:
            raise RuntimeError("train() needs a rollout collected by collect_rollouts() (learn() does)")
        assert distribution is not None, "_needs_distributions is set"
        kl_divergence = kl_divergence_from_params(rollout_data.old_distribution_params, distribution)
        return kl_penalized_surrogate_loss(ratio, advantages, kl_divergence, scalars["beta"], scalars["clip_range"])

    def _update_scalars(self) -> UpdateScalars:
        # beta as a coefficient of the update: constant within it, a tensor in fast mode
        return {**super()._update_scalars(), "beta": self.beta}

    def _after_policy_update(self) -> None:
        old_params = self.rollout_buffer.old_distribution_params
        assert old_params is not None, "checked by the objective"
        mean_kl = self._rollout_kl_divergences(old_params).mean().item()
        if not math.isfinite(mean_kl):
            raise NonFiniteError(
                f"The mean KL divergence of the update is {mean_kl}; the update was undone and beta was not updated"
            )
        if self.kl_target is not None:
            self.beta = adapt_beta(self.beta, mean_kl, self.kl_target, self.beta_factor, self.kl_tolerance)
        self.logger.record("train/kl", mean_kl)
        self.logger.record("train/beta", self.beta)
