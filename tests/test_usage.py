"""
Both algorithms are drop-ins for SB3's ``PPO`` in everything users do with it: environments given as ids or
vectorized (DummyVecEnv, SubprocVecEnv, VecNormalize), every policy alias and action space, gSDE, the progress
bar, TensorBoard, callbacks, evaluation, save/load, continuing training, prediction, seeding and devices.

Every test trains for a few hundred steps at most.
"""

import glob
import math
import os

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import CheckpointCallback, EvalCallback, StopTrainingOnRewardThreshold
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import (
    FakeImageEnv,
    IdentityEnv,
    IdentityEnvBox,
    IdentityEnvMultiBinary,
    IdentityEnvMultiDiscrete,
    SimpleMultiObsEnv,
)
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.policies import ActorCriticCnnPolicy, MultiInputActorCriticPolicy
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecNormalize, VecTransposeImage
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from sb3_ppo_variants import PPOClip, PPOPenalty

ALGOS = [PPOClip, PPOPenalty]
# A rollout of 32 steps per environment, two epochs of two minibatches: a few milliseconds per update.
SMALL = dict(n_steps=32, batch_size=16, n_epochs=2, device="cpu")
PENALTY_ATTRIBUTES = ("beta", "kl_target", "beta_factor", "kl_tolerance")


def make_model(algo, env="CartPole-v1", policy="MlpPolicy", **kwargs):
    """A model with the small test budget (``kwargs`` override it)."""
    return algo(policy, env, **{**SMALL, **kwargs})


def parameters(model) -> th.Tensor:
    """A detached copy of all the policy's parameters, as one flat vector."""
    return th.nn.utils.parameters_to_vector(model.policy.parameters()).detach().clone()


def assert_trained(model, before: th.Tensor, total_timesteps: int) -> None:
    """The model ran ``total_timesteps`` and its parameters moved."""
    assert model.num_timesteps >= total_timesteps
    after = parameters(model)
    assert th.isfinite(after).all()
    assert not th.equal(before, after), "training did not change the policy parameters"


def learn_and_check(model, total_timesteps: int = 64, **learn_kwargs):
    """Train ``model`` briefly and check it trained; for PPO-Penalty, check the KL and beta it logged."""
    before = parameters(model)
    model.learn(total_timesteps, **learn_kwargs)
    assert_trained(model, before, total_timesteps)
    if isinstance(model, PPOPenalty):
        # The last update's records are still in the logger (learn() dumps before each update, not after)
        kl = model.logger.name_to_value["train/kl"]
        assert math.isfinite(kl) and kl > 0.0
        assert model.logger.name_to_value["train/beta"] == model.beta
        assert isinstance(model.beta, float) and math.isfinite(model.beta) and model.beta > 0.0
    return model


def assert_same_policy(model_a, model_b) -> None:
    state_a, state_b = model_a.policy.state_dict(), model_b.policy.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert th.equal(state_a[key].cpu(), state_b[key].cpu()), key


def trained_with_seed(algo, seed: int):
    model = make_model(algo, seed=seed)
    model.learn(96)
    return model


@pytest.mark.parametrize("algo", ALGOS)
def test_env_id_string(algo):
    model = learn_and_check(make_model(algo, "CartPole-v1"))
    assert isinstance(model.get_env(), DummyVecEnv)
    assert model.n_envs == 1
    assert isinstance(model.observation_space, gym.spaces.Box)


def test_penalty_default_arguments_env_id():
    # The one-liner of the README, with SB3's other defaults (only the rollout made small)
    model = PPOPenalty("MlpPolicy", "CartPole-v1", n_steps=64, device="cpu", seed=0)
    assert (model.beta, model.kl_target, model.beta_factor, model.kl_tolerance) == (1.0, 0.01, 2.0, 1.5)
    before = parameters(model)
    model.learn(128)
    assert_trained(model, before, 128)
    # The KL of these first updates is far below kl_target / kl_tolerance: beta is halved after each of the two
    assert model.logger.name_to_value["train/kl"] < 0.01 / 1.5
    assert model.beta == 0.25
    assert model.clip_range is None


