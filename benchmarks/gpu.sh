#!/usr/bin/env bash
# The CUDA checks, as one command on a machine with an NVIDIA GPU and a CUDA build of torch: the CUDA tests (fast
# mode's CUDA graphs, fused Adam, no host synchronization in the minibatch loop; training, saving and
# loading on the GPU), then the speed comparison with SB3's PPO side by side on an MLP task and the CNN task.
# Tables go to $OUT (default: benchmarks/results/speed-cuda/), ready to commit.
#
#     bash benchmarks/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-benchmarks/results/speed-cuda}
mkdir -p "$out"
python -c 'import torch; assert torch.cuda.is_available(), "no CUDA device"; print(torch.__version__, torch.cuda.get_device_name())'
# The installed packages (a CUDA build of torch, stable-baselines3, pytest) and this checkout, without installing
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python -m pytest -o addopts="" -q -k cuda tests/test_fast.py tests/test_usage.py 2>&1 | tee "$out/tests.txt"
python -m benchmarks.speed --task cnn --device cuda --warmup 4096 --timesteps 16384 --repeats 3 \
    --algos PPOClip PPOPenalty "PPOClip fast_mode" "PPOPenalty fast_mode" --output "$out/1-cuda-cnn.md"
python -m benchmarks.speed --task cartpole --device cuda --warmup 10240 --timesteps 20480 --repeats 3 \
    --algos PPOClip "PPOClip fast_mode" "PPOPenalty fast_mode" --output "$out/2-cuda-cartpole.md"
