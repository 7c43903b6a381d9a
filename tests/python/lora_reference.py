#!/usr/bin/env python3
"""An independent reference for sdgraph's LoRA support, for the tests to compare with: diffusers' module
names built forward from the UNet's configuration (as diffusers' checkpoint converters do), LoRA files
in the key families found in the wild, and the merged weights computed here in float64.

  lora_reference.py names IN.json OUT.json
      IN: {"num_res_blocks": n, "attention": [1, 1, 0, ...], "keys": ["model.diffusion_model....weight", ...]}
      OUT: {"input_blocks.1.1.proj_in": "down_blocks.0.attentions.0.proj_in", ...} for every UNet
           weight key (null where no diffusers module corresponds).
  lora_reference.py make CKPT.safetensors IN.json OUTDIR UNET TEXT [EVERY]
      IN as above (the checkpoint's config). Writes OUTDIR/{kohya,peft,ldm}.safetensors and, for each,
      OUTDIR/merged_{family}.safetensors: the checkpoint with that LoRA merged at strengths UNET, TEXT.
      With EVERY > 1 (for full-size checkpoints), the LoRAs patch every EVERY-th layer and the first
      of each kind (3x3 LoCon, 3x3 Tucker, 1x1 convolution, UNet linear, text-encoder linear), and
      the merged files hold the patched tensors only.
"""
import json
import sys

import torch

from safetensors_io import load, save

UNET = "model.diffusion_model."
TEXT = "cond_stage_model.transformer."


def module_map(n, attention):
    """diffusers module prefix -> LDM module prefix, and the resnet renames."""
    levels = len(attention)
    m = {"conv_in": "input_blocks.0.0", "time_embedding.linear_1": "time_embed.0",
         "time_embedding.linear_2": "time_embed.2", "conv_norm_out": "out.0", "conv_out": "out.2",
         "mid_block.resnets.0": "middle_block.0", "mid_block.attentions.0": "middle_block.1",
         "mid_block.resnets.1": "middle_block.2"}
    block = 1
    for i in range(levels):
        for j in range(n):
            m[f"down_blocks.{i}.resnets.{j}"] = f"input_blocks.{block}.0"
            if attention[i]:
                m[f"down_blocks.{i}.attentions.{j}"] = f"input_blocks.{block}.1"
            block += 1
        if i < levels - 1:
            m[f"down_blocks.{i}.downsamplers.0.conv"] = f"input_blocks.{block}.0.op"
            block += 1
    block = 0
    for u in range(levels):
        level = levels - 1 - u
        for j in range(n + 1):
            m[f"up_blocks.{u}.resnets.{j}"] = f"output_blocks.{block}.0"
            if attention[level]:
                m[f"up_blocks.{u}.attentions.{j}"] = f"output_blocks.{block}.1"
            if j == n and level > 0:
                m[f"up_blocks.{u}.upsamplers.0.conv"] = f"output_blocks.{block}.{2 if attention[level] else 1}.conv"
            block += 1
    return m


RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1", "norm2": "out_layers.0",
          "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}


def to_diffusers(cfg):
    m = module_map(cfg["num_res_blocks"], cfg["attention"])
    inverse = {}
    for d, l in m.items():
        if ".resnets." in d:
            for dr, lr in RESNET.items():
                inverse[f"{l}.{lr}"] = f"{d}.{dr}"
        else:
            inverse[l] = d
    out = {}
    for key in cfg["keys"]:
        if not key.startswith(UNET) or not key.endswith(".weight"):
            continue
        ldm = key[len(UNET) : -len(".weight")]
        hit = None
        for l, d in inverse.items():
            if ldm == l or ldm.startswith(l + "."):
                if ".attentions." in d or ldm == l:
                    hit = d + ldm[len(l) :]
        out[ldm] = hit
    return out


def layer_kind(part, shape, i):
    conv3 = len(shape) == 4 and shape[2] == 3
    return (part, len(shape), conv3, conv3 and i % 5 == 0)


def sample(layers, every):
    """Every `every`-th layer and the first of each kind (the kinds `make` treats differently)."""
    seen, out = set(), []
    for i, layer in enumerate(layers):
        kind = layer_kind(layer[0], layer[3], i)
        if i % every == 0 or kind not in seen:
            seen.add(kind)
            out.append((i, layer))
    return out


