#!/usr/bin/env bash
# Run on the GPU machine, from the repository root, with the .gpu folder tools/gpu/prepare.sh wrote
# carried along: builds sd-bench against that machine's CUDA LibTorch (the one inside its PyTorch)
# and the carried Debian libraries, then times SD v1.5 (full-size sdgold-v1 weights, generated) on
# the GPU in f32 and f16, checks f32 against the goldens (max-abs <= 1e-3 on every stage) and
# records the f16 error table and the process's peak GPU memory (nvidia-smi, sampled).
# Results go to $OUT (the device tool's folder), else ./gpu-out:
#   gpu.txt            the GPU, driver, PyTorch and CUDA versions
#   configure.log, build.log
#   bench.txt, bench.json   sd-bench's tables (it/s at batch 1 with CFG = 1 / the unet2 seconds)
#   gpu-memory.txt     the largest memory nvidia-smi reported for the sd-bench process
# Settings (environment): SD_GPU_DEVICE (default cuda; `cpu` tries the flow on a machine without
# a GPU), SD_GPU_BUILD (build folder, default /tmp/sdgraph-build-gpu), SD_GPU_BUILD_TYPE (Release),
# SD_GPU_WERROR (OFF: another compiler may warn where ours does not), SD_GPU_SIZE (512),
# SD_GPU_PYTHON (the python3 whose torch to build against, default python3).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-$PWD/gpu-out}
device=${SD_GPU_DEVICE:-cuda}
build=${SD_GPU_BUILD:-/tmp/sdgraph-build-gpu}
size=${SD_GPU_SIZE:-512}
py=${SD_GPU_PYTHON:-python3}
mkdir -p "$out"
if [ ! -r .gpu/deps.tar.xz ]; then
  echo "check.sh: no .gpu/deps.tar.xz: run tools/gpu/prepare.sh where apt works and carry .gpu" >&2
  exit 2
fi
deps=/tmp/sdgraph-gpu-deps
rm -rf "$deps" && mkdir -p "$deps" && tar -C "$deps" -xJf .gpu/deps.tar.xz
lib=$deps/usr/lib/x86_64-linux-gnu
export PATH="$deps/usr/bin:$PATH"
export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# The carried reference BLAS/LAPACK only where the system has none (OpenCV's core library loads them; a
# LibTorch that calls the system BLAS would otherwise run on the slow reference one).
for l in blas lapack; do
  ldconfig -p | grep -q "lib$l\.so\.3 " || LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$lib/$l"
done
# This run's CPU measurements in $out, not in the user's cache (cpu_choice.h).
export SDGRAPH_CPU_MEASUREMENTS=${SDGRAPH_CPU_MEASUREMENTS:-$out/cpu-measurements}

torch_cmake=$("$py" -c 'import torch; print(torch.utils.cmake_prefix_path)')
{
  [ "$device" = cpu ] || nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  "$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
      "cxx11 abi", torch.compiled_with_cxx11_abi())'
  c++ --version | head -1
  cmake --version | head -1
} 2>&1 | tee "$out/gpu.txt"

cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE="${SD_GPU_BUILD_TYPE:-Release}" \
  -DCMAKE_PREFIX_PATH="$torch_cmake;$deps/usr" -DProtobuf_PROTOC_EXECUTABLE="$deps/usr/bin/protoc" \
  -DSD_WITH_GRPC=OFF -DSD_WITH_OIIO=OFF -DSD_WITH_GEGL=OFF -DSD_WITH_ONEDNN=OFF -DSD_FUZZ_SUBBUILD=OFF \
  -DSD_WARNINGS_AS_ERRORS="${SD_GPU_WERROR:-OFF}" -DSD_SHARED_DIR="$PWD/.gpu/shared" \
  >"$out/configure.log" 2>&1 || { tail -40 "$out/configure.log"; exit 1; }
cmake --build "$build" --target sd-bench -j"$(nproc)" >"$out/build.log" 2>&1 ||
  { grep -m 20 -A 5 'error' "$out/build.log" || tail -40 "$out/build.log"; exit 1; }

bench=("$build/tests/bench/sd-bench" --device "$device" --size "$size" --dtypes f32,f16
       --cases clip,unet1,unet2,vae_dec,vae_enc --repeat 5 --golden "$PWD/.gpu/shared/golden"
       --json "$out/bench.json")
[ "$device" = cpu ] && bench=("$build/tests/bench/sd-bench" --device cpu --size "$size" --dtypes f32
  --cases unet2 --golden "$PWD/.gpu/shared/golden" --json "$out/bench.json")
"${bench[@]}" >"$out/bench.txt" 2>"$out/bench.err" &
pid=$!
peak=0
while kill -0 "$pid" 2>/dev/null; do
  if [ "$device" != cpu ]; then
    used=$(nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits 2>/dev/null |
           awk -F', ' -v p="$pid" '$1 == p { print $2 }')
    [ -n "$used" ] && [ "$used" -gt "$peak" ] && peak=$used
  fi
  sleep 0.2
done
wait "$pid" || { tail -20 "$out/bench.err"; exit 1; }
[ "$device" = cpu ] ||
  echo "peak GPU memory of sd-bench (nvidia-smi, sampled every 0.2 s; CUDA context included): $peak MiB" |
  tee "$out/gpu-memory.txt"
cat "$out/bench.txt"
python3 tools/gpu/check_parity.py "$out/bench.json" 1e-3
