"""
Bad arguments raise an InvalidArgumentError (a ValueError and an AssertionError, as SB3 raises) that names the
parameter and the allowed range; the optimizer's implementation follows the mode, never the checkpoint.
"""

import subprocess
import sys
import warnings

import pytest
import torch as th
from stable_baselines3.common.buffers import DictRolloutBuffer, RolloutBuffer
from stable_baselines3.common.envs import SimpleMultiObsEnv

from sb3_ppo_variants import InvalidArgumentError, PPOClip, PPOPenalty
from sb3_ppo_variants.common.buffers import ProximalDictRolloutBuffer, ProximalRolloutBuffer

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
    ({"gae_lambda": 1.5}, r"gae_lambda must be finite and >= 0.0 and <= 1.0, got 1.5"),
    ({"gamma": True}, "gamma must be a number >= 0.0 and <= 1.0, got True"),
    ({"n_steps": True}, "n_steps must be an integer >= 1, got True"),
    ({"clip_range": -0.01}, r"clip_range must be finite and > 0.0"),
    ({"clip_range": 0.0}, r"clip_range must be finite and > 0.0, got 0.0"),
    ({"clip_range": INF}, "clip_range must be finite"),
    ({"clip_range": "0.2"}, "clip_range must be a number > 0.0, a schedule or None"),
    ({"clip_range_vf": -1.0}, "clip_range_vf"),
    ({"clip_range_vf": 0.0}, r"clip_range_vf must be finite and > 0.0, got 0.0"),
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
    with pytest.raises(InvalidArgumentError, match=message):
        algo("MlpPolicy", "CartPole-v1", **kwargs)


@pytest.mark.parametrize("kwargs, message", PENALTY_BAD_ARGUMENTS)
def test_bad_penalty_arguments(kwargs, message):
    with pytest.raises(InvalidArgumentError, match=message):
        PPOPenalty("MlpPolicy", "CartPole-v1", **kwargs)


def test_errors_are_value_errors_and_assertion_errors_as_sb3_raises():
    assert issubclass(InvalidArgumentError, ValueError) and issubclass(InvalidArgumentError, AssertionError)
    # SB3's own spelling of the same mistakes
    with pytest.raises(AssertionError):
        PPOClip("MlpPolicy", "Pendulum-v1", clip_range_vf=-0.2)
    with pytest.raises(AssertionError):
        PPOClip("MlpPolicy", "Pendulum-v1", n_steps=1)


def test_checks_run_under_python_optimize():
    """The checks are not assert statements: python -O (which strips those) still rejects bad arguments."""
    code = (
        "from sb3_ppo_variants import PPOPenalty, InvalidArgumentError\n"
        "try:\n    PPOPenalty('MlpPolicy', 'CartPole-v1', kl_target=-1.0)\n"
        "except InvalidArgumentError as error:\n    print('rejected:', error)\n"
    )
    result = subprocess.run([sys.executable, "-O", "-c", code], capture_output=True, text=True, check=True)
    assert "rejected: kl_target must be finite and > 0.0, got -1.0" in result.stdout


def test_clip_range_none_only_for_penalty():
    with pytest.raises(InvalidArgumentError, match="clip_range must be a float > 0 or a schedule for PPOClip"):
        PPOClip("MlpPolicy", "CartPole-v1", clip_range=None)
    assert PPOPenalty("MlpPolicy", "CartPole-v1").clip_range is None


def test_rollout_size_of_one_with_advantage_normalization():
    with pytest.raises(InvalidArgumentError, match="n_steps \\* n_envs must be > 1 when normalize_advantage=True"):
        PPOPenalty("MlpPolicy", "CartPole-v1", n_steps=1, batch_size=2)


