#!/usr/bin/env bash
# Installs everything xdq needs from Debian 12 packages (run as root). Data comes from packages too:
# Fashion-MNIST (dataset-fashion-mnist), OpenCV's sample images (opencv-doc), scikit-learn's digits.
# slurm-wlm and munge: the tests start a real Slurm on localhost for the cluster-sweep test.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
# Node.js and npm come from Debian unless the machine already has them: a NodeSource nodejs bundles npm and
# conflicts with Debian's npm package, so asking for both would stop apt.
node_packages=()
command -v node >/dev/null || node_packages+=(nodejs)
command -v npm >/dev/null || node_packages+=(npm)
apt-get update -qq
apt-get install -y -qq \
  build-essential cmake ninja-build pkg-config \
  libtorch-dev libopenblas0-openmp \
  libboost-dev libboost-filesystem-dev libyaml-cpp-dev libtbb-dev libopencv-dev \
  libgtest-dev libbenchmark-dev libcli11-dev nlohmann-json3-dev zlib1g-dev \
  libonnx-dev python3-onnx libdnnl-dev \
  python3-torch python3-torchvision python3-pil python3-numpy python3-dev pybind11-dev python3-pandas \
  dataset-fashion-mnist opencv-doc python3-sklearn \
  slurm-wlm munge "${node_packages[@]}"
# ONNX Runtime's CPU library and its Node binding (export.runtime: onnxruntime), pinned, into the folder the
# build knows. --ignore-scripts: the package's install script downloads GPU libraries from outside the npm
# registry and fails; the CPU library ships in the package itself.
ort_dir="$(cd "$(dirname "$0")/.." && pwd)/third_party/onnxruntime"
mkdir -p "$ort_dir"
npm install --prefix "$ort_dir" --ignore-scripts --no-audit --no-fund --loglevel=error onnxruntime-node@1.30.0
