"""
The training loop shared by PPO-Clip and PPO-Penalty.

Both are the same algorithm with a different policy objective, so this class owns everything else: the rollout
buffer, the epochs x minibatches loop, the value and entropy terms, gradient clipping, SB3's ``target_kl`` early
stop and the logs. A variant implements :meth:`ProximalPolicyAlgorithm._policy_objective` and, if it needs it,
:meth:`ProximalPolicyAlgorithm._after_policy_update`. Argument checks, the optimizer's implementation, the non-finite
rollback and the policy evaluation each live in their own module of ``sb3_ppo_variants.common``.

With the clipped objective, every float operation and every draw from the random number generators is the
one of SB3's ``PPO.train()``, so on CPU a seeded run ends with exactly SB3's parameters.
"""

import functools
import math
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from io import BufferedIOBase
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback, ConvertCallback
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import ActorCriticCnnPolicy, ActorCriticPolicy, BasePolicy, MultiInputActorCriticPolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import ConstantSchedule, FloatSchedule, explained_variance
from stable_baselines3.common.vec_env import VecEnv
from torch.nn import functional as F

from sb3_ppo_variants.common.buffers import (
    ProximalDictRolloutBuffer,
    ProximalDictRolloutBufferSamples,
    ProximalRolloutBuffer,
    ProximalRolloutBufferSamples,
    rollout_buffer_classes,
)
from sb3_ppo_variants.common.checks import InvalidArgumentError, check_arguments, check_rollout_size, check_schedule_value
from sb3_ppo_variants.common.evaluation import PolicyEvaluation, evaluate_actions
from sb3_ppo_variants.common.fast import CompilationFailedError, FastPath
from sb3_ppo_variants.common.finite import NonFiniteRolloutGuard, UpdateRollback
from sb3_ppo_variants.common.objectives import PolicyLoss, clip_fraction
from sb3_ppo_variants.common.optim import portable_optimizer_state, requested_implementation, select_implementation

# For the train/clip_fraction diagnostic of objectives without clipping: SB3's default clip range
DIAGNOSTIC_CLIP_RANGE = 0.2

# The scalars of a gradient step checked to be finite, in this order
_UPDATE_TERMS = ("policy_loss", "value_loss", "entropy_loss", "gradient_norm")

SelfProximalPolicyAlgorithm = TypeVar("SelfProximalPolicyAlgorithm", bound="ProximalPolicyAlgorithm")
RolloutSamples = ProximalRolloutBufferSamples | ProximalDictRolloutBufferSamples
# The coefficients of an update that its gradient steps read, by name (clip_range, clip_range_vf, a variant's own):
# floats, None where unused, or 0-d tensors in fast mode
UpdateScalars = dict[str, Any]


class StepStatistics(NamedTuple):
    """What one gradient step computed: 0-d tensors, detached except ``loss`` before the optimizer step."""

    loss: th.Tensor
    policy_loss: th.Tensor
    value_loss: th.Tensor
    entropy_loss: th.Tensor
    clip_fraction: th.Tensor
    # None where the step did not compute it
    approx_kl: th.Tensor | None
    # The objective's named terms (logged as train/<name>)
    terms: dict[str, th.Tensor]
    # None before the optimizer step, and for a minibatch that stopped the epoch early
    gradient_norm: th.Tensor | None


class UpdateStatistics(NamedTuple):
    """What one update computed: every step's statistics, the last epoch's approximate KLs, the epochs run."""

    steps: list[StepStatistics]
    approx_kl_divs: list[th.Tensor]
    epochs: int


def _to_floats(scalars: list[th.Tensor]) -> list[float]:
    """:return: The values of 0-d tensors as Python floats, with one host transfer for all of them"""
    return th.stack(scalars).tolist()


def _random_states() -> tuple[Any, th.Tensor, list[th.Tensor]]:
    """:return: The states of NumPy's, torch's and (if any) CUDA's global random number generators"""
    return np.random.get_state(), th.random.get_rng_state(), th.cuda.get_rng_state_all() if th.cuda.is_available() else []