def test_target_kl_on_penalty_warns_once_pointing_to_kl_target():
    with pytest.warns(UserWarning, match=r"target_kl=0.01 is SB3's early stop .* that is kl_target") as caught:
        PPOPenalty("MlpPolicy", "CartPole-v1", target_kl=0.01)
    assert len([warning for warning in caught if "target_kl" in str(warning.message)]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PPOClip("MlpPolicy", "CartPole-v1", target_kl=0.01)  # SB3's meaning in PPOClip: nothing to warn about
        PPOPenalty("MlpPolicy", "CartPole-v1", kl_target=0.02)


@pytest.mark.parametrize("algo", [PPOClip, PPOPenalty])
def test_gpu_warning_in_sb3s_words(algo):
    model = algo("MlpPolicy", "CartPole-v1", device="cpu")
    model.device = th.device("cuda")  # as if on a GPU: SB3 warns for an MlpPolicy there
    with pytest.warns(UserWarning, match=r"^You are trying to run PPO on the GPU, but it is primarily intended"):
        model._maybe_recommend_cpu()


def test_buffer_classes_as_sb3_names_them():
    # SB3's classes are built as their proximal subclasses; the attribute (and checkpoints) keep SB3's name
    for algo in (PPOClip, PPOPenalty):
        model = algo("MlpPolicy", "CartPole-v1")
        assert model.rollout_buffer_class is RolloutBuffer and type(model.rollout_buffer) is ProximalRolloutBuffer
        model = algo("MultiInputPolicy", SimpleMultiObsEnv(), rollout_buffer_class=DictRolloutBuffer)
        assert model.rollout_buffer_class is DictRolloutBuffer and type(model.rollout_buffer) is ProximalDictRolloutBuffer
    assert PPOPenalty("MlpPolicy", "CartPole-v1", rollout_buffer_class=ProximalRolloutBuffer).rollout_buffer_class is (
        ProximalRolloutBuffer
    )


@pytest.mark.parametrize("algo", [PPOClip, PPOPenalty])
def test_mismatched_buffer_class_is_rejected_as_sb3_does(algo):
    with pytest.raises(AssertionError, match="DictRolloutBuffer must be used with Dict obs space only"):
        algo("MlpPolicy", "CartPole-v1", rollout_buffer_class=DictRolloutBuffer)
    with pytest.raises(InvalidArgumentError, match="RolloutBuffer cannot hold Dict observations"):
        algo("MultiInputPolicy", SimpleMultiObsEnv(), rollout_buffer_class=RolloutBuffer)


def test_custom_buffer_class():
    class CustomBuffer(RolloutBuffer):
        pass

    # PPOClip uses any RolloutBuffer, as SB3's PPO does
    model = PPOClip("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=16, rollout_buffer_class=CustomBuffer)
    assert type(model.rollout_buffer) is CustomBuffer
    model.learn(64)
    # PPOPenalty needs a buffer that stores the old distributions
    with pytest.raises(InvalidArgumentError, match="rollout_buffer_class must be SB3's RolloutBuffer or DictRolloutBuffer"):
        PPOPenalty("MlpPolicy", "CartPole-v1", rollout_buffer_class=CustomBuffer)


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
    with pytest.raises(InvalidArgumentError, match=f"{name} \\(schedule value at progress_remaining="):
        model.learn(48)
    assert all(th.isfinite(value).all() for value in model.policy.state_dict().values())


@pytest.mark.parametrize("algo", [PPOClip, PPOPenalty])
def test_schedules_to_zero_may_go_negative_when_the_last_rollout_overshoots(algo):
    """rl_zoo3's lin_<x> schedules are not clamped: past the budget they are slightly negative, as in SB3's PPO."""
    seen = []

    def recorded(progress_remaining: float) -> float:
        seen.append(progress_remaining)
        return 3e-4 * progress_remaining  # rl_zoo3's linear_schedule(3e-4)

    model = algo("MlpPolicy", "CartPole-v1", n_steps=16, batch_size=16, n_epochs=1, learning_rate=recorded)
    model.learn(40)  # 3 rollouts of 16 steps: the last update runs at progress_remaining -0.2
    assert min(seen) == pytest.approx(-0.2)
    # ...but not before the budget is reached
    early = lambda progress_remaining: progress_remaining - 0.5  # noqa: E731
    model = algo("MlpPolicy", "CartPole-v1", n_steps=16, batch_size=16, n_epochs=1, learning_rate=early)
    with pytest.raises(
        InvalidArgumentError, match=r"learning_rate \(schedule value at progress_remaining=0.2\) must be finite"
    ):
        model.learn(40)


def test_ppo_clip_loaded_without_clip_range(tmp_path):
    PPOClip("MlpPolicy", "CartPole-v1", n_steps=16, batch_size=16).save(tmp_path / "model")
    with pytest.raises(InvalidArgumentError, match="clip_range must be a float > 0 or a schedule for PPOClip"):
        PPOClip.load(tmp_path / "model", custom_objects={"clip_range": None})


def test_zero_learning_rate_as_sb3():
    model = PPOClip("MlpPolicy", "CartPole-v1", n_steps=16, batch_size=16, n_epochs=1, learning_rate=0.0)
    before = [value.clone() for value in model.policy.parameters()]
    model.learn(32)
    assert all(th.equal(old, new) for old, new in zip(before, model.policy.parameters(), strict=True))


def _implementation(model) -> tuple:
    group = model.policy.optimizer.param_groups[0]
    return group["fused"], group["foreach"]


def test_default_adam_runs_multi_tensor_also_after_loading(tmp_path):
    model = PPOClip("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=16, n_epochs=1)
    model.learn(32)
    # A checkpoint whose optimizer state carries other settings (e.g. written by an older version)
    model.policy.optimizer.param_groups[0]["foreach"] = None
    model.policy.optimizer.param_groups[0]["fused"] = True
    th.save(model.policy.optimizer.state_dict(), tmp_path / "optimizer.pth")
    model.save(tmp_path / "model")
    loaded = PPOClip.load(tmp_path / "model", env=model.get_env())
    loaded.policy.optimizer.load_state_dict(th.load(tmp_path / "optimizer.pth", weights_only=True))
    loaded.learn(32)
    assert _implementation(loaded) == (None, True)
