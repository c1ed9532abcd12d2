"""
The training loop shared by PPO-Clip and PPO-Penalty.

Both are the same algorithm with a different policy objective, so this class owns everything else:
argument checks, the rollout buffer, the epochs x minibatches loop, the value and entropy terms, gradient
clipping, SB3's ``target_kl`` early stop, the non-finite guards and the logs. A variant implements
:meth:`ProximalPolicyAlgorithm._policy_loss` and, if it needs them, the hooks run before and after the
epochs of each update.

With the clipped objective, every float operation and every draw from the random number generators is the
one of SB3's ``PPO.train()``, so on CPU a seeded run ends with exactly SB3's parameters.
"""

import copy
import inspect
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import DictRolloutBuffer, RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback, ConvertCallback
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import FloatSchedule, explained_variance
from torch.nn import functional as F

from sb3_ppo_variants.common.buffers import (
    ProximalDictRolloutBuffer,
    ProximalDictRolloutBufferSamples,
    ProximalRolloutBuffer,
    ProximalRolloutBufferSamples,
)
from sb3_ppo_variants.common.finite import NonFiniteRolloutGuard, check_finite_update
from sb3_ppo_variants.common.objectives import clip_fraction

# For the train/clip_fraction diagnostic of objectives without clipping: SB3's default clip range
DIAGNOSTIC_CLIP_RANGE = 0.2

# The scalars of a gradient step checked to be finite before the optimizer step, in this order
_UPDATE_TERMS = ("policy_loss", "value_loss", "entropy_loss", "gradient_norm")

SelfProximalPolicyAlgorithm = TypeVar("SelfProximalPolicyAlgorithm", bound="ProximalPolicyAlgorithm")
RolloutSamples = ProximalRolloutBufferSamples | ProximalDictRolloutBufferSamples


def _to_floats(scalars: list[th.Tensor]) -> list[float]:
    """:return: The values of 0-d tensors as Python floats, with one host transfer for all of them"""
    return th.stack(scalars).tolist()


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


def check_number(
    name: str,
    value: float,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    include_minimum: bool = True,
    allow_inf: bool = False,
) -> None:
    """
    Raise a ``ValueError`` naming ``name`` and the allowed range unless ``value`` lies in it.

    :param name: The parameter's name, as the user passes it
    :param value: The value to check
    :param minimum: Lower bound, or None
    :param maximum: Upper bound (inclusive), or None
    :param include_minimum: Whether ``minimum`` itself is allowed
    :param allow_inf: Whether ``+inf`` is allowed (NaN never is)
    """
    lower = "" if minimum is None else f"{'>=' if include_minimum else '>'} {minimum}"
    upper = "" if maximum is None else f"<= {maximum}"
    allowed = " and ".join(part for part in (lower, upper) if part)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number {allowed or 'finite'}, got {value!r}")
    too_low = minimum is not None and (value < minimum or (value == minimum and not include_minimum))
    too_high = maximum is not None and value > maximum
    non_finite = math.isnan(value) or (math.isinf(value) and not (allow_inf and value > 0))
    if non_finite or too_low or too_high:
        requirement = " and ".join(part for part in ("" if allow_inf else "finite", allowed) if part)
        raise ValueError(f"{name} must be {requirement}, got {value}")


