"""rl_zoo3 integration: registration, the shipped YAML files, search spaces and the command line."""

import argparse
import os
import zipfile
from pathlib import Path

import gymnasium as gym
import optuna
import pytest
import yaml
from rl_zoo3.hyperparams_opt import HYPERPARAMS_CONVERTER, HYPERPARAMS_SAMPLER
from rl_zoo3.utils import ALGOS, linear_schedule
from test_regression import SMALL, _assert_same_training

from sb3_ppo_variants import PPOClip, PPOPenalty
from sb3_ppo_variants.zoo import register_algorithms, zoo_config_path
from sb3_ppo_variants.zoo.cli import main, zoo_arguments
from sb3_ppo_variants.zoo.experiment import ZOO_PPO_HYPERPARAMETERS
from sb3_ppo_variants.zoo.registration import policy_kwargs_dict
from sb3_ppo_variants.zoo.report import format_python, tuned_zoo_entry
from sb3_ppo_variants.zoo.search_spaces import (
    INITIAL_BETA_RANGE,
    KL_TARGET_RANGE,
    convert_ppo_penalty_params,
    sample_ppo_penalty_params,
)

REPOSITORY = Path(__file__).resolve().parent.parent
REQUIRED_ENVS = [
    "CartPole-v1",
    "Acrobot-v1",
    "MountainCar-v0",
    "MountainCarContinuous-v0",
    "Pendulum-v1",
    "LunarLander-v3",
    "LunarLanderContinuous-v3",
    "BipedalWalker-v3",
    "HalfCheetah-v5",
    "Hopper-v5",
    "Walker2d-v5",
    "Swimmer-v5",
    "InvertedPendulum-v5",
    "InvertedDoublePendulum-v5",
    "Reacher-v5",
    "Ant-v5",
]


def _entries(algo: str) -> dict:
    with open(zoo_config_path(algo)) as file:
        return yaml.safe_load(file)


def test_registration():
    register_algorithms()
    assert ALGOS["ppo_clip"] is PPOClip and ALGOS["ppo_penalty"] is PPOPenalty
    assert HYPERPARAMS_SAMPLER["ppo_penalty"] is sample_ppo_penalty_params
    assert HYPERPARAMS_CONVERTER["ppo_penalty"] is convert_ppo_penalty_params


@pytest.mark.parametrize("algo", ["ppo_clip", "ppo_penalty"])
def test_yaml_covers_required_envs_and_is_the_repository_file(algo):
    assert zoo_config_path(algo).read_text() == (REPOSITORY / "zoo_configs" / f"{algo}.yml").read_text()
    entries = _entries(algo)
    assert set(REQUIRED_ENVS) <= set(entries)
    for env_id, entry in entries.items():
        # rl_zoo3 cannot read `clip_range: null`
        assert entry.get("clip_range", 0.2) is not None, env_id
        assert entry["policy"] == "MlpPolicy", env_id


def test_every_penalty_entry_says_where_it_comes_from():
    text = zoo_config_path("ppo_penalty").read_text()
    blocks = text.split("\n\n")
    for env_id in REQUIRED_ENVS:
        block = next(block for block in blocks if f"\n{env_id}:" in f"\n{block}")
        assert "# Tuned: study" in block or "not yet tuned" in block or "<<: *" in block, env_id


def _zoo_ppo_entries() -> dict:
    with open(ZOO_PPO_HYPERPARAMETERS) as file:
        return yaml.safe_load(file)


# Envs of rl_zoo3's ppo.yml that no installable package provides with this gymnasium
UNAVAILABLE_ZOO_ENVS = {
    "MinitaurBulletEnv-v0": "not in pybullet_envs_gymnasium (PyBullet's Gymnasium port)",
    "MinitaurBulletDuckEnv-v0": "not in pybullet_envs_gymnasium (PyBullet's Gymnasium port)",
    "HumanoidStandup-v2": "a mujoco-py (v2) env, moved out of gymnasium",
    "InvertedDoublePendulum-v2": "a mujoco-py (v2) env, moved out of gymnasium",
    "InvertedPendulum-v2": "a mujoco-py (v2) env, moved out of gymnasium",
    "Reacher-v2": "a mujoco-py (v2) env, moved out of gymnasium",
}
# The zoo's "atari" entry serves every Atari game, its "default" entry any env it does not list
ZOO_ENTRY_EXAMPLES = {"atari": "PongNoFrameskip-v4", "default": "FrozenLake-v1"}
ZOO_ONLY_ENVS = sorted(
    ZOO_ENTRY_EXAMPLES.get(key, key) for key in set(_zoo_ppo_entries()) - set(REQUIRED_ENVS) - set(UNAVAILABLE_ZOO_ENVS)
)


