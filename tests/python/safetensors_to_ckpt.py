#!/usr/bin/env python3
"""Re-saves a safetensors checkpoint as a genuine PyTorch .ckpt with torch.save, in the layout of the
released SD v1.x files ({"state_dict": ..., "global_step": ...}). The tensors are read zero-copy from a
memory map, so a 4.3 GB checkpoint needs no 4.3 GB of memory.

usage: safetensors_to_ckpt.py SRC.safetensors DST.ckpt
"""
import sys

import torch

from safetensors_io import load

if __name__ == "__main__":
    torch.save({"global_step": 840000, "state_dict": load(sys.argv[1])}, sys.argv[2])
