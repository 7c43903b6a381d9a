#!/usr/bin/env bash
# Runs each libFuzzer target for SECONDS (default 60) from a seed corpus of real and hostile files, and
# prints the executions each made.   usage: run_fuzzers.sh FUZZ_BUILD_DIR [SECONDS] [PYTHON] [SD_GRAPH]
# SD_GRAPH (default: the main build's, beside FUZZ_BUILD_DIR) writes the node kind catalog the graph
# fuzzer plans against.
set -euo pipefail
build=$1
seconds=${2:-60}
python=${3:-python3}
sdgraph=${4:-$build/../host_plugin/cli/sd-graph}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/sdgraph-fuzz-XXXXXX")
trap 'rm -rf "$work"' EXIT

mkdir -p "$work/ckpt" "$work/safetensors" "$work/pickle" "$work/wire" "$work/graph" "$work/prompt" "$work/comfy"
# Prompt seeds: the dialect byte, then a prompt that uses every feature.
printf '\0a (red:1.3) [[circle]] \\(x\\) BREAK mystyle, two words <lora:x:0.5:1>' >"$work/prompt/a1111"
printf '\1((a (b:.5) c:2)) [literal] (unclosed BREAK long' >"$work/prompt/comfy"
printf '\2m|vae=v|lora=n:1:0.5 (none)' >"$work/prompt/none"
# ComfyUI seeds (first byte even: JSON; odd: a PNG): the workflows the tests use.
for f in "$here"/comfy_seeds/*.json; do
  { printf '\0'; cat "$f"; } >"$work/comfy/$(basename "$f")"
done
# Graph seeds: the stock graphs and the examples; the kinds they use, as data.
# Imports come from the graph library (served from memory); one seed has the library written in.
cp "$here"/../../graphs/*.pbtxt "$here"/../../graphs/examples/*.pbtxt "$work/graph/"
{ cat "$here"/../../graphs/lib/*.pbtxt; grep -v '^import:' "$here"/../../graphs/txt2img.pbtxt; } >"$work/graph/inline_lib.pbtxt"
"$sdgraph" kinds --textproto >"$work/kinds.textproto"
export SD_FUZZ_NODE_KINDS="$work/kinds.textproto"
export SD_FUZZ_GRAPH_LIB="$here/../../graphs/lib"
# Seeds: the hostile corpus, genuine torch.save files, their pickles, small safetensors files.
"$python" "$here/../python/write_hostile_ckpts.py" "$work/ckpt" "$work/canary"
rm -f "$work/ckpt/expected.json"
"$python" - "$work" <<'PY'
import collections, os, sys, torch, zipfile
w = sys.argv[1]
base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
sd = collections.OrderedDict([("a", base), ("t", base.t()), ("h", base.half()[1:3]), ("i", torch.arange(3))])
torch.save({"state_dict": sd, "step": 1}, os.path.join(w, "ckpt", "genuine.ckpt"))
for name in os.listdir(os.path.join(w, "ckpt")):
    try:
        with zipfile.ZipFile(os.path.join(w, "ckpt", name)) as z:
            for n in z.namelist():
                if n.endswith("data.pkl"):
                    open(os.path.join(w, "pickle", name + ".pkl"), "wb").write(z.read(n))
    except Exception:
        pass
PY
"$python" - "$work" <<'PY'
import json, struct, sys, os
w = sys.argv[1]
for shape in ([2, 2], [3], [1, 2, 2]):
    n = 1
    for d in shape: n *= d
    h = json.dumps({"x": {"dtype": "F16", "shape": shape, "data_offsets": [0, 2 * n]},
                    "y": {"dtype": "I64", "shape": [1], "data_offsets": [2 * n, 2 * n + 8]}}).encode()
    open(os.path.join(w, "safetensors", "s%d.safetensors" % n), "wb").write(struct.pack("<Q", len(h)) + h + bytes(2 * n + 8))
# ControlNet names in each layout (1-element tensors: the layout readers look at names and shapes).
for i, names in enumerate((["control_model.input_hint_block.0.weight", "control_model.input_blocks.0.0.weight",
                             "control_model.zero_convs.0.0.weight", "control_model.middle_block_out.0.bias"],
                            ["controlnet_cond_embedding.conv_in.weight", "down_blocks.0.resnets.0.conv1.weight",
                             "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight",
                             "mid_block.resnets.1.time_emb_proj.bias", "controlnet_down_blocks.3.weight"])):
    header = {}
    for k, name in enumerate(names):
        header[name] = {"dtype": "F32", "shape": [1, 1, 1, 1], "data_offsets": [4 * k, 4 * k + 4]}
    h = json.dumps(header).encode()
    open(os.path.join(w, "safetensors", "cn%d.safetensors" % i), "wb").write(struct.pack("<Q", len(h)) + h + bytes(4 * len(names)))
PY

total=0
# Wire seeds: one accepted value of each kind. Layout (see wire_fuzzer.cc): datatype index, kind,
# elements, rank + 1, shape rank, the dimensions as little-endian int64 (even first byte: taken as
# value + 2), the raw bytes.
"$python" - "$work" <<'PY'
import struct, sys, os
w = sys.argv[1]
def seed(name, dt, kind, elems, rank, dims, raw):
    assert all(d % 2 == 0 for d in dims)
    body = bytes([dt, kind, elems, rank + 1, len(dims)]) + b"".join(struct.pack("<q", d + 2) for d in dims)
    open(os.path.join(w, "wire", name), "wb").write(body + raw)
seed("latents", 0, 3, 0, 4, [2, 2, 2, 2], bytes(4 * 16))
seed("tokens", 4, 3, 1, 2, [2, 4], bytes(8 * 8))
seed("string", 7, 0, 0, -1, [], struct.pack("<I", 3) + b"abc")
seed("int", 4, 1, 0, -1, [], bytes(8))
seed("float", 3, 2, 0, -1, [], bytes(8))
PY

"$python" - "$work" <<'PY'
import os, struct, sys, zlib
w = sys.argv[1]
def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
for name in os.listdir(os.path.join(w, "comfy")):
    text = open(os.path.join(w, "comfy", name), "rb").read()[1:]
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", bytes(13)) + chunk(b"tEXt", b"prompt\0" + text) + chunk(b"IEND", b"")
    open(os.path.join(w, "comfy", name + ".png"), "wb").write(b"\x01" + png)
PY

# The targets are single-threaded: run as many at once as there are cores (SD_FUZZ_JOBS overrides), each
# for the full SECONDS, so the machine's time goes to fuzzing rather than to waiting.
jobs_max=${SD_FUZZ_JOBS:-$(nproc)}
run_target() {
  local rc=0
  "$build/tests/fuzz/fuzz_$1" -max_total_time="$seconds" -print_final_stats=1 -rss_limit_mb=2048 \
    -max_len=65536 -timeout=10 "$work/$1" >"$work/$1.log" 2>&1 || rc=$?
  echo "$rc" >"$work/$1.rc"
}
targets="safetensors ckpt pickle wire graph prompt comfy"
for target in $targets; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs_max" ]; do wait -n || true; done
  run_target "$target" &
done
wait
for target in $targets; do
  log="$work/$target.log"
  if [ "$(cat "$work/$target.rc")" != 0 ]; then
    tail -50 "$log"
    echo "run_fuzzers: fuzz_$target found a crash" >&2
    exit 1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || echo 0)
  corpus=$(ls "$work/$target" | wc -l)
  echo "fuzz_$target: $runs executions in ${seconds}s, coverage $cov edges, corpus $corpus inputs, no crash"
  total=$((total + runs))
done
if [ -e "$work/canary" ]; then echo "run_fuzzers: a payload ran (canary exists)" >&2; exit 1; fi
echo "run_fuzzers: $total executions in all"
