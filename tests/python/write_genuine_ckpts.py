#!/usr/bin/env python3
"""Writes genuine PyTorch checkpoints with torch.save (PyTorch's own writer) for the .ckpt reader's tests.

usage: write_genuine_ckpts.py SOURCE.safetensors OUTDIR

From the tensors of SOURCE (read with safetensors_io, copied out of its memory map):
  OUTDIR/f32_nested.ckpt   {"state_dict": OrderedDict, "global_step": int, "epoch": int,
                            "callbacks": {a ModelCheckpoint object of a stand-in pytorch_lightning module}}
                            -- the layout of the released SD v1.x .ckpt files
  OUTDIR/f16_flat.ckpt     the state dict itself, tensors in float16
  OUTDIR/views.ckpt        tensors sharing one storage: transposed, sliced, offset (values 0..23)
"""
import collections
import os
import sys
import types

import torch

from safetensors_io import load


def read_safetensors(path):
    return collections.OrderedDict((k, v.clone()) for k, v in load(path).items())


def stand_in_lightning():
    """A module named like pytorch_lightning's, so pickle records that global, as real checkpoints do."""
    mod = types.ModuleType("pytorch_lightning.callbacks.model_checkpoint")

    class ModelCheckpoint:
        def __init__(self):
            self.monitor = "val/loss"
            self.best_model_score = torch.tensor(0.125)
            self.kth_best_model_path = ""

    ModelCheckpoint.__module__ = mod.__name__
    ModelCheckpoint.__qualname__ = "ModelCheckpoint"
    mod.ModelCheckpoint = ModelCheckpoint
    for name in ["pytorch_lightning", "pytorch_lightning.callbacks", mod.__name__]:
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules[mod.__name__] = mod
    return ModelCheckpoint


def main():
    source, outdir = sys.argv[1], sys.argv[2]
    os.makedirs(outdir, exist_ok=True)
    sd = read_safetensors(source)
    ModelCheckpoint = stand_in_lightning()
    torch.save({"epoch": 3, "global_step": 470000, "pytorch-lightning_version": "1.4.2",
                "state_dict": sd, "callbacks": {"ModelCheckpoint": ModelCheckpoint()}},
               os.path.join(outdir, "f32_nested.ckpt"))
    half = collections.OrderedDict(
        (k, v.half() if v.is_floating_point() else v) for k, v in sd.items())
    torch.save(half, os.path.join(outdir, "f16_flat.ckpt"))
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    views = collections.OrderedDict([("base", base), ("transposed", base.t()), ("slice", base[1:3, 2:5]),
                                     ("row", base[2]), ("scalar", base[3, 5])])
    torch.save(views, os.path.join(outdir, "views.ckpt"))


if __name__ == "__main__":
    main()
