#!/usr/bin/env bash
# Installs every build and test dependency of sdgraph from Debian 12's packages, then configures and builds
# into ./build. Run from anywhere; re-running is cheap (ccache, incremental build).
#   deploy/setup.sh [--no-install] [--model CHECKPOINT]
set -euo pipefail
cd "$(dirname "$0")/.."

install=1
while [ $# -gt 0 ]; do
  case "$1" in
    --no-install) install=0 ;;
    -h|--help) sed -n '2,4p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

packages=(
  # toolchain
  build-essential cmake ninja-build ccache pkg-config git clang libclang-rt-14-dev python3
  # the core: LibTorch (CPU), OpenBLAS (Debian's LibTorch otherwise runs on the slow reference BLAS)
  libtorch-dev libopenblas0-openmp
  libabsl-dev nlohmann-json3-dev libicu-dev
  # gRPC workers, image I/O, the GEGL plugin
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc prometheus-cpp-dev
  libopenimageio-dev libgegl-dev gegl
  # tests and benchmarks (python3-torch writes genuine .ckpt files with torch.save)
  libgtest-dev libgmock-dev libbenchmark-dev python3-torch python3-grpcio python3-protobuf
)

if [ "$install" = 1 ]; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${packages[@]}"
fi

export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/ccache}"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build -j"$(nproc)"
echo "setup.sh: built into ./build"
