"""
Checkpoints travel both ways: SB3's PPO checkpoints load into both classes (see test_usage.py), and a checkpoint of
either class loads with SB3's ``PPO.load`` where this package cannot be imported (a deployment machine), with
identical predictions; PPOClip's trains on there.
"""

import base64
import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from stable_baselines3.common.env_util import make_vec_env

from sb3_ppo_variants import PPOClip, PPOPenalty

# Runs SB3 alone: any import of this package fails, and so does any object of the checkpoint that needs it
WITHOUT_THIS_PACKAGE = """
import importlib.abc, json, sys, warnings

class BlockThisPackage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "sb3_ppo_variants" or name.startswith("sb3_ppo_variants."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)")
        return None

sys.meta_path.insert(0, BlockThisPackage())
import numpy as np
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

path, env_id, train = sys.argv[1], sys.argv[2], sys.argv[3] == "train"
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    model = PPO.load(path, device="cpu")
observations = np.load(path + ".observations.npy")
actions, _ = model.predict(observations, deterministic=True)
np.save(path + ".sb3_actions.npy", actions)
model.save(path + ".saved_by_sb3.zip")
if train:
    model.set_env(make_vec_env(env_id, n_envs=2, seed=1))
    model.learn(64, reset_num_timesteps=False)
print(json.dumps({
    "warnings": [str(warning.message) for warning in caught],
    "num_timesteps": model.num_timesteps,
    "clip_range": model.clip_range(1.0),
    "loaded": "sb3_ppo_variants" in sys.modules,
}))
"""

CASES = [
    (PPOClip, "CartPole-v1", {}),
    (PPOClip, "Pendulum-v1", {"use_sde": True, "clip_range_vf": 0.2}),
    (PPOPenalty, "CartPole-v1", {}),
    (PPOPenalty, "Pendulum-v1", {"clip_range": 0.3}),
    (PPOPenalty, "Pendulum-v1", {"fast_mode": True}),
]


def _load_with_sb3_alone(path, env_id: str, train: bool) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_THIS_PACKAGE, str(path), env_id, "train" if train else "predict"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("algo, env_id, kwargs", CASES, ids=[f"{a.__name__}-{e}-{sorted(k)}" for a, e, k in CASES])
def test_checkpoint_loads_in_sb3_without_this_package(algo, env_id, kwargs, tmp_path):
    env = make_vec_env(env_id, n_envs=2, seed=0)
    model = algo("MlpPolicy", env, n_steps=32, batch_size=32, n_epochs=2, seed=0, device="cpu", **kwargs)
    model.learn(128)
    path = tmp_path / "model.zip"
    model.save(path)
    observations = np.stack([env.observation_space.sample() for _ in range(16)])
    np.save(f"{path}.observations.npy", observations)

    result = _load_with_sb3_alone(path, env_id, train=algo is PPOClip)
    assert not result["loaded"]
    assert not [message for message in result["warnings"] if "deserializ" in message], result["warnings"]
    np.testing.assert_array_equal(np.load(f"{path}.sb3_actions.npy"), model.predict(observations, deterministic=True)[0])
    if algo is PPOClip:
        assert result["num_timesteps"] == 128 + 64
    # What SB3's PPO does with the clip range: the same objective (no clipping is an infinite clip range)
    expected_clip_range = model.clip_range(1.0) if model.clip_range is not None else float("inf")
    assert result["clip_range"] == expected_clip_range
    # ...and what SB3's PPO saves back loads into the class again, and trains
    back = algo.load(f"{path}.saved_by_sb3.zip", env=make_vec_env(env_id, n_envs=2, seed=2), device="cpu")
    assert (back.clip_range is None) == (model.clip_range is None)
    back.learn(64, reset_num_timesteps=False)


def test_checkpoint_names_no_class_of_this_package(tmp_path):
    PPOPenalty("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32).save(tmp_path / "model")
    with zipfile.ZipFile(tmp_path / "model.zip") as archive:
        data = json.loads(archive.read("data"))
    # Objects are stored pickled (base64): look into each
    pickled = [
        base64.b64decode(value[":serialized:"])
        for value in data.values()
        if isinstance(value, dict) and ":serialized:" in value
    ]
    assert any(b"stable_baselines3.common.buffers" in item for item in pickled)  # the buffer class, by SB3's name
    assert not [item for item in pickled if b"sb3_ppo_variants" in item]
    # ...and reads back as it was
    loaded = PPOPenalty.load(tmp_path / "model")
    assert loaded.clip_range is None
