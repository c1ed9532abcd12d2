"""The proximal rollout buffers give SB3's minibatches, plus the old distribution parameters."""

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import DictRolloutBuffer, RolloutBuffer

from sb3_ppo_variants.common.buffers import ProximalDictRolloutBuffer, ProximalRolloutBuffer

N_STEPS, N_ENVS = 8, 3
BOX = spaces.Box(-1, 1, (4,), dtype=np.float32)
DICT = spaces.Dict({"position": BOX, "image": spaces.Box(0, 255, (2, 5, 5), dtype=np.uint8)})
ACTIONS = spaces.MultiBinary(3)


def _fill(buffer, observation_space: spaces.Space) -> None:
    rng = np.random.default_rng(0)
    observation_space.seed(0)
    for _ in range(N_STEPS):
        observation = (
            {k: np.stack([s.sample() for _ in range(N_ENVS)]) for k, s in observation_space.spaces.items()}
            if (isinstance(observation_space, spaces.Dict))
            else np.stack([observation_space.sample() for _ in range(N_ENVS)])
        )
        buffer.add(
            observation,
            rng.integers(0, 2, (N_ENVS, 3)),
            rng.normal(size=N_ENVS),
            rng.integers(0, 2, N_ENVS).astype(np.float32),
            th.as_tensor(rng.normal(size=N_ENVS), dtype=th.float32),
            th.as_tensor(rng.normal(size=N_ENVS), dtype=th.float32),
        )
    buffer.compute_returns_and_advantage(th.zeros(N_ENVS), np.zeros(N_ENVS, dtype=bool))


def _as_dict(observations):
    return observations if isinstance(observations, dict) else {"": observations}


@pytest.mark.parametrize(
    "reference_class, our_class, observation_space",
    [(RolloutBuffer, ProximalRolloutBuffer, BOX), (DictRolloutBuffer, ProximalDictRolloutBuffer, DICT)],
)
def test_same_minibatches_as_sb3(reference_class, our_class, observation_space):
    reference = reference_class(N_STEPS, observation_space, ACTIONS, device="cpu", n_envs=N_ENVS)
    ours = our_class(N_STEPS, observation_space, ACTIONS, device="cpu", n_envs=N_ENVS)
    _fill(reference, observation_space)
    _fill(ours, observation_space)
    old_params = th.arange(N_STEPS * N_ENVS * 2, dtype=th.float32).reshape(-1, 2)
    ours.set_old_distribution_params(old_params)
    for epoch in range(2):
        np.random.seed(epoch)
        reference_batches = list(reference.get(batch_size=5))
        np.random.seed(epoch)
        our_batches = list(ours.get(batch_size=5))
        assert len(our_batches) == len(reference_batches) == 5  # 24 transitions: 4 of 5 and 1 of 4
        np.random.seed(epoch)
        permutation = np.random.permutation(N_STEPS * N_ENVS)
        for index, (expected, actual) in enumerate(zip(reference_batches, our_batches, strict=True)):
            for key, value in _as_dict(expected.observations).items():
                assert th.equal(value, _as_dict(actual.observations)[key])
                assert value.dtype == _as_dict(actual.observations)[key].dtype
                # Aligned as SB3's fresh minibatch tensors are (the CPU math libraries may pick other kernels otherwise)
                assert _as_dict(actual.observations)[key].data_ptr() % 64 == 0
            for field in ("actions", "old_values", "old_log_prob", "advantages", "returns"):
                assert th.equal(getattr(expected, field), getattr(actual, field)), field
            # The old parameters travel with their transitions
            assert th.equal(actual.old_distribution_params, old_params[permutation[index * 5 : (index + 1) * 5]])


def test_old_distribution_params_shape_is_checked_and_reset():
    buffer = ProximalRolloutBuffer(N_STEPS, BOX, ACTIONS, device="cpu", n_envs=N_ENVS)
    _fill(buffer, BOX)
    with pytest.raises(ValueError, match=r"shape \(24, n_params\)"):
        buffer.set_old_distribution_params(th.zeros(23, 2))
    buffer.set_old_distribution_params(th.zeros(24, 2))
    assert next(buffer.get(4)).old_distribution_params.shape == (4, 2)
    buffer.reset()
    assert buffer.old_distribution_params is None
    _fill(buffer, BOX)
    assert next(buffer.get(4)).old_distribution_params is None


def test_flat_observations_are_in_minibatch_index_order():
    buffer = ProximalRolloutBuffer(N_STEPS, BOX, ACTIONS, device="cpu", n_envs=N_ENVS)
    _fill(buffer, BOX)
    flat = buffer.flat_observations()
    assert flat.shape == (N_STEPS * N_ENVS, 4)
    # transition i of env e sits at e * N_STEPS + i (SB3's swap_and_flatten order)
    np.random.seed(0)
    batch = next(buffer.get(batch_size=N_STEPS * N_ENVS))
    np.random.seed(0)
    assert th.equal(batch.observations, flat[np.random.permutation(N_STEPS * N_ENVS)])
