"""
fast_mode: the compiled gradient step and rollout forward (sb3_ppo_variants.common.fast).

Compiling takes seconds per model, so each test compiles a few small ones. Dynamo's counters (process-wide) prove
what was compiled and that nothing recompiles from one update to the next.
"""

import copy
import json
import os
import platform
import re
import subprocess
import sys
import threading
import warnings
import zipfile

import numpy as np
import pytest
import torch as th
from stable_baselines3.common import policies
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import (
    FakeImageEnv,
    IdentityEnvBox,
    IdentityEnvMultiBinary,
    IdentityEnvMultiDiscrete,
    SimpleMultiObsEnv,
)
from stable_baselines3.common.torch_layers import FlattenExtractor
from torch._dynamo.utils import counters
from torch.nn import functional as F

from sb3_ppo_variants import PPOClip, PPOPenalty
from sb3_ppo_variants.common import fast
from sb3_ppo_variants.common.proximal import distribution_validation

SMALL = {"n_steps": 32, "batch_size": 16, "n_epochs": 2}


def _compilations() -> tuple[int, int]:
    """:return: Frames that dynamo compiled and graphs it produced, so far in this process"""
    return counters["frames"]["ok"], counters["stats"]["unique_graphs"]


def _graph_breaks_that_leave_the_step_uncompiled() -> list[str]:
    """
    :return: The graph breaks so far in this process that would take part of the gradient step out of its graph: a
        tensor with a graph that outlives the backward pass (the backward pass then runs outside the forward pass's
        graph), or a call half made across a graph break (the rest of the step then runs eagerly)
    """
    symptoms = ("autograd.grad consumed returned tensor's grad_fn", "Reconstruction failure")
    return [reason for reason in counters["graph_break"] if any(symptom in reason for symptom in symptoms)]


def _group(model) -> dict:
    return model.policy.optimizer.param_groups[0]


def _implementation(model) -> tuple:
    group = _group(model)
    return group.get("fused"), group.get("foreach"), group.get("capturable")


@pytest.fixture
def fresh_compiler():
    """Forget what dynamo compiled in this process, so that the test's model compiles (and may fail) anew."""
    th._dynamo.reset()
    yield
    th._dynamo.reset()


def test_fast_mode_compiles_with_the_default_modes_hyperparameters(fresh_compiler):
    default = PPOPenalty("MlpPolicy", "CartPole-v1", seed=0, **SMALL)
    default.learn(32)
    counters.clear()
    before = _compilations()
    model = PPOPenalty("MlpPolicy", "CartPole-v1", seed=0, fast_mode=True, **SMALL)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.learn(32)
    assert not [warning for warning in caught if "fast_mode" in str(warning.message)]  # no fallback
    # Three frames, each compiled once: the rollout forward, the gradient step (its first step after a rollout included,
    # whose policy still holds the rollout's last distribution unless the update drops it first), and the passes over
    # the whole rollout (the old distribution parameters at collection, the current ones for the mean KL: one function)
    assert _compilations()[0] - before[0] == 3 and _compilations()[1] > before[1]
    assert model._fast_path is not None and model._fast_path.enabled
    # One graph per compiled function: the backward pass traced into the gradient step's graph (dynamo's settings were
    # on while it compiled; torch >= 2.13), the gradients' reset and the optimizer step outside it (dynamo would break
    # the graph there)
    if hasattr(th._dynamo.config, "trace_autograd_ops"):
        assert dict(counters["graph_break"]) == {}
    # The optimizer step runs eagerly after the compiled part, fused, with SB3's learning rate (a float)
    assert _implementation(model) == (True, None, False)
    assert _group(model)["lr"] == _group(default)["lr"]
    # Same algorithm: SB3's Adam hyperparameters (its eps=1e-5), nothing written into policy_kwargs
    for key in ("betas", "eps", "weight_decay", "amsgrad", "maximize"):
        assert _group(model)[key] == _group(default)[key], key
    assert _group(model)["eps"] == 1e-5
    assert model.policy_kwargs == {} and model.policy.optimizer_kwargs == {"eps": 1e-5}
    # The policy keeps no compiled function (it can be copied and pickled as SB3's)
    assert "forward" not in vars(model.policy)
    copy.deepcopy(model.policy)