def make(ckpt, cfg, outdir, s_unet, s_text, every=1):
    w = load(ckpt)
    names = to_diffusers(cfg)
    g = torch.Generator().manual_seed(5)
    rank = 4
    layers = []  # (family name stem, target key, down, up, mid, alpha)
    for key, t in w.items():
        if not key.endswith(".weight") or t.dim() not in (2, 4):
            continue
        module = key[: -len(".weight")]
        if key.startswith(UNET):
            ldm = module[len(UNET) :]
            if t.dim() == 2 and ("time_embed" in ldm or "emb_layers" in ldm):
                continue  # not patched by these files
            layers.append(("unet", ldm, key, t.shape))
        elif key.startswith(TEXT) and t.dim() == 2 and ("self_attn" in key or "mlp" in key):
            layers.append(("text", module[len(TEXT) :], key, t.shape))
    files = {"kohya": {}, "peft": {}, "ldm": {}}
    deltas = {f: {} for f in files}
    for i, (part, path, key, shape) in sample(layers, every) if every > 1 else enumerate(layers):
        out_ch, in_ch = shape[0], shape[1]
        conv3 = len(shape) == 4 and shape[2] == 3
        if path == "input_blocks.0.0":
            in_ch = 4  # a LoRA made for a 4-channel model; an inpainting one takes 9
        alpha = 2.0 if i % 3 == 0 else None
        tucker = conv3 and i % 5 == 0
        down = torch.randn(rank, in_ch, 3 if conv3 and not tucker else 1, 3 if conv3 and not tucker else 1, generator=g) * 0.1
        up = torch.randn(out_ch, rank, 1, 1, generator=g) * 0.1
        mid = torch.randn(rank, rank, 3, 3, generator=g) * 0.1 if tucker else None
        if len(shape) == 2:
            down, up = down[:, :, 0, 0], up[:, :, 0, 0]
        scale = (alpha if alpha is not None else rank) / rank
        if mid is not None:
            delta = torch.einsum("oa,abhw,bi->oihw", up.double()[:, :, 0, 0], mid.double(), down.double()[:, :, 0, 0])
        elif len(shape) == 4:
            delta = (up.double().reshape(out_ch, rank) @ down.double().reshape(rank, -1)).reshape(out_ch, in_ch, shape[2], shape[3])
        else:
            delta = up.double() @ down.double()
        if delta.shape[1] != shape[1]:
            padded = torch.zeros(shape, dtype=torch.float64)
            padded[:, : delta.shape[1]] = delta
            delta = padded
        delta = delta * scale * (s_unet if part == "unet" else s_text)
        if part == "unet":
            diffusers = names.get(path)
            stems = {"kohya": "lora_unet_" + (diffusers or path).replace(".", "_"),
                     "ldm": "lora_unet_" + path.replace(".", "_")}
            if diffusers and len(shape) == 2:
                stems["peft"] = "unet." + diffusers
        else:
            stems = {"kohya": "lora_te_" + path.replace(".", "_"), "ldm": TEXT + path, "peft": "text_encoder." + path}
        for fam, stem in stems.items():
            f = files[fam]
            if fam == "peft":
                f[stem + ".lora_A.weight"], f[stem + ".lora_B.weight"] = down, up
                d = delta / scale if alpha is not None else delta  # PEFT files carry no alpha: scale 1
            else:
                f[stem + ".lora_down.weight"], f[stem + ".lora_up.weight"] = down, up
                if mid is not None:
                    f[stem + ".lora_mid.weight"] = mid
                if alpha is not None:
                    f[stem + ".alpha"] = torch.tensor(alpha)
                d = delta
            if fam == "peft" and mid is not None:
                continue
            deltas[fam][key] = d
    files["kohya"]["lora_unet_not_a_layer.lora_down.weight"] = torch.zeros(rank, 8)
    files["kohya"]["lora_unet_not_a_layer.lora_up.weight"] = torch.zeros(8, rank)
    for fam, f in files.items():
        save(f"{outdir}/{fam}.safetensors", f)
        merged = dict(w) if every == 1 else {}
        for key, d in deltas[fam].items():
            merged[key] = (w[key].double() + d).float()
        save(f"{outdir}/merged_{fam}.safetensors", merged)


def main(argv):
    if argv[1] == "names":
        json.dump(to_diffusers(json.load(open(argv[2]))), open(argv[3], "w"))
    elif argv[1] == "make":
        every = int(argv[7]) if len(argv) > 7 else 1
        make(argv[2], json.load(open(argv[3])), argv[4], float(argv[5]), float(argv[6]), every)
    else:
        sys.exit("unknown command " + argv[1])


if __name__ == "__main__":
    main(sys.argv)
