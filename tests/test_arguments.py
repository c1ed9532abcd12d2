"""Bad arguments raise a ValueError that names the parameter and the allowed range."""

import pytest
import torch as th
from stable_baselines3.common.buffers import RolloutBuffer

from sb3_ppo_variants import PPOClip, PPOPenalty
from sb3_ppo_variants.common.buffers import ProximalRolloutBuffer

NAN, INF = float("nan"), float("inf")

COMMON_BAD_ARGUMENTS = [
    ({"learning_rate": -1e-3}, "learning_rate must be finite and >= 0.0"),
    ({"learning_rate": NAN}, "learning_rate"),
    ({"n_steps": 0}, "n_steps must be an integer >= 1"),
    ({"n_steps": 2.5}, "n_steps must be an integer"),
    ({"n_epochs": 0}, "n_epochs must be an integer >= 1"),
    ({"batch_size": 0, "normalize_advantage": False}, "batch_size must be an integer >= 1"),
    ({"batch_size": 1}, "batch_size must be an integer >= 2 when normalize_advantage=True"),
    ({"gamma": 1.5}, r"gamma must be finite and >= 0.0 and <= 1.0"),
    ({"gae_lambda": -0.1}, "gae_lambda"),
    ({"clip_range": -0.01}, r"clip_range must be finite and >= 0.0"),
    ({"clip_range": -0.2}, "clip_range"),
    ({"clip_range": INF}, "clip_range must be finite"),
    ({"clip_range_vf": -1.0}, "clip_range_vf"),
    ({"ent_coef": NAN}, "ent_coef must be finite, got nan"),
    ({"vf_coef": -1.0}, "vf_coef must be finite and >= 0.0"),
    ({"max_grad_norm": 0.0}, "max_grad_norm must be > 0.0"),
    ({"max_grad_norm": NAN}, "max_grad_norm"),
    ({"target_kl": 0.0}, "target_kl must be finite and > 0.0"),
    ({"target_kl": INF}, "target_kl"),
]

PENALTY_BAD_ARGUMENTS = [
    ({"kl_target": 0.0}, "kl_target must be finite and > 0.0"),
    ({"kl_target": -0.01}, "kl_target"),
    ({"kl_target": NAN}, "kl_target"),
    ({"beta": -1.0}, "beta must be finite and >= 0.0"),
    ({"beta": INF, "kl_target": None}, "beta must be finite"),
    ({"beta": 0.0}, r"beta must be in \[0.0001, 10000.0\] when kl_target is set"),
    ({"beta_factor": 1.0}, "beta_factor must be finite and > 1.0"),
    ({"beta_factor": INF}, "beta_factor"),
    ({"kl_tolerance": 0.9}, "kl_tolerance must be finite and >= 1.0"),
    ({"kl_tolerance": NAN}, "kl_tolerance"),
]


@pytest.mark.parametrize("algo", [PPOClip, PPOPenalty])
@pytest.mark.parametrize("kwargs, message", COMMON_BAD_ARGUMENTS)
def test_bad_common_arguments(algo, kwargs, message):
    with pytest.raises(ValueError, match=message):
        algo("MlpPolicy", "CartPole-v1", **kwargs)


@pytest.mark.parametrize("kwargs, message", PENALTY_BAD_ARGUMENTS)
def test_bad_penalty_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PPOPenalty("MlpPolicy", "CartPole-v1", **kwargs)


def test_clip_range_none_only_for_penalty():
    with pytest.raises(ValueError, match="clip_range must be a float >= 0 or a schedule for PPOClip"):
        PPOClip("MlpPolicy", "CartPole-v1", clip_range=None)
    assert PPOPenalty("MlpPolicy", "CartPole-v1").clip_range is None


def test_rollout_size_of_one_with_advantage_normalization():
    with pytest.raises(ValueError, match="n_steps \\* n_envs must be > 1 when normalize_advantage=True"):
        PPOPenalty("MlpPolicy", "CartPole-v1", n_steps=1, batch_size=2)


def test_penalty_needs_a_buffer_with_old_distributions():
    class CustomBuffer(RolloutBuffer):
        pass

    with pytest.raises(ValueError, match="rollout_buffer_class must be a subclass of"):
        PPOPenalty("MlpPolicy", "CartPole-v1", rollout_buffer_class=CustomBuffer)
    # SB3's own buffer classes (as named in SB3 PPO checkpoints) are replaced by their proximal subclasses
    assert (
        type(PPOPenalty("MlpPolicy", "CartPole-v1", rollout_buffer_class=RolloutBuffer).rollout_buffer)
        is ProximalRolloutBuffer
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"beta": 0.0, "kl_target": None},  # the paper's "no clipping or penalty"
        {"beta": 10.0, "kl_target": None},  # fixed KL
        {"beta": 1e6, "kl_target": None},  # a fixed beta is not bounded
        {"kl_target": 0.003, "clip_range": 0.2},
        {"learning_rate": lambda progress: 1e-3 * progress, "clip_range": lambda progress: 0.2 * progress},
        {"max_grad_norm": INF, "batch_size": 1, "normalize_advantage": False},
    ],
)
def test_valid_edge_arguments(kwargs):
    model = PPOPenalty("MlpPolicy", "CartPole-v1", n_steps=8, **{"batch_size": 8, **kwargs})
    model.learn(16)