def _env_of(space_name: str):
    return {
        "box": lambda: IdentityEnvBox(ep_length=16),
        "multi-discrete": lambda: IdentityEnvMultiDiscrete(dim=3, ep_length=16),
        "multi-binary": lambda: IdentityEnvMultiBinary(dim=3, ep_length=16),
        "dict-with-image": lambda: SimpleMultiObsEnv(random_start=True),
        "image": lambda: FakeImageEnv(screen_height=36, screen_width=36, n_channels=1, discrete=True),
    }[space_name]


def _linear(start: float, end: float):
    return lambda progress: end + (start - end) * progress


RECOMPILATION_CASES = {
    # Schedules for every coefficient, and minibatches of two sizes (48 transitions, batch 32)
    "clip-schedules-uneven-batches": (
        PPOClip,
        "CartPole-v1",
        "MlpPolicy",
        {"n_steps": 24, "batch_size": 32, "learning_rate": _linear(1e-3, 1e-4), "clip_range": _linear(0.3, 0.1)},
    ),
    "clip-value-clipping-target-kl": (
        PPOClip,
        "CartPole-v1",
        "MlpPolicy",
        {**SMALL, "clip_range_vf": _linear(0.5, 0.1), "target_kl": 1e-4, "learning_rate": 3e-3},
    ),
    # beta changes at every update (a target far below the KL)
    "penalty-gsde-adaptive-beta": (
        PPOPenalty,
        "Pendulum-v1",
        "MlpPolicy",
        {**SMALL, "use_sde": True, "sde_sample_freq": 4, "kl_target": 1e-6},
    ),
    "penalty-box": (PPOPenalty, "box", "MlpPolicy", {**SMALL, "clip_range": 0.2}),
    "penalty-multi-discrete": (PPOPenalty, "multi-discrete", "MlpPolicy", SMALL),
    "clip-multi-binary": (PPOClip, "multi-binary", "MlpPolicy", SMALL),
    "penalty-dict-with-image": (PPOPenalty, "dict-with-image", "MultiInputPolicy", SMALL),
    "clip-image": (PPOClip, "image", "CnnPolicy", SMALL),
}


@pytest.mark.parametrize("case", list(RECOMPILATION_CASES))
def test_nothing_recompiles_from_one_update_to_the_next(case):
    algo, env_id, policy, kwargs = RECOMPILATION_CASES[case]
    env = make_vec_env(env_id if env_id.endswith("-v1") else _env_of(env_id), n_envs=2, seed=0)
    model = algo(policy, env, seed=0, fast_mode=True, **kwargs)
    rollout = model.n_steps * model.n_envs
    before = _compilations()
    counters["graph_break"].clear()
    model.learn(2 * rollout)
    compiled = _compilations()
    assert compiled[0] > before[0] and compiled[1] > before[1]
    assert _graph_breaks_that_leave_the_step_uncompiled() == []
    betas, learning_rates = [], []

    def record_update(_locals, _globals) -> bool:
        if _locals["n_steps"] == 0:  # the first step of a rollout, after the last update
            betas.append(getattr(model, "beta", None))
            learning_rates.append(float(_group(model)["lr"]))
        return True

    model.learn(4 * rollout, reset_num_timesteps=False, callback=record_update)
    assert _compilations() == compiled, "an update recompiled"
    learning_rates, betas = learning_rates[1:], betas[1:]  # after each of the last 3 updates
    assert model._fast_path.enabled
    if callable(kwargs.get("learning_rate")):
        assert len(set(learning_rates)) == 3  # the schedule moved, and nothing recompiled
    if algo is PPOPenalty and model.kl_target is not None:
        assert len(set(betas)) == 3
    if "target_kl" in kwargs:
        assert model._n_updates < 6 * model.n_epochs  # the early stop ran (compiled loss, host check, eager step)


def _train_once(model, fast_mode: bool) -> tuple[dict[str, th.Tensor], dict]:
    """One train() on the model's rollout, in the given mode; the model is put back as it was afterwards."""
    policy_state = copy.deepcopy(model.policy.state_dict())
    optimizer_state = copy.deepcopy(model.policy.optimizer.state_dict())
    numpy_state = np.random.get_state()
    model.fast_mode = fast_mode
    with distribution_validation(False):  # as learn() runs train()
        model.train()
    parameters = {name: value.detach().clone() for name, value in model.policy.state_dict().items()}
    logs = dict(model.logger.name_to_value)
    model.policy.load_state_dict(policy_state)
    model.policy.optimizer.load_state_dict(optimizer_state)
    np.random.set_state(numpy_state)  # the same minibatches for the other mode
    return parameters, logs


