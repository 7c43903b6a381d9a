#!/usr/bin/env python3
"""The reference beside sd-bench: Stable Diffusion v1.x's UNet and VAE decoder written the way the original
PyTorch implementation (CompVis latent-diffusion, the code the goldens came from) computes them, plain PyTorch
in fp32, on the same checkpoint. It first checks itself against the goldens (so what it times is the
reference's arithmetic, not a cheaper one), then times one CFG step (UNet at batch 2) and one VAE decode at
SIZE x SIZE with the given threads, and writes the numbers as JSON. sd-bench --reference runs it and prints
the ratios; it runs alone as well:

  reference_sd.py --model CKPT [--golden DIR] [--size 512] [--threads 2] [--repeat 1] [--json FILE]
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import safetensors_io  # noqa: E402

UNET = "model.diffusion_model."
VAE = "first_stage_model."
SCALE_FACTOR = 0.18215


class Weights:
    """The checkpoint's tensors (fp32) under a prefix."""

    def __init__(self, tensors, prefix):
        self.tensors, self.prefix = tensors, prefix

    def __call__(self, name):
        key = self.prefix + name
        if key not in self.tensors:
            raise KeyError(f"checkpoint has no tensor {key}")
        return self.tensors[key]

    def has(self, name):
        return self.prefix + name in self.tensors