def _restore_random_states(states: tuple[Any, th.Tensor, list[th.Tensor]]) -> None:
    """:param states: From :func:`_random_states`"""
    numpy_state, torch_state, cuda_states = states
    np.random.set_state(numpy_state)
    th.random.set_rng_state(torch_state)
    if cuda_states:
        th.cuda.set_rng_state_all(cuda_states)


def _is_infinite_constant(value: Any) -> bool:
    """:return: Whether ``value`` is +inf, or SB3's constant schedule of +inf (possibly wrapped in a FloatSchedule)"""
    if isinstance(value, FloatSchedule):
        value = value.value_schedule
    if isinstance(value, ConstantSchedule):
        value = value.val
    return isinstance(value, (float, int)) and math.isinf(value) and value > 0


def _forget_last_distribution(policy: BasePolicy) -> None:
    """
    Drop the distribution that SB3's policies keep from their last forward pass (``policy.action_dist.distribution``,
    absent as after the policy's construction). Kept, its tensors would outlive the gradient step with their graph:
    compiled, dynamo then cannot trace the backward pass into the graph of the forward pass. No value changes.

    :param policy: The policy
    """
    action_dist = getattr(policy, "action_dist", None)
    if isinstance(action_dist, Distribution) and hasattr(action_dist, "distribution"):
        del action_dist.distribution


@contextmanager
def distribution_validation(enabled: bool) -> Iterator[None]:
    """
    Turn ``torch.distributions`` argument validation on or off (a process-wide default) within the block.

    :param enabled: Whether distributions validate their arguments inside the block
    """
    previous = th.distributions.Distribution._validate_args
    th.distributions.Distribution.set_default_validate_args(enabled)
    try:
        yield
    finally:
        th.distributions.Distribution.set_default_validate_args(previous)