CUDA = pytest.mark.skipif(not th.cuda.is_available(), reason="CUDA not available")


@pytest.mark.parametrize(
    "algo, env_id, kwargs",
    [
        (PPOClip, "CartPole-v1", {"clip_range_vf": 0.2, "ent_coef": 0.01}),
        (PPOPenalty, "Pendulum-v1", {"use_sde": True, "clip_range": 0.3}),
        # With target_kl (never reached here): the compiled loss, the host's check, then the eager backward pass and step
        (PPOPenalty, "CartPole-v1", {"target_kl": 10.0}),
        # CUDA graphs: the gradients that the fused optimizer step reads are outputs of a graph replay
        pytest.param(PPOPenalty, "Pendulum-v1", {"use_sde": True, "device": "cuda"}, marks=CUDA, id="cuda-graphs"),
    ],
)
def test_a_fast_update_is_the_eager_update(algo, env_id, kwargs):
    model = algo("MlpPolicy", make_vec_env(env_id, n_envs=2, seed=0), seed=0, fast_mode=True, **SMALL, **kwargs)
    model.learn(2 * model.n_steps * model.n_envs)  # compiled, and a rollout in the buffer
    if model.device.type == "cuda":
        assert counters["inductor"]["cudagraph_skips"] == 0
        assert all(parameter.grad is None for parameter in model.policy.parameters())
    fast_parameters, fast_logs = _train_once(model, fast_mode=True)
    eager_parameters, eager_logs = _train_once(model, fast_mode=False)
    start = model.policy.state_dict()
    for name, eager in eager_parameters.items():
        # float32 in another order of operations, over 8 Adam steps (which scale tiny gradients up): the updates agree
        # to within 1% (a wrong coefficient, a skipped or repeated step would differ by far more)
        eager_update, fast_update = eager - start[name], fast_parameters[name] - start[name]
        relative_difference = float((fast_update - eager_update).norm() / eager_update.norm())
        assert relative_difference < 1e-2, (name, relative_difference)
    for key in ("train/loss", "train/policy_gradient_loss", "train/value_loss", "train/entropy_loss", "train/approx_kl"):
        assert fast_logs[key] == pytest.approx(eager_logs[key], rel=1e-2, abs=1e-4), key
    if algo is PPOPenalty:
        # The mean KL of the update (a small value: compared relatively), from the compiled pass over the rollout
        assert eager_logs["train/kl"] > 1e-5
        assert fast_logs["train/kl"] == pytest.approx(eager_logs["train/kl"], rel=2e-2)


def _float64_minibatch(model):
    rollout_data = next(model.rollout_buffer.get(model.batch_size))
    return type(rollout_data)(
        *(value.double() if isinstance(value, th.Tensor) and value.is_floating_point() else value for value in rollout_data)
    )