@pytest.mark.parametrize("algo", [PPOClip, PPOPenalty])
@pytest.mark.parametrize(
    "name, schedule_kwargs",
    [
        ("learning_rate", {"learning_rate": lambda progress: 3e-4 if progress == 1.0 else float("nan")}),
        ("clip_range", {"clip_range": lambda progress: 0.2 if progress == 1.0 else -0.1}),
        ("clip_range_vf", {"clip_range_vf": lambda progress: float("inf")}),
    ],
)
def test_bad_schedule_values_raise_before_the_update(algo, name, schedule_kwargs):
    model = algo("MlpPolicy", "CartPole-v1", n_steps=16, batch_size=16, n_epochs=1, **schedule_kwargs)
    with pytest.raises(ValueError, match=f"{name} \\(schedule value at progress_remaining="):
        model.learn(48)
    assert all(th.isfinite(value).all() for value in model.policy.state_dict().values())


def test_ppo_clip_loaded_without_clip_range(tmp_path):
    PPOClip("MlpPolicy", "CartPole-v1", n_steps=16, batch_size=16).save(tmp_path / "model")
    with pytest.raises(ValueError, match="clip_range must be a float >= 0 or a schedule for PPOClip"):
        PPOClip.load(tmp_path / "model", custom_objects={"clip_range": None})


def test_zero_learning_rate_and_clip_range_as_sb3():
    model = PPOClip("MlpPolicy", "CartPole-v1", n_steps=16, batch_size=16, n_epochs=1, learning_rate=0.0, clip_range=0.0)
    before = [value.clone() for value in model.policy.parameters()]
    model.learn(32)
    assert all(th.equal(old, new) for old, new in zip(before, model.policy.parameters(), strict=True))


def test_fast_mode_uses_the_fused_optimizer_and_is_opt_in(tmp_path):
    assert PPOClip("MlpPolicy", "CartPole-v1").policy.optimizer.defaults["fused"] is None  # SB3's, bit for bit
    model = PPOPenalty("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=16, fast_mode=True)
    assert model.policy.optimizer.defaults["fused"] is True
    model.learn(64)
    model.save(tmp_path / "model")
    loaded = PPOPenalty.load(tmp_path / "model")
    assert loaded.fast_mode and loaded.policy.optimizer.defaults["fused"] is True
    # An explicit choice of the user wins
    chosen = PPOClip("MlpPolicy", "CartPole-v1", fast_mode=True, policy_kwargs={"optimizer_kwargs": {"foreach": False}})
    assert chosen.policy.optimizer.defaults["fused"] is None and chosen.policy.optimizer.defaults["foreach"] is False
    # An optimizer without a fused implementation gets the multi-tensor one
    rmsprop = PPOClip("MlpPolicy", "CartPole-v1", fast_mode=True, policy_kwargs={"optimizer_class": th.optim.RMSprop})
    assert rmsprop.policy.optimizer.defaults["foreach"] is True


def test_default_adam_runs_multi_tensor_unless_the_user_chose(tmp_path):
    model = PPOClip("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=16, n_epochs=1)
    model.learn(32)
    assert [group["foreach"] for group in model.policy.optimizer.param_groups] == [True]
    # Also after loading a checkpoint, whose optimizer state carries the settings of the run that saved it
    model.policy.optimizer.param_groups[0]["foreach"] = None
    model.save(tmp_path / "model")
    loaded = PPOClip.load(tmp_path / "model", env=model.get_env())
    loaded.learn(32)
    assert loaded.policy.optimizer.param_groups[0]["foreach"] is True
    no_foreach = {"optimizer_kwargs": {"foreach": False}}
    chosen = PPOClip("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=16, policy_kwargs=no_foreach)
    chosen.learn(32)
    assert chosen.policy.optimizer.param_groups[0]["foreach"] is False
    other = PPOClip("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=16, policy_kwargs={"optimizer_class": th.optim.RMSprop})
    other.learn(32)
    assert other.policy.optimizer.param_groups[0]["foreach"] is None