class ProximalPolicyAlgorithm(OnPolicyAlgorithm):
    """
    Base class of the proximal policy optimization variants (the shared training loop).

    :param policy: The policy model to use (MlpPolicy, CnnPolicy, ...)
    :param env: The environment to learn from (if registered in Gym, can be str)
    :param learning_rate: The learning rate, it can be a function of the current progress remaining (from 1 to 0)
    :param n_steps: The number of steps to run for each environment per update
        (i.e. rollout buffer size is n_steps * n_envs where n_envs is number of environment copies running in parallel)
    :param batch_size: Minibatch size
    :param n_epochs: Number of epochs when optimizing the surrogate loss
    :param gamma: Discount factor
    :param gae_lambda: Factor for trade-off of bias vs variance for Generalized Advantage Estimator
    :param clip_range: Clipping parameter of the policy ratio (> 0), it can be a function of the current progress
        remaining (from 1 to 0). ``None`` means no clipping.
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
    :param rollout_buffer_class: Rollout buffer class to use. If ``None``, SB3's ``RolloutBuffer`` or
        ``DictRolloutBuffer`` (by the observation space), as SB3's PPO. These two are built as their subclasses
        ``ProximalRolloutBuffer`` and ``ProximalDictRolloutBuffer`` (same samples, served from device tensors); the
        attribute, and checkpoints, keep naming SB3's class.
    :param rollout_buffer_kwargs: Keyword arguments to pass to the rollout buffer on creation
    :param target_kl: Early stopping (SB3's meaning): an epoch stops at the first minibatch whose approximate
        KL divergence exceeds ``1.5 * target_kl``. By default, there is no limit on the kl div.
    :param stats_window_size: Window size for the rollout logging, specifying the number of episodes to average
        the reported success rate, mean episode length, and mean reward over
    :param tensorboard_log: the log location for tensorboard (if None, no logging)
    :param policy_kwargs: additional arguments to be passed to the policy on creation
    :param verbose: Verbosity level: 0 for no output, 1 for info messages (such as device or wrappers used), 2 for
        debug messages
    :param seed: Seed for the pseudo random generators
    :param device: Device (cpu, cuda, ...) on which the code should be run.
        Setting it to auto, the code will be run on the GPU if possible.
    :param fast_mode: Opt-in speed at the price of bit-for-bit equality with SB3's PPO: the gradient step (forward
        pass, objective, backward pass, gradient clipping) and the rollout's policy forward run compiled with
        ``torch.compile`` (on CUDA, as CUDA graphs), and the optimizer runs its fused implementation, with the same
        hyperparameters (Adam's ``eps`` included); the clip ranges and beta enter as tensors, so nothing recompiles
        from one update to the next. Compiling takes seconds to a minute at the first update, so it pays off from a
        budget that ``python -m benchmarks.speed`` measures (the break-even budget). Where compilation is unavailable
        or fails, one warning names the reason and the optimizer's fused implementation runs eagerly. Learning is unchanged in
        distribution (tested on the same thresholds as the default mode), results are not bit-identical to SB3's.
        An ``optimizer_kwargs`` choice of ``fused``, ``foreach`` or ``capturable`` in ``policy_kwargs`` wins. It is
        not saved with the model: pass ``fast_mode=True`` to ``load()`` as well. See
        :mod:`sb3_ppo_variants.common.fast`. Default: False.
    :param _init_setup_model: Whether or not to build the network at the creation of the instance
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": ActorCriticPolicy,
        "CnnPolicy": ActorCriticCnnPolicy,
        "MultiInputPolicy": MultiInputActorCriticPolicy,
    }
    # Whether the objective clips (PPOClip: clip_range may not be None)
    _clip_range_required: ClassVar[bool] = False
    # Whether the objective needs the old and the current action distributions (PPOPenalty's KL)
    _needs_distributions: ClassVar[bool] = False
    rollout_buffer: ProximalRolloutBuffer | ProximalDictRolloutBuffer  # type: ignore[assignment]
    policy: ActorCriticPolicy
    clip_range: Schedule | None  # type: ignore[assignment]
    clip_range_vf: Schedule | None  # type: ignore[assignment]

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
        clip_range: float | Schedule | None = 0.2,
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
        _init_setup_model: bool = True,
        *,
        fast_mode: bool = False,
    ):
        check_arguments(locals())
        self._check_clip_range_given(clip_range)
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            gamma=gamma,
            gae_lambda=gae_lambda,
            ent_coef=ent_coef,
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            rollout_buffer_class=rollout_buffer_class,
            rollout_buffer_kwargs=rollout_buffer_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            device=device,
            seed=seed,
            _init_setup_model=False,
            supported_action_spaces=(
                spaces.Box,
                spaces.Discrete,
                spaces.MultiDiscrete,
                spaces.MultiBinary,
            ),
        )
        if self.env is not None:
            check_rollout_size(self.n_steps, self.env.num_envs, batch_size, normalize_advantage)
        self.batch_size = batch_size
        self.n_epochs = n_epochs
        self.clip_range = clip_range  # type: ignore[assignment]
        self.clip_range_vf = clip_range_vf  # type: ignore[assignment]
        self.normalize_advantage = normalize_advantage
        self.target_kl = target_kl
        self.fast_mode = fast_mode
        # The compiled functions of fast mode (built at the first update; never saved)
        self._fast_path: FastPath | None = None

        if _init_setup_model:
            self._setup_model()

    def _check_clip_range_given(self, clip_range: float | Schedule | None) -> None:
        if clip_range is None and self._clip_range_required:
            raise InvalidArgumentError(f"clip_range must be a float > 0 or a schedule for {type(self).__name__}, got None")

    def _setup_model(self) -> None:
        # SB3 builds the buffer from self.rollout_buffer_class: build the proximal class, keep SB3's name
        named_class, built_class = rollout_buffer_classes(
            self.rollout_buffer_class, self.observation_space, old_distributions=self._needs_distributions
        )
        self.rollout_buffer_class = built_class
        try:
            super()._setup_model()
        finally:
            self.rollout_buffer_class = named_class
        # A checkpoint stores "no clipping" as an infinite clip range, which SB3's PPO can read (see save()); SB3's PPO
        # saves it back as a constant schedule
        if _is_infinite_constant(self.clip_range):
            self.clip_range = None
        self._check_clip_range_given(self.clip_range)
        if self.clip_range is not None:
            self.clip_range = FloatSchedule(self.clip_range)
        if self.clip_range_vf is not None:
            self.clip_range_vf = FloatSchedule(self.clip_range_vf)

    def _maybe_recommend_cpu(self, mlp_class_name: str = "ActorCriticPolicy") -> None:
        # SB3's warning, in SB3's words: code and warning filters written for SB3 match "You are trying to run PPO on
        # the GPU" (SB3 names the class, which would be PPOClip or PPOPenalty here)
        policy_class_name = self.policy_class.__name__
        if self.device != th.device("cpu") and policy_class_name == mlp_class_name:
            warnings.warn(
                "You are trying to run PPO on the GPU, "
                "but it is primarily intended to run on the CPU when not using a CNN policy "
                f"(you are using {policy_class_name} which should be a MlpPolicy). "
                "See https://github.com/DLR-RM/stable-baselines3/issues/1245 "
                "for more info. "
                "You can pass `device='cpu'` or `export CUDA_VISIBLE_DEVICES=` to force using the CPU."
                "Note: The model will train, but the GPU utilization will be poor and "
                "the training might take longer than on CPU.",
                UserWarning,
            )

    def collect_rollouts(
        self, env: VecEnv, callback: BaseCallback, rollout_buffer: RolloutBuffer, n_rollout_steps: int
    ) -> bool:
        fast_path = self._fast_path_of_update()
        if fast_path is None:
            return super().collect_rollouts(env, callback, rollout_buffer, n_rollout_steps)
        # SB3's collection, its policy(obs) calls compiled
        with fast_path.compiled_forward(self.policy):
            return super().collect_rollouts(env, callback, rollout_buffer, n_rollout_steps)

    def _init_callback(self, callback: MaybeCallback, progress_bar: bool = False) -> BaseCallback:
        # The guard comes first, so that no user callback sees a non-finite observation either
        callbacks: list[BaseCallback] = [NonFiniteRolloutGuard()]
        if isinstance(callback, list):
            callbacks.extend(callback)
        elif isinstance(callback, BaseCallback):
            callbacks.append(callback)
        elif callback is not None:
            callbacks.append(ConvertCallback(callback))
        return super()._init_callback(callbacks, progress_bar)

    def _evaluate_actions(self, rollout_data: RolloutSamples) -> PolicyEvaluation:
        """
        The current policy on a minibatch: values, log-probabilities, entropy and the action distribution.

        :param rollout_data: The minibatch
        :return: The evaluation (the distribution is None if the objective does not need it and the policy has its
            own ``evaluate_actions``)
        """
        actions = rollout_data.actions
        if isinstance(self.action_space, spaces.Discrete):
            # Convert discrete action from float to long
            actions = rollout_data.actions.long().flatten()
        return evaluate_actions(self.policy, rollout_data.observations, actions, with_distribution=self._needs_distributions)

    def _policy_objective(
        self,
        ratio: th.Tensor,
        advantages: th.Tensor,
        distribution: Distribution | None,
        rollout_data: RolloutSamples,
        scalars: UpdateScalars,
    ) -> PolicyLoss:
        """
        The variant's policy objective, as a loss to minimize over one minibatch.

        :param ratio: Probability ratios pi_new(a|s) / pi_old(a|s) of the minibatch
        :param advantages: Advantages of the minibatch (normalized if ``normalize_advantage``)
        :param distribution: The current policy's action distribution on the minibatch's observations (set when
            ``_needs_distributions``)
        :param rollout_data: The minibatch
        :param scalars: This update's coefficients, from :meth:`_update_scalars` (``clip_range`` is None when the
            variant does not clip); floats, or 0-d tensors in fast mode
        :return: The loss and its named terms (logged as ``train/<name>``)
        """
        raise NotImplementedError

    def _after_policy_update(self) -> None:
        """Called in ``train()`` after the last epoch (or early stop), with the final parameters."""

    def _current_value(self, name: str, schedule: Schedule | None) -> float | None:
        """
        :param name: The schedule's parameter name (for the error message)
        :param schedule: The schedule, or None
        :return: Its value at the current progress, checked (see :func:`~sb3_ppo_variants.common.checks.check_schedule_value`)
        """
        if schedule is None:
            return None
        return check_schedule_value(name, schedule(self._current_progress_remaining), self._current_progress_remaining)

    def _update_scalars(self) -> UpdateScalars:
        """:return: The coefficients of this update that the gradient steps read (a variant adds its own)"""
        return {
            "clip_range": self._current_value("clip_range", self.clip_range),
            "clip_range_vf": self._current_value("clip_range_vf", self.clip_range_vf),
        }

    def _minibatch_loss(self, rollout_data: RolloutSamples, scalars: UpdateScalars, with_kl: bool) -> StepStatistics:
        """
        :param rollout_data: The minibatch
        :param scalars: This update's coefficients
        :param with_kl: Whether to compute the approximate KL (for early stopping and the logs)
        :return: The loss of the minibatch (with its graph) and its statistics (detached); no gradient norm yet
        """
        clip_range, clip_range_vf = scalars["clip_range"], scalars["clip_range_vf"]
        evaluation = self._evaluate_actions(rollout_data)
        values = evaluation.values.flatten()
        log_prob, entropy = evaluation.log_prob, evaluation.entropy
        # Normalize advantage
        advantages = rollout_data.advantages
        # Normalization does not make sense if mini batchsize == 1, see GH issue #325
        if self.normalize_advantage and len(advantages) > 1:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

        # ratio between old and new policy, should be one at the first iteration
        ratio = th.exp(log_prob - rollout_data.old_log_prob)
        objective = self._policy_objective(ratio, advantages, evaluation.distribution, rollout_data, scalars)
        policy_loss = objective.loss
        # Without clipping, the fraction outside SB3's default range is logged as a diagnostic of the step size
        fraction = clip_fraction(ratio, DIAGNOSTIC_CLIP_RANGE if clip_range is None else clip_range)

        value_loss = self._value_loss(values, rollout_data, clip_range_vf)

        # Entropy loss favors exploration; approximate it by -log_prob when there is no analytical form
        entropy_loss = -th.mean(-log_prob) if entropy is None else -th.mean(entropy)

        loss = policy_loss + self.ent_coef * entropy_loss + self.vf_coef * value_loss

        # Approximate KL[pi_old || pi_new] for early stopping, see SB3 issue #417 and
        # http://joschu.net/blog/kl-approx.html
        approx_kl_div = None
        if with_kl:
            with th.no_grad():
                log_ratio = log_prob - rollout_data.old_log_prob
                approx_kl_div = th.mean((th.exp(log_ratio) - 1) - log_ratio)
        return StepStatistics(
            loss=loss,
            policy_loss=policy_loss.detach(),
            value_loss=value_loss.detach(),
            entropy_loss=entropy_loss.detach(),
            clip_fraction=fraction,
            approx_kl=approx_kl_div,
            terms={name: term.detach() for name, term in objective.terms.items()},
            gradient_norm=None,
        )

    def _clip_gradients(self) -> th.Tensor:
        """:return: The norm of the gradient, before clipping"""
        # Compiled (fast mode), one norm per parameter: inductor fuses them into its kernels, while the multi-tensor
        # norm is an opaque call (a loop over the parameters on the CPU); eagerly, SB3's call
        foreach = False if th.compiler.is_compiling() else None
        return th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm, foreach=foreach)

    def _optimizer_step(self, loss: th.Tensor) -> th.Tensor:
        """
        :param loss: A minibatch's loss
        :return: The norm of the gradient, before clipping
        """
        self.policy.optimizer.zero_grad()
        loss.backward()
        gradient_norm = self._clip_gradients()
        self.policy.optimizer.step()
        return gradient_norm

    def _gradient_step(self, rollout_data: RolloutSamples, scalars: UpdateScalars, with_kl: bool) -> StepStatistics:
        """
        One whole gradient step on a minibatch: the gradients reset, :meth:`_loss_backward_and_clip`, the optimizer step.

        The same values as :meth:`_minibatch_loss` then :meth:`_optimizer_step` (SB3's ``PPO.train()`` resets the
        gradients after the forward pass, which changes no value).

        :param rollout_data: The minibatch
        :param scalars: This update's coefficients
        :param with_kl: Whether to compute the approximate KL
        :return: The statistics of the step, the loss detached
        """
        return self._reset_step_and_optimize(self._loss_backward_and_clip, rollout_data, scalars, with_kl)

    def _reset_step_and_optimize(
        self,
        loss_backward_and_clip: Callable[[RolloutSamples, UpdateScalars, bool], StepStatistics],
        rollout_data: RolloutSamples,
        scalars: UpdateScalars,
        with_kl: bool,
    ) -> StepStatistics:
        """
        :param loss_backward_and_clip: :meth:`_loss_backward_and_clip`, or its compiled version
        :return: The statistics of the step, after the gradients' reset, ``loss_backward_and_clip`` and the optimizer step
        """
        self.policy.optimizer.zero_grad()
        step = loss_backward_and_clip(rollout_data, scalars, with_kl)
        self.policy.optimizer.step()
        return step

    def _loss_backward_and_clip(self, rollout_data: RolloutSamples, scalars: UpdateScalars, with_kl: bool) -> StepStatistics:
        """
        The gradient step between the gradients' reset and the optimizer step (what fast mode compiles as one graph):
        forward pass, loss, backward pass, gradient clipping. ``backward()`` is called here, not in a function called
        from here: with ``trace_autograd_ops``, dynamo turns the backward pass of a loss that a traced function receives
        as an argument into a no-op (``tests/test_fast.py`` compares the compiled step with this one in float64).

        :param rollout_data: The minibatch
        :param scalars: This update's coefficients
        :param with_kl: Whether to compute the approximate KL
        :return: The statistics of the step, the loss detached
        """
        step = self._minibatch_loss(rollout_data, scalars, with_kl)
        _forget_last_distribution(self.policy)
        step.loss.backward()
        return step._replace(loss=step.loss.detach(), gradient_norm=self._clip_gradients())

    def _step_functions(self, fast_path: FastPath | None) -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]:
        """
        :param fast_path: The fast path of the update, or None
        :return: :meth:`_gradient_step`, :meth:`_minibatch_loss` and :meth:`_optimizer_step`, compiled where
            ``fast_path`` is given: the gradient step between the gradients' reset and the optimizer step (dynamo would
            break the graph at both, and each break costs a resumed frame with its own guards at every step), and the
            minibatch loss
        """
        if fast_path is None:
            return self._gradient_step, self._minibatch_loss, self._optimizer_step
        compiled_step = fast_path.compiled("the gradient step", self._loss_backward_and_clip)
        # target_kl: the compiled loss, then the host's check, then the eager backward pass (through the compiled
        # backward graph, which inductor compiles at its first call), clipping and optimizer step
        return (
            functools.partial(self._reset_step_and_optimize, compiled_step),
            fast_path.compiled("the minibatch loss", self._minibatch_loss, cuda_graphs=False),
            fast_path.guarded("the backward pass of the minibatch loss", self._optimizer_step),
        )

    def _fast_path_of_update(self) -> FastPath | None:
        """:return: The fast path that this update compiles with, or None (default mode, or compilation unavailable)"""
        if not self.fast_mode:
            return None
        if self._fast_path is None or self._fast_path.device != self.device:
            self._fast_path = FastPath(self.device)
        return self._fast_path if self._fast_path.enabled else None

    def _prepare_optimizer(self) -> None:
        """Set the optimizer's learning rate for this update, and the implementation that runs it."""
        self._update_learning_rate(self.policy.optimizer)
        select_implementation(self.policy.optimizer, requested_implementation(self.policy), self.fast_mode)

    def train(self) -> None:
        """
        Update policy using the currently gathered rollout buffer.
        """
        # Switch to train mode (this affects batch norm / dropout)
        self.policy.set_training_mode(True)
        self._current_value("learning_rate", self.lr_schedule)
        scalars = self._update_scalars()
        fast_path = self._fast_path_of_update()
        self._prepare_optimizer()
        random_states = _random_states()
        try:
            statistics = self._update(scalars, fast_path)
        except CompilationFailedError:
            # The rollback has undone the attempt, and the fast path has warned: the same update again (the same
            # minibatches), eagerly
            _restore_random_states(random_states)
            statistics = self._update(scalars, None)
        self._n_updates += statistics.epochs
        self._record_update(statistics, scalars)

    def _update(self, scalars: UpdateScalars, fast_path: FastPath | None) -> "UpdateStatistics":
        """
        The epochs of one update, undone as a whole if a step is not finite or anything fails.

        :param scalars: This update's coefficients (floats)
        :param fast_path: The fast path to compile the steps with, or None for the eager steps
        :return: The statistics of every step
        """
        gradient_step, minibatch_loss, optimizer_step = self._step_functions(fast_path)
        if fast_path is not None:
            # Compiled: the scalars as tensors (no recompilation when they change)
            scalars = fast_path.as_tensors(scalars, next(self.policy.parameters()).dtype)

        # Per-minibatch statistics stay tensors until the end of the update: no host sync per value on a GPU (their
        # float values, and hence the logs, are SB3's). The rollback reads the terms of each step once per update.
        steps: list[StepStatistics] = []
        approx_kl_divs: list[th.Tensor] = []
        epochs_done = 0
        # The backward pass is traced where the compiled gradient step calls it; with target_kl the compiled loss's
        # backward pass runs eagerly (through its compiled backward graph)
        settings = fast_path.settings(trace_backward=self.target_kl is None) if fast_path is not None else nullcontext()
        gradients_released = self._no_gradients_left_in_cuda_graphs(fast_path)
        # The gradient steps start alike (compiled, one graph, not a second one for the first step after a rollout)
        _forget_last_distribution(self.policy)
        with settings, gradients_released, UpdateRollback(self.policy, _UPDATE_TERMS) as rollback:
            # train for n_epochs epochs
            for epoch in range(self.n_epochs):
                approx_kl_divs = []
                # Only the last epoch's approximate KL values are logged (as SB3 does), so without early stopping the
                # other epochs skip it (compiled, it is always computed: one graph for all epochs)
                with_kl = fast_path is not None or self.target_kl is not None or epoch == self.n_epochs - 1
                continue_training = True
                # Do a complete pass on the rollout buffer
                for rollout_data in self.rollout_buffer.get(self.batch_size):
                    if self.target_kl is None:
                        step = gradient_step(rollout_data, scalars, with_kl)
                    else:
                        step = minibatch_loss(rollout_data, scalars, with_kl)
                        assert step.approx_kl is not None
                        approx_kl_divs.append(step.approx_kl)
                        # Compared in float32, as SB3 compares its float32 array
                        if step.approx_kl.cpu().numpy() > 1.5 * self.target_kl:
                            continue_training = False
                            if self.verbose >= 1:
                                print(f"Early stopping at step {epoch} due to reaching max kl: {step.approx_kl.item():.2f}")
                            steps.append(step._replace(loss=step.loss.detach()))
                            break
                        step = step._replace(loss=step.loss.detach(), gradient_norm=optimizer_step(step.loss))
                    if self.target_kl is None and step.approx_kl is not None:
                        approx_kl_divs.append(step.approx_kl)
                    steps.append(step)
                    rollback.record(step.policy_loss, step.value_loss, step.entropy_loss, step.gradient_norm)

                epochs_done += 1
                if not continue_training:
                    break

            # Once per update (a host sync per epoch costs a sizable part of a compiled epoch of one minibatch): a
            # non-finite step undoes the whole update anyway, and its message names the first such step
            rollback.check()
            self._after_policy_update()
        return UpdateStatistics(steps, approx_kl_divs, epochs_done)

    @contextmanager
    def _no_gradients_left_in_cuda_graphs(self, fast_path: FastPath | None) -> Iterator[None]:
        """
        On leaving the block (an update, also one that is undone), reset the gradients where they are outputs of a CUDA
        graph, whose next replay overwrites them: none is left on the parameters.

        :param fast_path: The fast path of the update, or None
        """
        try:
            yield
        finally:
            if fast_path is not None and fast_path.cuda_graphs:
                self.policy.optimizer.zero_grad()

    def _record_update(self, statistics: "UpdateStatistics", scalars: UpdateScalars) -> None:
        """Log the update as SB3's PPO does (and the variant's terms)."""
        steps = statistics.steps
        explained_var = explained_variance(self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten())

        # Logs: Python floats (and, for approx_kl, float32 arrays) averaged by numpy, exactly as SB3 logs them
        self.logger.record("train/entropy_loss", np.mean(_to_floats([step.entropy_loss for step in steps])))
        self.logger.record("train/policy_gradient_loss", np.mean(_to_floats([step.policy_loss for step in steps])))
        for name in steps[-1].terms:
            self.logger.record(f"train/{name}", np.mean(_to_floats([step.terms[name] for step in steps])))
        self.logger.record("train/value_loss", np.mean(_to_floats([step.value_loss for step in steps])))
        self.logger.record("train/approx_kl", np.mean(th.stack(statistics.approx_kl_divs).cpu().numpy()))
        self.logger.record("train/clip_fraction", np.mean(_to_floats([step.clip_fraction for step in steps])))
        self.logger.record("train/loss", steps[-1].loss.item())
        self.logger.record("train/explained_variance", explained_var)
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", th.exp(self.policy.log_std).mean().item())

        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        if scalars["clip_range"] is not None:
            self.logger.record("train/clip_range", scalars["clip_range"])
        if scalars["clip_range_vf"] is not None:
            self.logger.record("train/clip_range_vf", scalars["clip_range_vf"])

    def _value_loss(
        self, values: th.Tensor, rollout_data: RolloutSamples, clip_range_vf: float | th.Tensor | None
    ) -> th.Tensor:
        """
        :param values: Current value predictions of the minibatch
        :param rollout_data: The minibatch
        :param clip_range_vf: Value clipping parameter (a float, or a 0-d tensor in fast mode), or None
        :return: MSE between the TD(lambda) returns and the (optionally clipped) value predictions
        """
        if clip_range_vf is None:
            # No clipping
            values_pred = values
        else:
            # Clip the difference between old and new value
            # NOTE: this depends on the reward scaling (torch's stubs take two numbers or two tensors as bounds)
            difference = values - rollout_data.old_values
            values_pred = rollout_data.old_values + th.clamp(difference, -clip_range_vf, clip_range_vf)  # type: ignore[arg-type]
        # Value loss using the TD(gae_lambda) target
        return F.mse_loss(rollout_data.returns, values_pred)

    def learn(
        self: SelfProximalPolicyAlgorithm,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str | None = None,
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfProximalPolicyAlgorithm:
        """
        SB3's ``learn()``; ``tb_log_name`` defaults to the class name (``PPOClip``, ``PPOPenalty``).
        """
        # torch.distributions re-checks every parameter and sample against its constraints, on every
        # minibatch and every env step; the checks change no value, and the non-finite guards already stop
        # training on NaN observations and losses, so they are turned off while learning.
        with distribution_validation(False):
            return super().learn(
                total_timesteps=total_timesteps,
                callback=callback,
                log_interval=log_interval,
                tb_log_name=type(self).__name__ if tb_log_name is None else tb_log_name,
                reset_num_timesteps=reset_num_timesteps,
                progress_bar=progress_bar,
            )

    def _excluded_save_params(self) -> list[str]:
        # fast_mode is a choice of the run, not of the model (see the fast_mode parameter); compiled functions are
        # never pickled
        return [*super()._excluded_save_params(), "fast_mode", "_fast_path"]

    def get_parameters(self) -> dict[str, dict]:
        parameters = super().get_parameters()
        if "policy.optimizer" in parameters:
            portable_optimizer_state(parameters["policy.optimizer"], requested_implementation(self.policy))
        return parameters

    def save(
        self,
        path: str | Path | BufferedIOBase,
        exclude: Iterable[str] | None = None,
        include: Iterable[str] | None = None,
    ) -> None:
        """
        SB3's ``save()``, writing a checkpoint that SB3's ``PPO.load`` also reads where this package is not installed:
        it names SB3's classes (the rollout buffer's too, unless one of this package's was passed as
        ``rollout_buffer_class``), and "no clipping" (``clip_range=None``, which SB3's PPO cannot read) is stored as
        an infinite clip range (the same objective for SB3's PPO; read back as None here).

        :param path: path to the file where the rl agent should be saved
        :param exclude: name of parameters that should be excluded in addition to the default ones
        :param include: name of parameters that might be excluded but should be included anyway
        """
        clip_range = self.clip_range
        if clip_range is None:
            self.clip_range = math.inf  # type: ignore[assignment]
        try:
            super().save(path, exclude=exclude, include=include)
        finally:
            self.clip_range = clip_range