@pytest.mark.parametrize("algo, env_id", [(PPOClip, "CartPole-v1"), (PPOPenalty, "Pendulum-v1")])
def test_the_compiled_gradient_step_is_the_eager_one_in_float64(algo, env_id, fresh_compiler, monkeypatch):
    # A rollout and an update, eagerly; then the policy in float64, and only then compiled (dynamo would not see the
    # policy's dtype change in a graph it compiled before)
    model = algo("MlpPolicy", make_vec_env(env_id, n_envs=2, seed=0), seed=0, clip_range_vf=0.2, **SMALL)
    model.learn(model.n_steps * model.n_envs)
    model.policy.double()
    # SB3 casts Box observations to float32 before the network: keep them in float64
    monkeypatch.setattr(policies, "preprocess_obs", lambda observations, *args, **kwargs: observations.double())
    model.fast_mode = True
    optimizer = model.policy.optimizer
    for state in optimizer.state.values():
        for key, value in state.items():
            if key != "step":
                state[key] = value.double()
    rollout_data = _float64_minibatch(model)
    float_scalars = model._update_scalars()
    start = copy.deepcopy(model.policy.state_dict()), copy.deepcopy(optimizer.state_dict())

    fast_path = model._fast_path_of_update()
    tensor_scalars = fast_path.as_tensors(float_scalars, th.float64)
    model._prepare_optimizer()
    compiled_step = model._step_functions(fast_path)[0]
    before = _compilations()
    with distribution_validation(False), fast_path.settings(trace_backward=True):
        compiled_steps = [compiled_step(rollout_data, tensor_scalars, True) for _ in range(3)]
    assert fast_path.enabled and _compilations()[1] > before[1]
    compiled_parameters = copy.deepcopy(model.policy.state_dict())

    model.policy.load_state_dict(start[0])
    optimizer.load_state_dict(start[1])
    model.fast_mode = False
    model._prepare_optimizer()
    with distribution_validation(False):
        eager_steps = [model._gradient_step(rollout_data, float_scalars, True) for _ in range(3)]
    # The first step starts from the same parameters: the same values up to float64 roundings
    for field in ("loss", "policy_loss", "value_loss", "entropy_loss", "clip_fraction", "approx_kl", "gradient_norm"):
        compiled, eager = getattr(compiled_steps[0], field), getattr(eager_steps[0], field)
        th.testing.assert_close(compiled, eager, rtol=1e-12, atol=1e-14, msg=lambda text, f=field: f"{f}: {text}")
    # The updates: fast mode's fused Adam computes its bias corrections from its float32 step counter (the default
    # mode's from a Python float), a relative difference of about 1e-7 of each update; anything else (a coefficient, a
    # term, a clipping) would differ by far more
    for name, eager in model.policy.state_dict().items():
        assert eager.dtype == th.float64
        eager_update, compiled_update = eager - start[0][name], compiled_parameters[name] - start[0][name]
        assert eager_update.abs().max() > 1e-6, name
        tolerance = {"rtol": 1e-5, "atol": 1e-5 * float(eager_update.abs().max())}
        th.testing.assert_close(compiled_update, eager_update, **tolerance, msg=lambda t, n=name: f"{n}: {t}")
    for compiled, eager in zip(compiled_steps[1:], eager_steps[1:], strict=True):
        th.testing.assert_close(compiled.loss, eager.loss, rtol=1e-6, atol=0.0)


def test_every_model_of_a_process_compiles():
    # dynamo keeps an entry per graph in each compiled frame's cache while its model lives; past its default limit (8)
    # it would run the step eagerly without a word. An Optuna study trains many models in one process, of other
    # architectures: networks of 10 depths, all alive, need 10 graphs of the same frames
    models, frames_compiled = [], []
    for depth in range(1, 11):
        model = PPOClip("MlpPolicy", "CartPole-v1", seed=0, fast_mode=True, policy_kwargs={"net_arch": [8] * depth}, **SMALL)
        models.append(model)
        before = _compilations()
        model.learn(32)
        frames_compiled.append(_compilations()[0] - before[0])
        assert model._fast_path.enabled
    # Every model compiles what the first did: the rollout's forward pass and the gradient step, at least
    assert frames_compiled[0] >= 2 and frames_compiled == [frames_compiled[0]] * 10, frames_compiled


def test_saved_in_fast_mode_loads_in_default_mode_and_back(tmp_path):
    model = PPOPenalty("MlpPolicy", "CartPole-v1", seed=0, fast_mode=True, **SMALL)
    model.learn(64)
    model.save(tmp_path / "model")
    with zipfile.ZipFile(tmp_path / "model.zip") as archive:
        data = json.loads(archive.read("data"))
        with archive.open("policy.optimizer.pth") as file:
            optimizer_state = th.load(file, weights_only=True)
    # No compiled object and no mode in the checkpoint: SB3's Adam settings, the learning rate as a float
    assert "_fast_path" not in data and "fast_mode" not in data
    saved_group = optimizer_state["param_groups"][0]
    assert (saved_group["fused"], saved_group["foreach"], saved_group["capturable"]) == (None, None, False)
    assert isinstance(saved_group["lr"], float)

    default = PPOPenalty.load(tmp_path / "model", env=model.get_env())
    assert not default.fast_mode
    default.learn(32)
    assert _implementation(default) == (None, True, False) and isinstance(_group(default)["lr"], float)
    default.save(tmp_path / "default")
    fast_again = PPOPenalty.load(tmp_path / "default", env=model.get_env(), fast_mode=True)
    observations = np.stack([model.observation_space.sample() for _ in range(8)])
    for name, value in default.policy.state_dict().items():
        assert th.equal(fast_again.policy.state_dict()[name], value), name
    assert fast_again.beta == default.beta
    fast_again.learn(32)
    assert fast_again._fast_path.enabled and _implementation(fast_again) == (True, None, False)
    assert np.isfinite(fast_again.predict(observations, deterministic=True)[0]).all()


