#!/usr/bin/env bash
# Installs every build and test dependency of sdgraph from Debian 12's packages, configures and builds into
# ./build, then runs the main job in-process: txt2img on the checkpoint you name (512x512), or, without one,
# on the project's demo model (deploy/models/sd-demo-shapes.safetensors: flat shapes at 64x64, trained here,
# not Stable Diffusion) into out/demo.png. Re-running is cheap.
#   deploy/setup.sh [--no-install] [--model CHECKPOINT] [--prompt TEXT] [--steps N] [--dtype f32|bf16|q8]
set -euo pipefail
cd "$(dirname "$0")/.."

install=1
model=""
prompt=""
steps=50
dtype=f32
while [ $# -gt 0 ]; do
  case "$1" in
    --no-install) install=0 ;;
    --model) model=$2; shift ;;
    --prompt) prompt=$2; shift ;;
    --steps) steps=$2; shift ;;
    --dtype) dtype=$2; shift ;;
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
if [ -n "$model" ] && [ ! -r "$model" ]; then echo "setup.sh: cannot read the model $model" >&2; exit 2; fi

packages=(
  # toolchain
  build-essential cmake ninja-build ccache pkg-config git clang libclang-rt-14-dev python3
  # the core: LibTorch (CPU), OpenBLAS (Debian's LibTorch otherwise runs on the slow reference BLAS)
  libtorch-dev libopenblas0-openmp
  # oneDNN's headers: the int8 convolutions call the library LibTorch links (--dtype q8)
  libdnnl-dev
  libabsl-dev nlohmann-json3-dev libicu-dev
  # gRPC workers, image I/O, the GEGL plugin
  libgrpc++-dev libc-ares-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc prometheus-cpp-dev libmicrohttpd-dev
  libopenimageio-dev libgegl-dev gegl
  # Canny edges for ControlNet hints
  libopencv-imgproc-dev
  # tests and benchmarks (python3-torch writes genuine .ckpt files with torch.save)
  # (openssl makes test certificates for the TLS tests; taskset from util-linux pins benchmark workers)
  libgtest-dev libgmock-dev libbenchmark-dev python3-torch python3-grpcio python3-protobuf python3-yaml openssl util-linux
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

sdgraph=build/host_plugin/cli/sd-graph
mkdir -p out
if [ -n "$model" ]; then
  prompt=${prompt:-"a photograph of an astronaut riding a horse"}
  echo "setup.sh: txt2img on $model (512x512, $steps steps, $dtype): \"$prompt\""
  "$sdgraph" txt2img --model "$model" --prompt "$prompt" --steps "$steps" --dtype "$dtype" --seed 42 -o out/txt2img.png
  echo "setup.sh: wrote out/txt2img.png"
else
  prompt=${prompt:-"a red circle on a blue background"}
  echo "setup.sh: no --model given: txt2img on the DEMO MODEL (trained by this project on drawn shapes, 64x64;"
  echo "          not Stable Diffusion; pass --model v1-5-pruned-emaonly.safetensors for SD): \"$prompt\""
  "$sdgraph" txt2img --prompt "$prompt" --steps "$steps" --dtype "$dtype" --seed 42 -o out/demo.png
  echo "setup.sh: wrote out/demo.png"
fi
