#!/usr/bin/env python3
"""Writes standalone-VAE test files from a checkpoint's VAE, its weights changed (x1.03 + 0.01) so the
pictures differ:

  OUTDIR/vae.safetensors           the standalone layout (no first_stage_model. prefix)
  OUTDIR/vae_prefixed.safetensors  the same tensors with the prefix
  OUTDIR/merged.safetensors        the checkpoint with its VAE replaced: what --vae must equal

usage: make_vae_variants.py CHECKPOINT.safetensors OUTDIR
"""
import sys

import torch

from safetensors_io import load, save

PREFIX = "first_stage_model."


def main(ckpt, outdir):
    w = load(ckpt)
    vae = {k[len(PREFIX):]: (v * 1.03 + 0.01 if v.is_floating_point() else v) for k, v in w.items() if k.startswith(PREFIX)}
    save(f"{outdir}/vae.safetensors", vae)
    save(f"{outdir}/vae_prefixed.safetensors", {PREFIX + k: v for k, v in vae.items()})
    merged = dict(w)
    merged.update({PREFIX + k: v for k, v in vae.items()})
    save(f"{outdir}/merged.safetensors", merged)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