def _env_available(env_id: str) -> None:
    try:
        gym.make(env_id).close()
    except gym.error.DependencyNotInstalled as error:
        pytest.skip(f"{env_id} needs an extra that is not installed: {error}")


@pytest.mark.parametrize("algo", ["ppo_clip", "ppo_penalty"])
@pytest.mark.parametrize("env_id", REQUIRED_ENVS)
def test_every_entry_trains(algo, env_id, tmp_path, monkeypatch):
    """Each YAML entry, through the zoo's own preprocessing, builds its model and trains a few hundred steps."""
    _env_available(env_id)
    monkeypatch.chdir(tmp_path)
    # One small rollout instead of the entry's (up to 32 envs x 2048 steps); everything else is the entry's
    arguments = ["train", "--algo", algo, "--env", env_id, "-n", "128", "-f", "logs", "--seed", "0", "--eval-freq", "-1"]
    main([*arguments, "--num-threads", "1", "--verbose", "0", "-params", "n_envs:2", "n_steps:64", "batch_size:32"])
    model_path = tmp_path / "logs" / algo / f"{env_id}_1" / f"{env_id}.zip"
    assert model_path.exists()
    model = (PPOClip if algo == "ppo_clip" else PPOPenalty).load(model_path)
    assert model.num_timesteps == 128
    # The zoo writes the hyperparameters it used as an OrderedDict
    saved = yaml.load((tmp_path / "logs" / algo / f"{env_id}_1" / env_id / "config.yml").read_text(), Loader=yaml.UnsafeLoader)
    assert dict(saved)["n_steps"] == 64 and dict(saved)["policy"] == "MlpPolicy"


def _train_briefly(
    algo: str, env_id: str, *hyperparameters: str, options: tuple[str, ...] = ()
) -> tuple[Path, PPOClip | PPOPenalty]:
    """Train through the command line with one small rollout; :return: the run's saved config.yml, and its model"""
    arguments = ["train", "--algo", algo, "--env", env_id, "-n", "128", "-f", "logs", "--seed", "0", "--eval-freq", "-1"]
    arguments += ["--num-threads", "1", "--verbose", "0", *options]
    main([*arguments, "-params", "n_envs:2", "n_steps:64", "batch_size:32", *hyperparameters])
    model_path = Path("logs") / algo / f"{env_id}_1" / f"{env_id}.zip"
    assert model_path.exists()
    model = (PPOClip if algo == "ppo_clip" else PPOPenalty).load(model_path)
    assert model.num_timesteps == 128
    return model_path.parent / env_id / "config.yml", model


def _saved_hyperparameters(config: Path) -> dict:
    # The zoo writes the hyperparameters it used as an OrderedDict
    return dict(yaml.load(config.read_text(), Loader=yaml.UnsafeLoader))


@pytest.mark.parametrize("algo", ["ppo_clip", "ppo_penalty"])
@pytest.mark.parametrize("env_id", ZOO_ONLY_ENVS)
def test_every_env_of_the_zoos_ppo_file_trains(algo, env_id, tmp_path, monkeypatch):
    """Envs without an entry in zoo_configs/ train with rl_zoo3's PPO entry (PPOPenalty: without its clipping)."""
    monkeypatch.chdir(tmp_path)
    zoo_entries = _zoo_ppo_entries()
    zoo_key = next((key for key, example in ZOO_ENTRY_EXAMPLES.items() if example == env_id), env_id)
    if algo == "ppo_penalty":
        with pytest.warns(UserWarning, match=f"{env_id} has no entry in ppo_penalty.yml: PPOPenalty trains with rl_zoo3"):
            config, model = _train_briefly(algo, env_id)
        saved = _saved_hyperparameters(config)
        assert "clip_range" not in saved and model.clip_range is None  # trained without clipping, as saved
    else:
        config, model = _train_briefly(algo, env_id)
        saved = _saved_hyperparameters(config)
        assert saved.get("clip_range") == zoo_entries[zoo_key].get("clip_range")
    for key, value in zoo_entries[zoo_key].items():
        if key not in ("n_envs", "n_steps", "batch_size", "n_timesteps", "clip_range"):
            assert saved[key] == value, key


def test_zoo_ppo_entry_keeps_the_users_clip_range_for_penalty(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match="untuned for PPOPenalty"):
        config, model = _train_briefly("ppo_penalty", "Ant-v4", "clip_range:0.3")
    assert _saved_hyperparameters(config)["clip_range"] == 0.3 and model.clip_range(1.0) == 0.3


