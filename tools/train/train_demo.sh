#!/usr/bin/env bash
# Trains the demo model with the two-run recipe meant to fit in about two hours on a 2-core CPU:
#   1. from scratch: the VAE (1200 steps), then CLIP + the UNet (5000 steps, with the caption heads and
#      more weight on the noisiest steps, where the layout is decided), then the decoder alone with
#      the edge loss (6000 steps);
#   2. from the first run's weights: CLIP + the UNet again (2200 steps) with the plain ε loss and a
#      lower learning rate.
# Each run saves its state every 5 minutes and on Ctrl-C: run this script again with the same
# directory to go on where it stopped (a finished run is not repeated). The model ends up in
# OUT/model.safetensors; its metadata records both recipes, their steps and the training time.
#
#   tools/train/train_demo.sh [OUT] [extra sd-train flags, e.g. --threads 2]
#
# OUT defaults to train-demo. SD_TRAIN names the sd-train binary (default build/tools/train/sd-train).
set -euo pipefail

out="${1:-train-demo}"
shift || true
train="${SD_TRAIN:-build/tools/train/sd-train}"
if [[ ! -x "$train" ]]; then
  echo "train_demo.sh: $train not found; build first (cmake --build build) or set SD_TRAIN" >&2
  exit 2
fi
mkdir -p "$out/1" "$out/2"

"$train" --out "$out/1" --seed 1 --vae-steps 1200 --vae-lr 8e-4 \
  --diffusion-steps 5000 --caption-loss-weight 0.1 --x0-weight-cap 5 --high-t-fraction 0.25 \
  --decoder-steps 6000 --decoder-lr 5e-4 --decoder-edge-weight 2 "$@"
[[ -f "$out/1/model.safetensors" ]] || exit 0  # stopped early (--max-minutes, Ctrl-C): run again

"$train" --out "$out/2" --init-from "$out/1/model.safetensors" --seed 2 \
  --diffusion-steps 2200 --diffusion-lr 2e-4 --caption-loss-weight 0.1 "$@"
[[ -f "$out/2/model.safetensors" ]] || exit 0
cp "$out/2/model.safetensors" "$out/model.safetensors"
echo "train_demo.sh: wrote $out/model.safetensors"