def test_explicit_optimizer_implementation_wins():
    # The user's choice wins, compiled too (the optimizer step runs eagerly after the compiled part)
    chosen = PPOClip(
        "MlpPolicy", "CartPole-v1", fast_mode=True, policy_kwargs={"optimizer_kwargs": {"foreach": True}}, **SMALL
    )
    chosen.learn(32)
    assert _implementation(chosen)[:2] == (None, True) and chosen._fast_path.enabled
    # Another optimizer compiles too, fused where it has a fused implementation
    rmsprop = PPOClip("MlpPolicy", "CartPole-v1", fast_mode=True, policy_kwargs={"optimizer_class": th.optim.RMSprop}, **SMALL)
    rmsprop.learn(32)
    assert rmsprop._fast_path.enabled and _implementation(rmsprop)[:2] == (None, True)
    sgd = PPOClip("MlpPolicy", "CartPole-v1", fast_mode=True, policy_kwargs={"optimizer_class": th.optim.SGD}, **SMALL)
    sgd.learn(32)
    assert sgd._fast_path.enabled and _implementation(sgd)[:2] == (True, None)
    other = PPOClip("MlpPolicy", "CartPole-v1", policy_kwargs={"optimizer_class": th.optim.RMSprop}, **SMALL)
    other.learn(32)
    assert _group(other)["foreach"] is None


def _fallback_run(match: str, algo=PPOClip, **kwargs):
    """Train in fast mode and check: one warning matching ``match``, the eager fused path, a finite trained model."""
    model = algo("MlpPolicy", "CartPole-v1", seed=0, fast_mode=True, **SMALL, **kwargs)
    start = copy.deepcopy(model.policy.state_dict())
    with pytest.warns(UserWarning, match=match) as caught:
        model.learn(3 * 32)
    fallback_warnings = [warning for warning in caught if "fast_mode runs without compilation" in str(warning.message)]
    assert len(fallback_warnings) == 1
    assert model.num_timesteps == 96 and model._n_updates == 3 * model.n_epochs
    assert _implementation(model) == (True, None, False) and isinstance(_group(model)["lr"], float)
    parameters = model.policy.state_dict()
    assert all(th.isfinite(value).all() for value in parameters.values())
    assert any(not th.equal(parameters[name], start[name]) for name in start)
    return model


def test_fallback_without_a_cpp_compiler(fresh_compiler):
    # The process's check of vector instructions done first with the working compiler (it is cached for the process)
    for thread in fast.start_vector_instruction_checks():
        thread.join()
    # No cached kernels either: inductor has to build them
    with th._inductor.config.patch({"cpp.cxx": ("/nonexistent/c++",), "force_disable_caches": True}):
        _fallback_run(r"compiling the policy's forward pass failed with InvalidCxxCompiler: No working C\+\+ compiler found")


class BackwardCompilationFailingPPOClip(PPOClip):
    """Without a C++ compiler for the backward pass of the compiled loss (inductor compiles it at its first call)."""

    def _optimizer_step(self, loss):
        with th._inductor.config.patch({"cpp.cxx": ("/nonexistent/c++",)}):
            return super()._optimizer_step(loss)


def test_fallback_in_the_lazily_compiled_backward_pass_with_target_kl(fresh_compiler):
    # With target_kl the loss is compiled alone, and its backward pass runs from the eager optimizer step: a failure to
    # compile it there undoes the update and runs it again eagerly
    for thread in fast.start_vector_instruction_checks():
        thread.join()
    with th._inductor.config.patch({"force_disable_caches": True}):
        match = r"compiling the backward pass of the minibatch loss failed with \w+"
        model = _fallback_run(match, algo=BackwardCompilationFailingPPOClip, target_kl=10.0)
    assert not model._fast_path.enabled


