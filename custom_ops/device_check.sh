#!/usr/bin/env bash
# On a GPU machine: builds the CUDA kernels of PerforatedConv2D and LrtSample, checks them
# against cuDNN and a NumPy Philox stream and times them (custom_ops/gpu_check.py, with
# PyTorch; TensorFlow is not needed there).
# Writes $OUT/gpu_check.json (the device tool's output folder), else build/gpu_check.json.
#
#   bash custom_ops/device_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-build}"
mkdir -p build "$out"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || true
nvcc --version | tail -1
nvcc -O3 -std=c++17 -shared -Xcompiler -fPIC -x cu \
  -gencode=arch=compute_80,code=sm_80 -gencode=arch=compute_90,code=sm_90 \
  custom_ops/perforated_conv_gpu.cu.cc custom_ops/lrt_sample_gpu.cu.cc \
  custom_ops/gpu_check_bridge.cu.cc \
  -o build/perforated_conv_gpu_check.so
python3 custom_ops/gpu_check.py --library build/perforated_conv_gpu_check.so \
  --out "$out/gpu_check.json"
