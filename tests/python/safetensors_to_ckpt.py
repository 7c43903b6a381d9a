#!/usr/bin/env python3
"""Re-saves a safetensors checkpoint as a genuine PyTorch .ckpt with torch.save, in the layout of the
released SD v1.x files ({"state_dict": ..., "global_step": ...}). The tensors are read zero-copy from a
memory map, so a 4.3 GB checkpoint needs no 4.3 GB of memory.

usage: safetensors_to_ckpt.py SRC.safetensors DST.ckpt
"""
import collections
import json
import mmap
import struct
import sys

import torch

DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool}


def read(path):
    f = open(path, "rb")
    m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    (n,) = struct.unpack("<Q", m[:8])
    header = json.loads(m[8 : 8 + n])
    out = collections.OrderedDict()
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        dtype = DTYPES[info["dtype"]]
        count = (e - b) // torch.tensor([], dtype=dtype).element_size()
        t = torch.frombuffer(m, dtype=dtype, count=count, offset=8 + n + b) if count else torch.empty(0, dtype=dtype)
        out[name] = t.reshape(info["shape"])
    return out


if __name__ == "__main__":
    torch.save({"global_step": 840000, "state_dict": read(sys.argv[1])}, sys.argv[2])