@pytest.mark.parametrize("version", ["2.3.1", "1.13.0+cpu"])
def test_fallback_on_an_old_torch(monkeypatch, version):
    monkeypatch.setattr(th, "__version__", version)
    before = _compilations()
    _fallback_run(rf"torch {re.escape(version)} has no torch.compile that fast_mode can use \(it needs torch >= 2.6\)")
    assert _compilations() == before


def test_fallback_without_torch_compile(monkeypatch):
    monkeypatch.delattr(th, "compile")
    _fallback_run(r"has no torch.compile that fast_mode can use")


@th.library.custom_op("sb3_ppo_variants_tests::opaque_identity", mutates_args=())
def opaque_identity(tensor: th.Tensor) -> th.Tensor:
    """An operator without a fake (meta) implementation: dynamo cannot trace through it."""
    return tensor.clone()


def _opaque_identity_backward(ctx, grad):
    return grad


opaque_identity.register_autograd(_opaque_identity_backward)


class UntraceableExtractor(FlattenExtractor):
    def forward(self, observations: th.Tensor) -> th.Tensor:
        return opaque_identity(super().forward(observations))


def test_fallback_with_a_policy_that_cannot_be_traced(fresh_compiler):
    _fallback_run(
        r"compiling the policy's forward pass failed with \w+",
        policy_kwargs={"features_extractor_class": UntraceableExtractor},
    )


class UntraceableValueLossPPOPenalty(PPOPenalty):
    def _value_loss(self, values, rollout_data, clip_range_vf):
        return opaque_identity(F.mse_loss(rollout_data.returns, values))


class MinibatchRecordingPPOPenalty(UntraceableValueLossPPOPenalty):
    """Records the first minibatch of every pass over the rollout (outside the compiled functions)."""

    def _setup_model(self) -> None:
        super()._setup_model()
        self.first_minibatches: list[th.Tensor] = []
        buffer_get = self.rollout_buffer.get

        def get(batch_size=None):
            for index, minibatch in enumerate(buffer_get(batch_size)):
                if index == 0:
                    self.first_minibatches.append(minibatch.observations.clone())
                yield minibatch

        self.rollout_buffer.get = get


def test_fallback_during_an_update_undoes_the_attempt_and_redoes_it_eagerly(fresh_compiler):
    # The rollout forward compiles; the gradient step cannot: the first update falls back, then everything runs eagerly
    model = _fallback_run(r"compiling the gradient step failed with \w+", algo=MinibatchRecordingPPOPenalty)
    assert not model._fast_path.enabled
    assert "forward" not in vars(model.policy)
    # The attempt's pass, then the eager update's epochs, each update 2 epochs: the eager update took the same
    # minibatches as the failed attempt (the random state was restored)
    assert len(model.first_minibatches) == 1 + 3 * model.n_epochs
    assert th.equal(model.first_minibatches[0], model.first_minibatches[1])


class UntraceablePassesPPOPenalty(PPOPenalty):
    def _distribution_params_on(self, observations):
        return opaque_identity(super()._distribution_params_on(observations))


def test_fallback_in_a_pass_over_the_whole_rollout(fresh_compiler):
    # The rollout forward compiles; the pass of the old distribution parameters cannot: that pass, and everything after
    # it, runs eagerly
    match = r"compiling the distribution parameters of the rollout failed with \w+"
    model = _fallback_run(match, algo=UntraceablePassesPPOPenalty)
    assert not model._fast_path.enabled
    assert model.rollout_buffer.old_distribution_params.shape == (model.n_steps, 2)


class FailingValueLossPPOClip(PPOClip):
    def _value_loss(self, values, rollout_data, clip_range_vf):
        raise ValueError("the value loss failed")


def test_an_error_of_the_algorithm_is_not_taken_for_a_compilation_failure():
    model = FailingValueLossPPOClip("MlpPolicy", "CartPole-v1", seed=0, fast_mode=True, **SMALL)
    with pytest.raises(ValueError, match="the value loss failed"):
        model.learn(32)
    assert model._fast_path.enabled  # no fallback: the same error would stop the eager path