@pytest.mark.parametrize("algo", ALGOS)
def test_make_vec_env_dummy(algo):
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0, vec_env_cls=DummyVecEnv)
    model = learn_and_check(make_model(algo, env, n_steps=16))
    assert model.get_env() is env
    assert model.n_envs == 2
    assert (model.rollout_buffer.buffer_size, model.rollout_buffer.n_envs) == (16, 2)


def test_make_vec_env_subproc():
    # One set of worker processes for both algorithms: starting them (importing torch) is the slow part
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0, vec_env_cls=SubprocVecEnv, vec_env_kwargs=dict(start_method="spawn"))
    try:
        for algo in ALGOS:
            model = learn_and_check(make_model(algo, env, n_steps=16))
            assert model.get_env() is env
            assert model.n_envs == 2
    finally:
        env.close()
    assert env.closed


@pytest.mark.parametrize("algo", ALGOS)
def test_vec_normalize(algo, tmp_path):
    env = VecNormalize(make_vec_env("CartPole-v1", n_envs=2, seed=0), norm_obs=True, norm_reward=True)
    model = learn_and_check(make_model(algo, env, n_steps=16))
    assert model.get_vec_normalize_env() is env
    assert env.obs_rms.count > 64  # updated at every step
    # The usual way of saving the statistics with the model
    model.save(tmp_path / "model.zip")
    env.save(str(tmp_path / "vec_normalize.pkl"))
    eval_env = VecNormalize.load(str(tmp_path / "vec_normalize.pkl"), make_vec_env("CartPole-v1", n_envs=1, seed=1))
    eval_env.training, eval_env.norm_reward = False, False
    loaded = algo.load(tmp_path / "model.zip", env=eval_env, device="cpu")
    assert loaded.get_vec_normalize_env() is eval_env
    np.testing.assert_allclose(eval_env.obs_rms.mean, env.obs_rms.mean)


@pytest.mark.parametrize("algo", ALGOS)
def test_cnn_policy(algo):
    env = FakeImageEnv(screen_height=36, screen_width=36, n_channels=3, discrete=True)
    model = learn_and_check(
        make_model(algo, env, policy="CnnPolicy", policy_kwargs=dict(features_extractor_kwargs=dict(features_dim=32)))
    )
    assert isinstance(model.policy, ActorCriticCnnPolicy)
    # SB3 transposes HWC images to CHW for the CNN, the user keeps predicting on HWC observations
    assert isinstance(model.get_env(), VecTransposeImage)
    observation, _ = env.reset(seed=0)
    action, _ = model.predict(observation, deterministic=True)
    assert env.action_space.contains(int(action))


@pytest.mark.parametrize("algo", ALGOS)
def test_multi_input_policy(algo):
    env = SimpleMultiObsEnv(random_start=False)
    model = learn_and_check(make_model(algo, env, policy="MultiInputPolicy"))
    assert isinstance(model.policy, MultiInputActorCriticPolicy)
    observation, _ = env.reset()
    action, _ = model.predict(observation, deterministic=True)
    assert env.action_space.contains(int(action))


@pytest.mark.parametrize("algo", ALGOS)
def test_sde(algo):
    model = make_model(algo, "Pendulum-v1", use_sde=True, sde_sample_freq=4, seed=0)
    assert model.policy.use_sde
    learn_and_check(model)
    assert "train/std" in model.logger.name_to_value
    observation = model.get_env().reset()
    action, _ = model.predict(observation, deterministic=True)
    assert action.shape == (1, 1)
    assert np.all(np.abs(action) <= 2.0)


@pytest.mark.filterwarnings("ignore::tqdm.TqdmExperimentalWarning")
@pytest.mark.parametrize("algo", ALGOS)
def test_progress_bar(algo):
    learn_and_check(make_model(algo), progress_bar=True)