def check_integer(name: str, value: int, minimum: int, reason: str = "") -> None:
    """
    Raise a ``ValueError`` naming ``name`` and the allowed range unless ``value`` is an integer >= ``minimum``.

    :param name: The parameter's name
    :param value: The value to check
    :param minimum: Smallest allowed value
    :param reason: Optional explanation appended to the message
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}{reason}, got {value!r}")


def _check_float_or_schedule(name: str, value: float | Schedule | None, **bounds: Any) -> None:
    """Check a float argument now; a schedule's values are checked in ``train()``, when they are evaluated."""
    if value is not None and not callable(value):
        check_number(name, value, **bounds)


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
    :param clip_range: Clipping parameter of the policy ratio, it can be a function of the current progress
        remaining (from 1 to 0). ``None`` means no clipping.
    :param clip_range_vf: Clipping parameter for the value function, it can be a function of the current
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
    :param rollout_buffer_class: Rollout buffer class to use. If ``None`` (or SB3's ``RolloutBuffer`` /
        ``DictRolloutBuffer``), ``ProximalRolloutBuffer`` or ``ProximalDictRolloutBuffer`` is used.
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
    :param fast_mode: Opt-in speed at the price of bit-for-bit equality with SB3's PPO: the optimizer uses its
        fused implementation (one operation updates all parameters; Adam, AdamW, SGD and others that take ``fused``,
        else ``foreach``), which orders floating-point operations differently. Learning is unchanged in distribution
        (tested on the same thresholds as the default mode), results are not bit-identical to SB3's. An
        ``optimizer_kwargs`` choice of ``fused`` or ``foreach`` in ``policy_kwargs`` wins. Default: False.
    :param _init_setup_model: Whether or not to build the network at the creation of the instance
    """

    _clip_range_required: ClassVar[bool] = False
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
        if clip_range is None and self._clip_range_required:
            raise ValueError(f"clip_range must be a float >= 0 or a schedule for {type(self).__name__}, got None")
        self._check_arguments(
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
            target_kl=target_kl,
        )
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
            self._check_rollout_size(batch_size, normalize_advantage)
        self.batch_size = batch_size
        self.n_epochs = n_epochs
        self.clip_range = clip_range  # type: ignore[assignment]
        self.clip_range_vf = clip_range_vf  # type: ignore[assignment]
        self.normalize_advantage = normalize_advantage
        self.target_kl = target_kl
        self.fast_mode = fast_mode

        if _init_setup_model:
            self._setup_model()

    @staticmethod
    def _check_arguments(
        learning_rate: float | Schedule,
        n_steps: int,
        batch_size: int,
        n_epochs: int,
        gamma: float,
        gae_lambda: float,
        clip_range: float | Schedule | None,
        clip_range_vf: float | Schedule | None,
        normalize_advantage: bool,
        ent_coef: float,
        vf_coef: float,
        max_grad_norm: float,
        target_kl: float | None,
    ) -> None:
        _check_float_or_schedule("learning_rate", learning_rate, minimum=0.0)
        check_integer("n_steps", n_steps, minimum=1)
        check_integer("n_epochs", n_epochs, minimum=1)
        # Advantage normalization divides by the std of the minibatch: undefined for a single sample
        # (see https://github.com/DLR-RM/stable-baselines3/issues/440)
        if normalize_advantage:
            check_integer("batch_size", batch_size, minimum=2, reason=" when normalize_advantage=True")
        else:
            check_integer("batch_size", batch_size, minimum=1)
        check_number("gamma", gamma, minimum=0.0, maximum=1.0)
        check_number("gae_lambda", gae_lambda, minimum=0.0, maximum=1.0)
        _check_float_or_schedule("clip_range", clip_range, minimum=0.0)
        _check_float_or_schedule("clip_range_vf", clip_range_vf, minimum=0.0)
        check_number("ent_coef", ent_coef)
        check_number("vf_coef", vf_coef, minimum=0.0)
        check_number("max_grad_norm", max_grad_norm, minimum=0.0, include_minimum=False, allow_inf=True)
        if target_kl is not None:
            check_number("target_kl", target_kl, minimum=0.0, include_minimum=False)

    def _check_rollout_size(self, batch_size: int, normalize_advantage: bool) -> None:
        assert self.env is not None
        buffer_size = self.env.num_envs * self.n_steps
        if normalize_advantage and buffer_size < 2:
            raise ValueError(
                f"n_steps * n_envs must be > 1 when normalize_advantage=True, got n_steps={self.n_steps} "
                f"and n_envs={self.env.num_envs}"
            )
        if buffer_size % batch_size > 0:
            warnings.warn(
                f"You have specified a mini-batch size of {batch_size},"
                f" but because the `RolloutBuffer` is of size `n_steps * n_envs = {buffer_size}`,"
                f" after every {buffer_size // batch_size} untruncated mini-batches,"
                f" there will be a truncated mini-batch of size {buffer_size % batch_size}\n"
                f"We recommend using a `batch_size` that is a factor of `n_steps * n_envs`.\n"
                f"Info: (n_steps={self.n_steps} and n_envs={self.env.num_envs})"
            )

    def _setup_model(self) -> None:
        # SB3's own buffers (also what a checkpoint of SB3's PPO names) are replaced by their proximal
        # subclasses: same samples, plus what PPOPenalty needs
        if self.rollout_buffer_class in (None, RolloutBuffer, DictRolloutBuffer):
            dict_observations = isinstance(self.observation_space, spaces.Dict)
            self.rollout_buffer_class = ProximalDictRolloutBuffer if dict_observations else ProximalRolloutBuffer
        if self.fast_mode:
            self._use_fused_optimizer()
        super()._setup_model()
        if self.clip_range is None and self._clip_range_required:
            raise ValueError(f"clip_range must be a float >= 0 or a schedule for {type(self).__name__}, got None")
        if self.clip_range is not None:
            self.clip_range = FloatSchedule(self.clip_range)
        if self.clip_range_vf is not None:
            self.clip_range_vf = FloatSchedule(self.clip_range_vf)

    def _use_fused_optimizer(self) -> None:
        """Ask the policy's optimizer for its fused (else multi-tensor) implementation, unless the user chose."""
        optimizer_class = self.policy_kwargs.get("optimizer_class", th.optim.Adam)
        optimizer_kwargs = dict(self.policy_kwargs.get("optimizer_kwargs") or {})
        if "fused" in optimizer_kwargs or "foreach" in optimizer_kwargs:
            return
        accepted = inspect.signature(optimizer_class).parameters
        for implementation in ("fused", "foreach"):
            if implementation in accepted:
                self.policy_kwargs = {**self.policy_kwargs, "optimizer_kwargs": {**optimizer_kwargs, implementation: True}}
                return

    def _use_multi_tensor_adam(self) -> None:
        """
        Let SB3's default optimizer, Adam, update all parameters with PyTorch's multi-tensor (``foreach``) kernels
        where the user left the choice to PyTorch. On the CPU these run, tensor by tensor, exactly the operations of
        the single-tensor implementation that PyTorch picks there by default, so the parameters are bit-for-bit the
        same, with less overhead per step; on a GPU, ``foreach`` already is PyTorch's default.
        Set at every update, since loading a checkpoint restores the optimizer's saved settings.
        """
        optimizer = self.policy.optimizer
        if type(optimizer) is not th.optim.Adam:
            return
        for group in optimizer.param_groups:
            chosen = group.get("foreach") is not None or any(
                group.get(key) for key in ("fused", "capturable", "differentiable")
            )
            # The multi-tensor implementation rejects tensor hyperparameters that the single-tensor one accepts
            tensor_hyperparameters = any(isinstance(value, th.Tensor) for value in (group["lr"], *group["betas"]))
            if not chosen and not tensor_hyperparameters:
                group["foreach"] = True

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

    def _policy_loss(
        self,
        ratio: th.Tensor,
        advantages: th.Tensor,
        distribution: Distribution,
        rollout_data: RolloutSamples,
        clip_range: float | None,
    ) -> th.Tensor:
        """
        The variant's policy objective, as a loss to minimize over one minibatch.

        :param ratio: Probability ratios pi_new(a|s) / pi_old(a|s) of the minibatch
        :param advantages: Advantages of the minibatch (normalized if ``normalize_advantage``)
        :param distribution: The current policy's action distribution on the minibatch's observations
        :param rollout_data: The minibatch
        :param clip_range: Current clipping parameter, or None when the variant does not clip
        :return: Scalar loss
        """
        raise NotImplementedError

    def _before_policy_update(self) -> None:
        """Called in ``train()`` before the first epoch, with the policy that collected the rollout."""

    def _after_policy_update(self) -> None:
        """Called in ``train()`` after the last epoch (or early stop), with the final parameters."""

    def _current_value(self, name: str, schedule: Schedule | None) -> float | None:
        """
        :param name: The schedule's parameter name (for the error message)
        :param schedule: The schedule, or None
        :return: Its value at the current progress, checked to be finite and >= 0
        """
        if schedule is None:
            return None
        value = schedule(self._current_progress_remaining)
        check_number(
            f"{name} (schedule value at progress_remaining={self._current_progress_remaining:.4g})", value, minimum=0.0
        )
        return value

    def train(self) -> None:
        """
        Update policy using the currently gathered rollout buffer.
        """
        self._before_policy_update()
        # Switch to train mode (this affects batch norm / dropout)
        self.policy.set_training_mode(True)
        self._current_value("learning_rate", self.lr_schedule)
        self._update_learning_rate(self.policy.optimizer)
        self._use_multi_tensor_adam()
        clip_range = self._current_value("clip_range", self.clip_range)
        clip_range_vf = self._current_value("clip_range_vf", self.clip_range_vf)

        # Per-minibatch statistics stay tensors until the end of the update: no host sync per value on a GPU
        # (their float values, and hence the logs, are SB3's). The non-finite guard reads them once per epoch and, if
        # a step went non-finite, restores this snapshot: no host sync in the minibatch loop either.
        snapshot = self._training_state()
        update_terms: list[th.Tensor] = []
        checked_steps = 0
        entropy_losses: list[th.Tensor] = []
        pg_losses: list[th.Tensor] = []
        value_losses: list[th.Tensor] = []
        clip_fractions: list[th.Tensor] = []
        parameters = list(self.policy.parameters())

        continue_training = True
        for epoch in range(self.n_epochs):
            approx_kl_divs: list[th.Tensor] = []
            for rollout_data in self.rollout_buffer.get(self.batch_size):
                actions = rollout_data.actions
                if isinstance(self.action_space, spaces.Discrete):
                    # Convert discrete action from float to long
                    actions = rollout_data.actions.long().flatten()

                values, log_prob, entropy = self.policy.evaluate_actions(rollout_data.observations, actions)
                # evaluate_actions() has just parameterized the policy's (stateful) action distribution
                # on this minibatch: reusing it avoids a second forward pass for objectives that need it.
                distribution = self.policy.action_dist
                values = values.flatten()
                advantages = rollout_data.advantages
                # Normalization does not make sense if mini batchsize == 1, see GH issue #325
                if self.normalize_advantage and len(advantages) > 1:
                    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

                # ratio between old and new policy, should be one at the first iteration
                ratio = th.exp(log_prob - rollout_data.old_log_prob)
                policy_loss = self._policy_loss(ratio, advantages, distribution, rollout_data, clip_range)
                pg_losses.append(policy_loss.detach())
                # Without clipping, the fraction outside SB3's default range is logged as a diagnostic of the step size
                clip_fractions.append(clip_fraction(ratio, DIAGNOSTIC_CLIP_RANGE if clip_range is None else clip_range))

                value_loss = self._value_loss(values, rollout_data, clip_range_vf)
                value_losses.append(value_loss.detach())

                # Entropy loss favors exploration; approximate it by -log_prob when there is no analytical form
                entropy_loss = -th.mean(-log_prob) if entropy is None else -th.mean(entropy)
                entropy_losses.append(entropy_loss.detach())

                loss = policy_loss + self.ent_coef * entropy_loss + self.vf_coef * value_loss

                # Approximate KL[pi_old || pi_new] for early stopping, see SB3 issue #417 and
                # http://joschu.net/blog/kl-approx.html. Only the last epoch's values are logged (as SB3 does), so
                # without early stopping the other epochs skip it.
                if self.target_kl is not None or epoch == self.n_epochs - 1:
                    with th.no_grad():
                        log_ratio = log_prob - rollout_data.old_log_prob
                        approx_kl_div = th.mean((th.exp(log_ratio) - 1) - log_ratio)
                        approx_kl_divs.append(approx_kl_div)

                if self.target_kl is not None and approx_kl_div.item() > 1.5 * self.target_kl:
                    continue_training = False
                    if self.verbose >= 1:
                        print(f"Early stopping at step {epoch} due to reaching max kl: {approx_kl_div.item():.2f}")
                    break

                self.policy.optimizer.zero_grad()
                loss.backward()
                grad_norm = th.nn.utils.clip_grad_norm_(parameters, self.max_grad_norm)
                update_terms.append(th.stack([pg_losses[-1], value_losses[-1], entropy_losses[-1], grad_norm.detach()]))
                self.policy.optimizer.step()

            self._check_finite_steps(update_terms[checked_steps:], snapshot, first_step=checked_steps)
            checked_steps = len(update_terms)
            self._n_updates += 1
            if not continue_training:
                break

        self._after_policy_update()

        explained_var = explained_variance(self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten())
        # Python floats (and, for approx_kl, float32 arrays) averaged by numpy, exactly as SB3 logs them
        self.logger.record("train/entropy_loss", np.mean(_to_floats(entropy_losses)))
        self.logger.record("train/policy_gradient_loss", np.mean(_to_floats(pg_losses)))
        self.logger.record("train/value_loss", np.mean(_to_floats(value_losses)))
        self.logger.record("train/approx_kl", np.mean(th.stack(approx_kl_divs).cpu().numpy()))
        self.logger.record("train/clip_fraction", np.mean(_to_floats(clip_fractions)))
        self.logger.record("train/loss", loss.item())
        self.logger.record("train/explained_variance", explained_var)
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", th.exp(self.policy.log_std).mean().item())

        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        if clip_range is not None:
            self.logger.record("train/clip_range", clip_range)
        if clip_range_vf is not None:
            self.logger.record("train/clip_range_vf", clip_range_vf)

    def _training_state(self) -> tuple[dict[str, th.Tensor], dict[str, Any]]:
        """:return: Copies of the policy's and the optimizer's state, to restore if an update goes non-finite"""
        policy_state = {name: tensor.detach().clone() for name, tensor in self.policy.state_dict().items()}
        return policy_state, copy.deepcopy(self.policy.optimizer.state_dict())

    def _check_finite_steps(
        self, update_terms: list[th.Tensor], snapshot: tuple[dict[str, th.Tensor], dict[str, Any]], first_step: int = 0
    ) -> None:
        """
        Undo the update and raise :class:`NonFiniteError` if a loss term or gradient norm of a step was not finite.

        :param update_terms: Per gradient step to check, the stacked ``_UPDATE_TERMS``
        :param snapshot: The training state before the update, from :meth:`_training_state`
        :param first_step: How many steps of the update came before these (for the message)
        """
        if not update_terms:
            return
        terms = th.stack(update_terms)
        if th.isfinite(terms).all().item():
            return
        policy_state, optimizer_state = snapshot
        self.policy.load_state_dict(policy_state)
        self.policy.optimizer.load_state_dict(optimizer_state)
        first_bad = int(th.nonzero(~th.isfinite(terms).all(dim=1))[0, 0])
        bad_terms = dict(zip(_UPDATE_TERMS, terms[first_bad].tolist(), strict=True))
        check_finite_update(bad_terms, step=first_step + first_bad + 1)

    def _value_loss(self, values: th.Tensor, rollout_data: RolloutSamples, clip_range_vf: float | None) -> th.Tensor:
        """
        :param values: Current value predictions of the minibatch
        :param rollout_data: The minibatch
        :param clip_range_vf: Value clipping parameter, or None
        :return: MSE between the TD(lambda) returns and the (optionally clipped) value predictions
        """
        if clip_range_vf is None:
            values_pred = values
        else:
            # Clip the difference between old and new value. NOTE: this depends on the reward scaling
            values_pred = rollout_data.old_values + th.clamp(values - rollout_data.old_values, -clip_range_vf, clip_range_vf)
        return F.mse_loss(rollout_data.returns, values_pred)

    def learn(
        self: SelfProximalPolicyAlgorithm,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "ProximalPolicyAlgorithm",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfProximalPolicyAlgorithm:
        # torch.distributions re-checks every parameter and sample against its constraints, on every
        # minibatch and every env step; the checks change no value, and the non-finite guards already stop
        # training on NaN observations and losses, so they are turned off while learning.
        with distribution_validation(False):
            return super().learn(
                total_timesteps=total_timesteps,
                callback=callback,
                log_interval=log_interval,
                tb_log_name=tb_log_name,
                reset_num_timesteps=reset_num_timesteps,
                progress_bar=progress_bar,
            )