@CUDA
def test_cuda_graphs_fused_optimizer_and_no_host_sync():
    model = PPOPenalty("MlpPolicy", "Pendulum-v1", seed=0, device="cuda", fast_mode=True, use_sde=True, **SMALL)
    model.learn(3 * 32)
    assert model._fast_path.enabled and model._fast_path.cuda_graphs
    assert _implementation(model) == (True, None, False)
    assert all(state["step"].device.type == "cuda" for state in model.policy.optimizer.state.values())
    # The minibatch loop (the buffer's minibatches, the compiled step, the fused optimizer step) never waits for the GPU
    fast_path = model._fast_path
    step = model._step_functions(fast_path)[0]
    scalars = fast_path.as_tensors(model._update_scalars(), th.float32)
    with distribution_validation(False), fast_path.settings(trace_backward=True):
        th.cuda.set_sync_debug_mode("error")
        try:
            for rollout_data in model.rollout_buffer.get(model.batch_size):
                step(rollout_data, scalars, True)
        finally:
            th.cuda.set_sync_debug_mode("default")


@CUDA
def test_fused_adam_on_cuda_without_compilation(monkeypatch):
    # SB3 issue #1770: fused Adam built before the policy moves to the GPU; here fused is chosen at every update
    monkeypatch.setattr(fast, "compilation_unavailable_reason", lambda: "forced by the test")
    model = PPOClip("CnnPolicy", FakeImageEnv(screen_height=36, screen_width=36), device="cuda", fast_mode=True, **SMALL)
    with pytest.warns(UserWarning, match="forced by the test"):
        model.learn(64)
    assert _implementation(model) == (True, None, False)


class _InstructionSet:
    """Stands for one of inductor's vector instruction sets: its CPU flags, and a check that records its calls."""

    def __init__(self, flags: str, checked: list[str], works: bool = True) -> None:
        self.flags, self.checked, self.works = flags, checked, works

    def __str__(self) -> str:
        return self.flags

    def __bool__(self) -> bool:
        self.checked.append(self.flags)
        if not self.works:
            raise RuntimeError("the test build failed")
        return True


def test_vector_instruction_checks_run_in_background_threads(monkeypatch):
    from torch._inductor import cpu_vec_isa

    checked: list[str] = []
    uncaught: list[BaseException] = []
    monkeypatch.setattr(threading, "excepthook", lambda arguments: uncaught.append(arguments.exc_value))
    monkeypatch.setattr(cpu_vec_isa, "x86_isa_checker", lambda: ["avx2", "avx512"])
    instruction_sets = [
        _InstructionSet("avx512 avx512_vnni", checked),  # a flag that this CPU lacks: never built
        _InstructionSet("avx512", checked, works=False),
        _InstructionSet("avx2", checked),
    ]
    monkeypatch.setattr(cpu_vec_isa, "supported_vec_isa_list", instruction_sets)
    threads = fast.start_vector_instruction_checks.__wrapped__()
    for thread in threads:
        thread.join()
    # One thread per instruction set of the CPU, each running inductor's check; a failed check stays in its thread
    assert len(threads) == 2 and sorted(checked) == ["avx2", "avx512"]
    assert uncaught == []


def test_vector_instruction_checks_import_nothing_in_their_threads(tmp_path):
    # In a fresh process with an empty compilation cache (the checks build): a module first imported by a background
    # thread while the main thread imports torch's compiler can fail to import in either
    script = """
import sys, threading
imported = []
sys.addaudithook(
    lambda event, arguments: imported.append(arguments[0])
    if event == "import" and threading.current_thread() is not threading.main_thread()
    else None
)
from sb3_ppo_variants.common import fast
threads = fast.start_vector_instruction_checks()
for thread in threads:
    thread.join()
print(len(threads), sorted(set(imported)))
"""
    environment = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True, check=True)
    n_threads, imported = result.stdout.split(" ", 1)
    assert int(n_threads) >= 1 or platform.machine() not in ("x86_64", "AMD64")
    assert imported.strip() == "[]"


def test_vector_instruction_checks_start_with_a_cpu_fast_path(monkeypatch):
    started: list[bool] = []
    monkeypatch.setattr(fast, "start_vector_instruction_checks", lambda: started.append(True))
    fast.FastPath(th.device("cpu"))
    assert started == [True]
    monkeypatch.setattr(th, "__version__", "2.3.1")
    with pytest.warns(UserWarning, match="has no torch.compile"):
        fast.FastPath(th.device("cpu"))
    assert started == [True]