def conv(w, p, x, stride=1):
    weight = w(p + ".weight")
    return F.conv2d(x, weight, w(p + ".bias"), stride=stride, padding=weight.shape[-1] // 2)


def linear(w, p, x, bias=True):
    return F.linear(x, w(p + ".weight"), w(p + ".bias") if bias else None)


def group_norm(w, p, x, eps):
    return F.group_norm(x, 32, w(p + ".weight"), w(p + ".bias"), eps)


def layer_norm(w, p, x):
    return F.layer_norm(x, (x.shape[-1],), w(p + ".weight"), w(p + ".bias"), 1e-5)


# ---- UNet (ldm/modules/diffusionmodules/openaimodel.py, ldm/modules/attention.py) ----

def timestep_embedding(t, dim):
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def res_block(w, p, x, emb):
    h = conv(w, p + ".in_layers.2", F.silu(group_norm(w, p + ".in_layers.0", x, 1e-5)))
    h = h + linear(w, p + ".emb_layers.1", F.silu(emb))[:, :, None, None]
    h = conv(w, p + ".out_layers.3", F.silu(group_norm(w, p + ".out_layers.0", h, 1e-5)))
    skip = conv(w, p + ".skip_connection", x) if w.has(p + ".skip_connection.weight") else x
    return skip + h


def cross_attention(w, p, x, context, heads):
    context = x if context is None else context
    q, k, v = (linear(w, f"{p}.to_{n}", s, bias=False) for n, s in (("q", x), ("k", context), ("v", context)))
    b, n, inner = q.shape
    d = inner // heads
    q, k, v = (t.reshape(b, -1, heads, d).permute(0, 2, 1, 3).reshape(b * heads, -1, d) for t in (q, k, v))
    sim = torch.einsum("b i d, b j d -> b i j", q, k) * d ** -0.5
    out = torch.einsum("b i j, b j d -> b i d", sim.softmax(dim=-1), v)
    out = out.reshape(b, heads, n, d).permute(0, 2, 1, 3).reshape(b, n, inner)
    return linear(w, p + ".to_out.0", out)


def spatial_transformer(w, p, x, context, heads):
    b, c, hh, ww = x.shape
    h = conv(w, p + ".proj_in", group_norm(w, p + ".norm", x, 1e-6))
    h = h.reshape(b, c, hh * ww).transpose(1, 2)
    t = p + ".transformer_blocks.0"
    h = cross_attention(w, t + ".attn1", layer_norm(w, t + ".norm1", h), None, heads) + h
    h = cross_attention(w, t + ".attn2", layer_norm(w, t + ".norm2", h), context, heads) + h
    a, gate = linear(w, t + ".ff.net.0.proj", layer_norm(w, t + ".norm3", h)).chunk(2, dim=-1)
    h = linear(w, t + ".ff.net.2", a * F.gelu(gate)) + h
    h = h.transpose(1, 2).reshape(b, c, hh, ww)
    return conv(w, p + ".proj_out", h) + x


def unet_block(w, p, x, emb, context, heads):
    """One input/output block: its layers in order, by what the checkpoint holds."""
    i = 0
    while w.has(f"{p}.{i}.in_layers.0.weight") or w.has(f"{p}.{i}.norm.weight") or \
            w.has(f"{p}.{i}.op.weight") or w.has(f"{p}.{i}.conv.weight"):
        q = f"{p}.{i}"
        if w.has(q + ".in_layers.0.weight"):
            x = res_block(w, q, x, emb)
        elif w.has(q + ".norm.weight"):
            x = spatial_transformer(w, q, x, context, heads)
        elif w.has(q + ".op.weight"):
            x = conv(w, q + ".op", x, stride=2)
        else:
            x = conv(w, q + ".conv", F.interpolate(x, scale_factor=2.0, mode="nearest"))
        i += 1
    return x


def unet(w, x, t, context, heads=8):
    emb = linear(w, "time_embed.2", F.silu(linear(w, "time_embed.0", timestep_embedding(t, 320))))
    h = conv(w, "input_blocks.0.0", x)
    skips = [h]
    i = 1
    while w.has(f"input_blocks.{i}.0.in_layers.0.weight") or w.has(f"input_blocks.{i}.0.op.weight"):
        h = unet_block(w, f"input_blocks.{i}", h, emb, context, heads)
        skips.append(h)
        i += 1
    h = unet_block(w, "middle_block", h, emb, context, heads)
    i = 0
    while w.has(f"output_blocks.{i}.0.in_layers.0.weight"):
        h = unet_block(w, f"output_blocks.{i}", torch.cat([h, skips.pop()], dim=1), emb, context, heads)
        i += 1
    return conv(w, "out.2", F.silu(group_norm(w, "out.0", h, 1e-5)))


# ---- VAE decoder (ldm/modules/diffusionmodules/model.py) ----

def vae_resnet(w, p, x):
    h = conv(w, p + ".conv1", F.silu(group_norm(w, p + ".norm1", x, 1e-6)))
    h = conv(w, p + ".conv2", F.silu(group_norm(w, p + ".norm2", h, 1e-6)))
    skip = conv(w, p + ".nin_shortcut", x) if w.has(p + ".nin_shortcut.weight") else x
    return skip + h


def vae_attention(w, p, x):
    h = group_norm(w, p + ".norm", x, 1e-6)
    q, k, v = (conv(w, f"{p}.{n}", h) for n in "qkv")
    b, c, hh, ww = q.shape
    q = q.reshape(b, c, hh * ww).permute(0, 2, 1)
    weights = torch.bmm(q, k.reshape(b, c, hh * ww)) * (int(c) ** -0.5)
    weights = F.softmax(weights, dim=2)
    h = torch.bmm(v.reshape(b, c, hh * ww), weights.permute(0, 2, 1)).reshape(b, c, hh, ww)
    return x + conv(w, p + ".proj_out", h)


def vae_decode(w, latent):
    z = conv(w, "post_quant_conv", latent / SCALE_FACTOR)
    h = conv(w, "decoder.conv_in", z)
    h = vae_resnet(w, "decoder.mid.block_1", h)
    h = vae_attention(w, "decoder.mid.attn_1", h)
    h = vae_resnet(w, "decoder.mid.block_2", h)
    level = 0
    while w.has(f"decoder.up.{level + 1}.block.0.conv1.weight"):
        level += 1
    for lv in range(level, -1, -1):
        b = 0
        while w.has(f"decoder.up.{lv}.block.{b}.conv1.weight"):
            h = vae_resnet(w, f"decoder.up.{lv}.block.{b}", h)
            b += 1
        if w.has(f"decoder.up.{lv}.upsample.conv.weight"):
            h = conv(w, f"decoder.up.{lv}.upsample.conv", F.interpolate(h, scale_factor=2.0, mode="nearest"))
    return conv(w, "decoder.conv_out", F.silu(group_norm(w, "decoder.norm_out", h, 1e-6)))


# ---- checks and timings ----

def max_abs(a, b):
    return float((a - b).abs().max())


def check_goldens(u, v, golden_dir):
    """max-abs error of this reference against the goldens; raises when over the fp32 bound."""
    g = safetensors_io.load(os.path.join(golden_dir, "unet.safetensors"))
    errors = {}
    for t in g["timesteps"].tolist():
        eps = unet(u, g[f"t{t}.latent"], torch.full((2,), t, dtype=torch.int64), g[f"t{t}.context"])
        errors[f"unet t{t}"] = max_abs(eps, g[f"t{t}.eps"])
    gv = safetensors_io.load(os.path.join(golden_dir, "vae.safetensors"))
    errors["vae decoder"] = max_abs(vae_decode(v, gv["decoder.latent"]), gv["decoder.image"])
    worst = max(errors.values())
    if worst > 1e-4:
        raise SystemExit(f"reference_sd: off the goldens ({errors}); not timing a different computation")
    return errors


def timed(fn, repeat):
    """As sd-bench times its cases: a first run under 2 s is an untimed warm-up; the median of `repeat`."""
    def once():
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    first = once()
    seconds = [first] if first >= 2.0 else []
    while len(seconds) < repeat:
        seconds.append(once())
    return statistics.median(seconds), seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="SD v1.x checkpoint (.safetensors, CompVis layout)")
    ap.add_argument("--golden", help="golden vectors directory (checked first when given)")
    ap.add_argument("--size", type=int, default=512, help="image side in pixels, a multiple of 8")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="ATen intra-op threads")
    ap.add_argument("--repeat", type=int, default=1, help="timed runs per case (median reported)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    if args.size % 8 or args.size <= 0:
        ap.error("--size must be a positive multiple of 8")
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    # In memory, as the reference holds a loaded model (not pages of a file mapped on first use).
    tensors = {k: t.float().clone() for k, t in safetensors_io.load(args.model).items()
               if k.startswith(UNET) or k.startswith(VAE + "decoder.") or k.startswith(VAE + "post_quant_conv.")}
    u, v = Weights(tensors, UNET), Weights(tensors, VAE)
    result = {"torch": torch.__version__, "threads": args.threads, "size": args.size}
    if args.golden:
        result["golden_max_abs"] = check_goldens(u, v, args.golden)
    gen = torch.Generator().manual_seed(0)
    side = args.size // 8
    latent = torch.randn(2, 4, side, side, generator=gen)
    context = torch.randn(2, 77, 768, generator=gen)
    t = torch.full((2,), 500, dtype=torch.int64)
    cases = {"unet2": lambda: unet(u, latent, t, context), "vae_dec": lambda: vae_decode(v, latent[:1])}
    for name, fn in cases.items():
        median, runs = timed(fn, args.repeat)
        result[name] = {"seconds": median, "runs": runs}
        print(f"reference_sd: {name} {median:.2f} s (runs: {', '.join(f'{s:.2f}' for s in runs)})", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