@pytest.mark.parametrize("algo", ALGOS)
def test_tensorboard(algo, tmp_path):
    model = make_model(algo, tensorboard_log=str(tmp_path))
    learn_and_check(model, 96)  # three updates: the first two are dumped
    run_dir = tmp_path / f"{algo.__name__}_1"
    event_files = glob.glob(str(run_dir / "events.out.tfevents.*"))
    assert event_files, f"no event file in {sorted(os.listdir(tmp_path))}"
    accumulator = EventAccumulator(str(run_dir))
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    assert {"train/loss", "train/value_loss", "train/policy_gradient_loss", "time/fps"} <= tags
    if algo is PPOPenalty:
        assert {"train/beta", "train/kl"} <= tags
        betas = [event.value for event in accumulator.Scalars("train/beta")]
        assert all(math.isfinite(beta) and beta > 0 for beta in betas)
        assert all(math.isfinite(event.value) for event in accumulator.Scalars("train/kl"))
    else:
        assert "train/clip_range" in tags
        assert "train/beta" not in tags


@pytest.mark.parametrize("algo", ALGOS)
def test_eval_and_checkpoint_callbacks(algo, tmp_path):
    eval_env = make_vec_env("CartPole-v1", n_envs=1, seed=1)
    eval_callback = EvalCallback(
        eval_env,
        n_eval_episodes=2,
        eval_freq=32,
        best_model_save_path=str(tmp_path / "best"),
        log_path=str(tmp_path / "logs"),
        deterministic=True,
    )
    checkpoint_callback = CheckpointCallback(save_freq=32, save_path=str(tmp_path / "checkpoints"), name_prefix="rl_model")
    model = make_model(algo, make_vec_env("CartPole-v1", n_envs=1, seed=0))
    learn_and_check(model, 64, callback=[eval_callback, checkpoint_callback])

    assert len(eval_callback.evaluations_timesteps) == 2
    assert np.isfinite(eval_callback.last_mean_reward)
    assert os.path.isfile(tmp_path / "best" / "best_model.zip")
    assert os.path.isfile(tmp_path / "logs" / "evaluations.npz")
    for steps in (32, 64):
        checkpoint = tmp_path / "checkpoints" / f"rl_model_{steps}_steps.zip"
        assert os.path.isfile(checkpoint)
    loaded = algo.load(tmp_path / "checkpoints" / "rl_model_32_steps.zip", device="cpu")
    assert type(loaded) is algo
    assert loaded.num_timesteps == 32


@pytest.mark.parametrize("algo", ALGOS)
def test_stop_training_on_reward_threshold(algo):
    stop_callback = StopTrainingOnRewardThreshold(reward_threshold=-1000.0, verbose=0)
    eval_callback = EvalCallback(
        make_vec_env("CartPole-v1", n_envs=1, seed=1),
        callback_on_new_best=stop_callback,
        n_eval_episodes=1,
        eval_freq=48,
    )
    model = make_model(algo, make_vec_env("CartPole-v1", n_envs=1, seed=0))
    total_timesteps = 1000
    model.learn(total_timesteps, callback=eval_callback)
    assert model.num_timesteps == 48
    assert model.num_timesteps < total_timesteps


@pytest.mark.parametrize("algo", ALGOS)
def test_function_callback(algo):
    # SB3 accepts a plain function (locals, globals) -> bool as callback; False stops training
    calls = []

    def callback(locals_, globals_) -> bool:
        assert locals_["self"] is model
        calls.append(locals_["self"].num_timesteps)
        return len(calls) < 5

    model = make_model(algo)
    model.learn(320, callback=callback)
    assert calls == [1, 2, 3, 4, 5]
    assert model.num_timesteps == 5
    if algo is PPOPenalty:
        # A rollout the callback cut short is not trained on: no old distribution was recorded for it
        assert model.rollout_buffer.old_distribution_params is None