def test_a_users_own_file_is_not_completed_from_the_zoos(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    conf = tmp_path / "mine.yml"
    conf.write_text("CartPole-v1:\n  policy: MlpPolicy\n  n_timesteps: 1000\n")
    with pytest.raises(ValueError, match="Hyperparameters not found for ppo_clip-Pendulum-v1"):
        main(["train", "--algo", "ppo_clip", "--env", "Pendulum-v1", "-f", "logs", "--conf-file", str(conf)])
    # ...but this package's own file, however it is spelled, is
    with pytest.warns(UserWarning, match="untuned for PPOPenalty"):
        shipped = os.path.relpath(zoo_config_path("ppo_penalty"), tmp_path)
        _train_briefly("ppo_penalty", "Ant-v4", options=("--conf-file", shipped))


@pytest.mark.parametrize("algo", ["ppo_clip", "ppo_penalty"])
def test_lin_schedules_with_an_uneven_budget_end_with_the_model_saved(algo, tmp_path, monkeypatch):
    """1000 steps is not a multiple of the 8 x 32 rollout: the last one overshoots, the lin_ schedules go below 0."""
    monkeypatch.chdir(tmp_path)
    conf = tmp_path / "conf.yml"
    conf.write_text(
        "CartPole-v1:\n  policy: MlpPolicy\n  n_timesteps: 1000\n  n_envs: 8\n  n_steps: 32\n  batch_size: 256\n"
        "  n_epochs: 4\n  learning_rate: lin_0.001\n  clip_range: lin_0.2\n"
    )
    arguments = ["--algo", algo, "--env", "CartPole-v1", "-f", "logs", "--seed", "0", "--eval-freq", "-1", "--verbose", "0"]
    main(["train", *arguments, "--num-threads", "1", "--conf-file", str(conf)])
    model_path = tmp_path / "logs" / algo / "CartPole-v1_1" / "CartPole-v1.zip"
    model = (PPOClip if algo == "ppo_clip" else PPOPenalty).load(model_path)
    assert model.num_timesteps == 1024
    assert model._current_progress_remaining < 0
    assert model.clip_range(model._current_progress_remaining) < 0


def test_ppo_clip_file_holds_the_zoos_ppo_values():
    """ppo_clip.yml: rl_zoo3's PPO entries (v4 ones for the v5 MuJoCo tasks), and the paper's for three tasks."""
    zoo_entries = _zoo_ppo_entries()
    paper_settings = {"InvertedPendulum-v5", "InvertedDoublePendulum-v5", "Reacher-v5"}
    for env_id, entry in _entries("ppo_clip").items():
        if env_id in paper_settings:
            continue
        zoo_entry = dict(zoo_entries[env_id if env_id in zoo_entries else env_id.replace("-v5", "-v4")])
        entry = dict(entry)
        for values in (entry, zoo_entry):
            if "policy_kwargs" in values:
                values["policy_kwargs"] = policy_kwargs_dict(values["policy_kwargs"])
        assert entry == zoo_entry, env_id


def test_wheel_ships_the_yaml_files(tmp_path):
    """After a normal (non-editable) install, the YAML files are package data."""
    import subprocess
    import sys

    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(REPOSITORY)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("sb3_ppo_variants-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "sb3_ppo_variants/zoo_configs/ppo_clip.yml" in names
    assert "sb3_ppo_variants/zoo_configs/ppo_penalty.yml" in names


def test_penalty_search_space():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen_clipping = set()
    for _ in range(12):
        trial = study.ask()
        sampled = sample_ppo_penalty_params(trial, 1, 1, {})
        assert KL_TARGET_RANGE[0] <= sampled["kl_target"] <= KL_TARGET_RANGE[1]
        assert INITIAL_BETA_RANGE[0] <= sampled["beta"] <= INITIAL_BETA_RANGE[1]
        # Without clipping, clip_range=None also overrides a YAML clip range
        assert (sampled["clip_range"] is not None) == trial.params["combine_clipping"]
        seen_clipping.add(trial.params["combine_clipping"])
        # Loading a trial (--trial-id) converts its recorded parameters: the same hyperparameters
        assert convert_ppo_penalty_params(trial.params) == sampled
        assert {"gamma", "gae_lambda", "batch_size", "n_steps", "learning_rate", "policy_kwargs"} <= set(sampled)
        study.tell(trial, 0.0)
    assert seen_clipping == {False, True}


def _as_zoo_reads_them(args: list[str]) -> argparse.Namespace:
    """The flags concerned, parsed the way rl_zoo3's train() parser does (last value wins, abbreviations allowed)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--algo", default="ppo")
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("-n", "--n-timesteps", type=int, default=-1)
    parser.add_argument("--n-trials", type=int, default=500)
    parser.add_argument("--n-evaluations", type=int, default=None)
    parser.add_argument("-optimize", "--optimize-hyperparameters", action="store_true")
    parser.add_argument("-P", "--progress", action="store_true")
    parser.add_argument("-conf", "--conf-file", default=None)
    return parser.parse_args(args)


@pytest.mark.parametrize(
    "command, args, expected",
    [
        ("train", ["--env", "Pendulum-v1"], {"algo": "ppo_penalty", "env": "Pendulum-v1", "optimize_hyperparameters": False}),
        ("tune", [], {"algo": "ppo_penalty", "n_trials": 20, "n_timesteps": 20000, "n_evaluations": 4, "progress": True}),
        # The user's values win, in any spelling argparse accepts
        ("tune", ["--algo=ppo_clip", "-n5000", "--n-trials", "7"], {"algo": "ppo_clip", "n_timesteps": 5000, "n_trials": 7}),
        (
            "tune",
            ["--alg", "ppo_clip", "--n-trial", "3"],
            {"algo": "ppo_clip", "n_trials": 3, "optimize_hyperparameters": True},
        ),
        ("train", ["--algo", "ppo"], {"algo": "ppo", "conf_file": None}),  # the zoo's algorithms keep the zoo's files
        ("train", ["-conf", "my.yml"], {"conf_file": "my.yml"}),
        ("train", ["--conf", "my.yml", "--algo", "ppo_clip"], {"conf_file": "my.yml", "algo": "ppo_clip"}),
    ],
)
def test_zoo_arguments(command, args, expected):
    parsed = vars(_as_zoo_reads_them(zoo_arguments(command, args)))
    assert {key: parsed[key] for key in expected} == expected
    if parsed["algo"] in ("ppo_clip", "ppo_penalty") and "conf_file" not in expected:
        assert parsed["conf_file"] == str(zoo_config_path(parsed["algo"]))


def test_cli_without_command_prints_usage(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    assert "sb3-ppo-variants tune" in capsys.readouterr().out


def test_tuned_entry_merges_yaml_and_trial():
    import torch.nn as nn

    yaml_entry = {"n_envs": 8, "learning_rate": "lin_0.001", "clip_range": 0.2, "policy_kwargs": "dict(log_std_init=-2)"}
    yaml_entry["fast_mode"] = True  # `tune -params fast_mode:True`: how the trials ran, not a tuned value
    tuned = {"learning_rate": 3e-4, "policy_kwargs": {"net_arch": {"pi": [64], "vf": [64]}, "activation_fn": nn.ReLU}}
    entry = tuned_zoo_entry(yaml_entry, {**tuned, "clip_range": None})
    assert entry == {
        "learning_rate": 3e-4,
        "n_envs": 8,
        "policy_kwargs": "dict(log_std_init=-2, net_arch=dict(pi=[64], vf=[64]), activation_fn=nn.ReLU)",
    }
    assert eval(entry["policy_kwargs"], {"nn": nn}) == {"log_std_init": -2, **tuned["policy_kwargs"]}
    assert format_python([1, "a"]) == "[1, 'a']"


def test_train_then_enjoy(tmp_path, monkeypatch, capsys):
    """`sb3-ppo-variants enjoy` loads what `train` saved (rl_zoo3's enjoy with our algorithms registered)."""
    monkeypatch.chdir(tmp_path)
    main(["train", "--algo", "ppo_clip", "--env", "CartPole-v1", "-n", "256", "-f", "logs", "--eval-freq", "-1"])
    capsys.readouterr()
    main(
        ["enjoy", "--algo", "ppo_clip", "--env", "CartPole-v1", "-f", "logs", "--no-render", "-n", "300", "--num-threads", "1"]
    )
    output = capsys.readouterr().out
    assert "Mean reward:" in output and "Mean episode length:" in output


def test_ppo_clip_matches_sb3_ppo_on_zoo_schedules_with_an_overshooting_budget():
    """rl_zoo3's lin_<x> schedules are not clamped: the last rollout overshoots 200 steps (4 x 64 = 256), the last
    update runs at progress_remaining -0.28 with negative values, as in SB3's PPO, and the run is bit for bit SB3's."""
    case = {"env_id": "CartPole-v1", "n_envs": 2, "policy": "MlpPolicy", "timesteps": 200}
    schedules = {"learning_rate": linear_schedule(1e-3), "clip_range": linear_schedule(0.2)}
    assert schedules["clip_range"](-0.28) < 0
    _assert_same_training({**SMALL, "n_steps": 32, **case, **schedules})
