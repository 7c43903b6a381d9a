#!/usr/bin/env python3
"""Writes standalone-VAE test files from a checkpoint's VAE, its weights changed (x1.03 + 0.01) so the
pictures differ:

  OUTDIR/vae.safetensors           the standalone layout (no first_stage_model. prefix)
  OUTDIR/vae_prefixed.safetensors  the same tensors with the prefix
  OUTDIR/merged.safetensors        the checkpoint with its VAE replaced: what --vae must equal

usage: make_vae_variants.py CHECKPOINT.safetensors OUTDIR
"""
import json
import struct
import sys

import torch

DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool}
NAMES = {v: k for k, v in DTYPES.items()}
PREFIX = "first_stage_model."


def load(path):
    b = open(path, "rb").read()
    (n,) = struct.unpack("<Q", b[:8])
    header = json.loads(b[8 : 8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        s, e = info["data_offsets"]
        out[name] = torch.frombuffer(bytearray(b[8 + n + s : 8 + n + e]), dtype=DTYPES[info["dtype"]]).reshape(info["shape"])
    return out


def save(path, tensors):
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        raw = t.contiguous().numpy().tobytes()
        header[name] = {"dtype": NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    open(path, "wb").write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


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