@pytest.mark.parametrize("algo", ALGOS)
def test_evaluate_policy(algo):
    model = make_model(algo, seed=0)
    model.learn(64)
    mean_reward, std_reward = evaluate_policy(model, make_vec_env("CartPole-v1", n_envs=1, seed=1), n_eval_episodes=3)
    assert np.isfinite(mean_reward) and np.isfinite(std_reward)
    assert mean_reward >= 1.0  # CartPole gives +1 per step
    assert std_reward >= 0.0
    rewards, lengths = evaluate_policy(model, model.get_env(), n_eval_episodes=2, return_episode_rewards=True)
    assert len(rewards) == len(lengths) == 2


@pytest.mark.parametrize("algo", ALGOS)
def test_save_load(algo, tmp_path):
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    model = make_model(algo, env, seed=0, n_steps=32)
    model.learn(192)  # three updates
    if algo is PPOPenalty:
        assert model.beta != 1.0, "beta should have adapted during training"
    observations = env.reset()
    actions, _ = model.predict(observations, deterministic=True)
    path = tmp_path / "model.zip"
    model.save(path)
    assert os.path.isfile(path)

    def check_same(loaded) -> None:
        assert type(loaded) is algo
        assert_same_policy(model, loaded)
        assert loaded.num_timesteps == model.num_timesteps
        assert loaded.n_steps == model.n_steps and loaded.batch_size == model.batch_size and loaded.n_epochs == model.n_epochs
        np.testing.assert_array_equal(loaded.predict(observations, deterministic=True)[0], actions)
        if algo is PPOPenalty:
            for name in PENALTY_ATTRIBUTES:
                assert getattr(loaded, name) == getattr(model, name), name
            assert isinstance(loaded.beta, float)
            assert loaded.clip_range is None
        else:
            assert loaded.clip_range(1.0) == model.clip_range(1.0)

    # Without an environment
    loaded = algo.load(path)
    check_same(loaded)
    assert loaded.get_env() is None

    # With an environment, and training goes on
    loaded = algo.load(path, env=make_vec_env("CartPole-v1", n_envs=2, seed=1), device="cpu")
    check_same(loaded)
    assert loaded.get_env().num_envs == 2
    learn_and_check(loaded, 64, reset_num_timesteps=False)
    assert loaded.num_timesteps == model.num_timesteps + 64

    # On a given device
    loaded = algo.load(path, device="cpu")
    check_same(loaded)
    assert loaded.device.type == "cpu"
    assert all(parameter.device.type == "cpu" for parameter in loaded.policy.parameters())

    # Overriding saved attributes: a learning rate of 0 freezes the parameters
    custom_objects = {"learning_rate": 0.0}
    if algo is PPOPenalty:
        custom_objects.update(beta=0.25, kl_target=0.02)
    loaded = algo.load(path, env=make_vec_env("CartPole-v1", n_envs=2, seed=1), custom_objects=custom_objects, device="cpu")
    assert loaded.learning_rate == 0.0
    assert loaded.lr_schedule(1.0) == 0.0
    if algo is PPOPenalty:
        assert loaded.beta == 0.25 and loaded.kl_target == 0.02
    before = parameters(loaded)
    loaded.learn(64, reset_num_timesteps=False)
    assert loaded.num_timesteps == model.num_timesteps + 64
    assert loaded.policy.optimizer.param_groups[0]["lr"] == 0.0
    assert th.equal(parameters(loaded), before)

    # Loading only the parameters into a new model
    new_model = make_model(algo, make_vec_env("CartPole-v1", n_envs=2, seed=2), seed=1)
    new_model.set_parameters(str(path))
    assert_same_policy(model, new_model)


@pytest.mark.parametrize("algo", ALGOS)
def test_load_sb3_ppo_checkpoint(algo, tmp_path):
    # A model trained with SB3's PPO can be loaded and trained further with either algorithm
    env = make_vec_env("CartPole-v1", n_envs=1, seed=0)
    ppo = PPO("MlpPolicy", env, seed=0, **SMALL)
    ppo.learn(64)
    ppo.save(tmp_path / "ppo.zip")
    loaded = algo.load(tmp_path / "ppo.zip", env=env, device="cpu")
    assert_same_policy(ppo, loaded)
    observations = env.reset()
    np.testing.assert_array_equal(
        loaded.predict(observations, deterministic=True)[0], ppo.predict(observations, deterministic=True)[0]
    )
    learn_and_check(loaded, 64, reset_num_timesteps=False)
    assert loaded.num_timesteps == 128


