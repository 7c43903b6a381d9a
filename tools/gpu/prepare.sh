#!/usr/bin/env bash
# Run here (Debian 12 with apt): gathers what tools/gpu/check.sh needs on a GPU machine that has
# CUDA, PyTorch (and so LibTorch), CMake, Ninja and a C++ compiler, but no apt and no network: the
# headers and shared libraries of Abseil, protobuf (and protoc), nlohmann-json, ICU, OpenCV's
# imgproc (with what its core library loads), GoogleTest and Google Benchmark, from Debian 12's
# packages, and the golden vectors. Writes .gpu/ (ignored by git; about 25 MB):
#   .gpu/deps.tar.xz      the packages' files, unpacked under usr/, without most static libraries
#   .gpu/shared/golden    the reference answers sd-bench checks (from $SDGRAPH_SHARED_DIR, default
#                         ../shared)
# Then carry ".gpu" with the command `tools/gpu/check.sh` (see tools/gpu/README.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
shared=${SDGRAPH_SHARED_DIR:-../shared}
if [ ! -r "$shared/golden/unet.safetensors" ]; then
  echo "prepare.sh: no golden vectors in $shared/golden (set SDGRAPH_SHARED_DIR)" >&2
  exit 2
fi
packages=(
  libabsl-dev libabsl20220623
  libprotobuf-dev libprotobuf32 protobuf-compiler libprotoc32
  nlohmann-json3-dev libicu-dev libicu72
  libopencv-imgproc-dev libopencv-imgproc406 libopencv-core-dev libopencv-core406
  # what libopencv_core.so loads: TBB, a BLAS and LAPACK, libGLX (and X11 under it)
  libtbb12 libblas3 liblapack3 libglx0 libglvnd0 libx11-6 libxcb1 libxau6 libxdmcp6 libbsd0 libmd0
  libgtest-dev libgmock-dev libbenchmark-dev libbenchmark1debian
)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download "${packages[@]}")
mkdir -p "$work/root"
for f in "$work"/*.deb; do dpkg -x "$f" "$work/root"; done
# Static libraries only where a package has nothing else (GoogleTest, Google Benchmark).
find "$work/root" -name '*.a' ! -name 'libgtest*' ! -name 'libgmock*' ! -name 'libbenchmark*' -delete
rm -rf "$work/root/usr/share/doc" "$work/root/usr/share/man" "$work/root/usr/share/lintian"
rm -rf .gpu
mkdir -p .gpu/shared/golden
tar -C "$work/root" -cJf .gpu/deps.tar.xz .
# The stages sd-bench checks (CLIP, UNet, VAE decoder).
for f in README.md clip.safetensors unet.safetensors vae.safetensors; do
  cp --no-preserve=mode "$shared/golden/$f" .gpu/shared/golden/
done
echo "prepare.sh: wrote .gpu ($(du -sh .gpu | cut -f1)); the working tree and .gpu travel together" \
  "(the device tool's limit is 64 MiB)"
