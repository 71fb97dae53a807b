#!/usr/bin/env bash
# Builds xdq against a CUDA LibTorch (PyTorch's, found through python3) and runs what needs a GPU: the
# device tests (Device.*: CPU against CUDA parity; skipped with a printed reason where CUDA is missing,
# never passed silently) and the bench on the GPU. Meant for a machine with an NVIDIA GPU, PyTorch with
# CUDA, yaml-cpp, Boost headers and GoogleTest; OpenCV, TBB and ONNX are optional (what needs them is left
# out of the build and says so). Fits a 10-minute command on a 16-core machine.
#   tools/gpu-check.sh [BUILD_DIR]        (default build-gpu)
# Fashion-MNIST: /usr/share/datasets/fashion-mnist (Debian's dataset-fashion-mnist), $XDQ_FASHION_MNIST_DIR,
# or a copy in build-data/fashion-mnist.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-gpu}
torch_prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "devices", torch.cuda.device_count())'
if [ -z "${XDQ_FASHION_MNIST_DIR:-}" ] && [ ! -d /usr/share/datasets/fashion-mnist ] && [ -d build-data/fashion-mnist ]; then
  export XDQ_FASHION_MNIST_DIR=$PWD/build-data/fashion-mnist  # a copy carried in (the four .gz files, 30 MB)
fi
generator=()
command -v ninja > /dev/null && generator=(-G Ninja)
start=$(date +%s)
cmake -S . -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$torch_prefix" \
  -DXDQ_BUILD_TESTS=ON -DXDQ_BUILD_BENCH=ON
cmake --build "$build" --parallel "$(nproc)"
echo "gpu-check: configured and built in $(( $(date +%s) - start )) s"
# The device tests: each compares a CUDA run with the CPU run of the same model and data.
"$build/bin/xdq_tests" --gtest_filter='Device.*' --gtest_color=no
# The quickstart on the GPU against the CPU, side by side: top-1 and wall time of each.
for device in cpu cuda; do
  "$build/bin/xdq" run experiments/quickstart.yaml --out "$build/quickstart_$device" --quiet \
    --set device=$device --set 'quantization.bits=[w4a4]' --set 'quantization.calibrators=[mse]' \
    --set 'quantization.overrides=[]'
  python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['runs'][0]; print(sys.argv[2], r['id'], r['results'][0]['quant_top1'], r['seconds'])" \
    "$build/quickstart_$device/results.json" "$device"
done
# Speed, side by side: the bench on the CPU and on the GPU (FP32 and W8A8 evaluation, BRECQ and QDrop
# iterations against the plain ATen block on the same device, synthesis iterations, calibration), on
# ResNet-20, each in both memory layouts (the GPU's line decides memory_format: auto there).
for device in cpu cuda; do
  "$build/bin/xdq_bench" --device $device --rounds 2
done
# The same at 224x224: ResNet-18 (torchvision's architecture, random weights: speed only) evaluated at batch
# 64, a BRECQ iteration of layer1.0 against the plain ATen block, a ZeroQ synthesis iteration at batch 64.
if python3 -c 'import torchvision' 2> /dev/null; then
  python3 tools/trace_torchvision.py resnet18 "$build/resnet18.pt"
  for device in cpu cuda; do
    "$build/bin/xdq_bench_imagenet" none "$build/resnet18.pt" --device $device --rounds 2
  done
else
  echo "gpu-check: no torchvision in python3: the 224x224 bench is left out"
fi
echo "gpu-check: done in $(( $(date +%s) - start )) s"