@pytest.mark.parametrize("algo", ALGOS)
def test_set_env_and_continue_learning(algo):
    model = make_model(algo, make_vec_env("CartPole-v1", n_envs=1, seed=0))
    model.learn(64)
    assert model.num_timesteps == 64
    new_env = make_vec_env("CartPole-v1", n_envs=1, seed=1)
    model.set_env(new_env)
    assert model.get_env() is new_env
    before = parameters(model)
    model.learn(64, reset_num_timesteps=False)
    assert model.num_timesteps == 128
    assert not th.equal(parameters(model), before)
    # And the default resets the counter
    model.learn(32)
    assert model.num_timesteps == 32


@pytest.mark.parametrize("algo", ALGOS)
def test_predict(algo):
    env = make_vec_env("CartPole-v1", n_envs=4, seed=0)
    model = make_model(algo, env, n_steps=16, seed=0)
    model.learn(64)
    observations = env.reset()
    # Vectorized batch
    actions, state = model.predict(observations, deterministic=True)
    assert state is None
    assert actions.shape == (4,)
    assert all(env.action_space.contains(int(action)) for action in actions)
    np.testing.assert_array_equal(model.predict(observations, deterministic=True)[0], actions)
    # A single observation gives the action of its row in the batch
    single_action, _ = model.predict(observations[0], deterministic=True)
    assert np.ndim(single_action) == 0
    assert int(single_action) == int(actions[0])
    # Stochastic actions are valid too
    stochastic_actions, _ = model.predict(observations, deterministic=False)
    assert stochastic_actions.shape == (4,)


@pytest.mark.parametrize("algo", ALGOS)
def test_deterministic_training(algo):
    model_a = trained_with_seed(algo, seed=3)
    model_b = trained_with_seed(algo, seed=3)
    assert_same_policy(model_a, model_b)
    if algo is PPOPenalty:
        assert model_a.beta == model_b.beta
    model_c = trained_with_seed(algo, seed=4)
    assert not th.equal(parameters(model_a), parameters(model_c))


@pytest.mark.skipif(not th.cuda.is_available(), reason="CUDA not available")
@pytest.mark.parametrize("algo", ALGOS)
def test_cuda(algo, tmp_path):
    model = make_model(algo, device="cuda", seed=0)
    assert model.device.type == "cuda"
    learn_and_check(model)
    assert all(parameter.device.type == "cuda" for parameter in model.policy.parameters())
    model.save(tmp_path / "model.zip")
    loaded = algo.load(tmp_path / "model.zip", device="cpu")
    assert loaded.device.type == "cpu"
    assert_same_policy(model, loaded)


@pytest.mark.parametrize("algo", ALGOS)
def test_device_auto(algo):
    model = make_model(algo, device="auto")
    expected = "cuda" if th.cuda.is_available() else "cpu"
    assert model.device.type == expected
    assert next(model.policy.parameters()).device.type == expected
    learn_and_check(model, 32)


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize(
    "env_class, env_kwargs",
    [
        (IdentityEnv, dict(dim=2)),
        (IdentityEnvBox, dict(eps=0.5)),
        (IdentityEnvMultiDiscrete, dict(dim=2)),
        (IdentityEnvMultiBinary, dict(dim=2)),
    ],
    ids=["Discrete", "Box", "MultiDiscrete", "MultiBinary"],
)
def test_action_spaces(algo, env_class, env_kwargs):
    env = env_class(ep_length=16, **env_kwargs)
    model = learn_and_check(make_model(algo, env, seed=0))
    assert type(model.action_space) is type(env.action_space)
    observation, _ = env.reset(seed=0)
    action, _ = model.predict(observation, deterministic=True)
    assert np.shape(action) == env.action_space.shape
