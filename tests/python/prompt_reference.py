#!/usr/bin/env python3
"""An independent reference for sdgraph's prompt features, written the way the tools themselves do it
(regular expressions and recursion in Python, not a port of our C++), for the tests to compare with.

  prompt_reference.py parse IN.json OUT.json
      IN: ["prompt", ...]; OUT: {"a1111": [[[text, weight, is_break], ...], ...], "comfy": [...]}
  prompt_reference.py weight IN.safetensors OUT.safetensors
      IN: "context" [R, 77, W] (the encoder's chunks; under comfy the last row is the empty prompt's)
          and "weights" [K, 77]; OUT: "a1111" and "comfy": [1, 77*K, W]
  prompt_reference.py clip CHECKPOINT.safetensors HEADS IN.safetensors OUT.safetensors
      IN: "tokens" int64 [B, T], "vectors" [N, W] (ids >= vocab size pick its rows), "clip_skip" [1];
      OUT: "context": CLIP's text encoder in plain torch from the checkpoint's tensors.
  prompt_reference.py ti-pt OUT.pt N W SEED
      A textual-inversion file as AUTOMATIC1111's trainer saves it (string_to_param as a Parameter).
"""
import json
import re
import sys

import torch

from safetensors_io import load, save


# --- AUTOMATIC1111: one regular expression, bracket positions in two stacks -------------------------
# AUTOMATIC1111's expression, but with a number that float() accepts: where theirs raises on
# "(a:1.2.3)", sdgraph reads the colon as text.
RE_ATTENTION = re.compile(r"\\\(|\\\)|\\\[|\\]|\\\\|\\|\(|\[|:\s*([+-]?(?:\d+\.?\d*|\.\d+))\s*\)|\)|]|[^\\()\[\]:]+|:", re.X)
RE_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)


def parse_a1111(text):
    res, round_b, square_b = [], [], []

    def multiply_range(start, m):
        for p in range(start, len(res)):
            res[p][1] *= m

    for m in RE_ATTENTION.finditer(text):
        t, weight = m.group(0), m.group(1)
        if t.startswith("\\"):
            res.append([t[1:] if len(t) > 1 else "\\", 1.0])
        elif t == "(":
            round_b.append(len(res))
        elif t == "[":
            square_b.append(len(res))
        elif weight is not None and round_b:
            multiply_range(round_b.pop(), float(weight))
        elif t == ")" and round_b:
            multiply_range(round_b.pop(), 1.1)
        elif t == "]" and square_b:
            multiply_range(square_b.pop(), 1 / 1.1)
        else:
            for i, part in enumerate(RE_BREAK.split(t)):
                if i > 0:
                    res.append(["BREAK", -1])
                res.append([part, 1.0])
    for pos in round_b:
        multiply_range(pos, 1.1)
    for pos in square_b:
        multiply_range(pos, 1 / 1.1)
    return res


# --- ComfyUI: escape, split into top-level groups, recurse ------------------------------------------
def parse_parentheses(s):
    result, current, level = [], "", 0
    for ch in s:
        if ch == "(":
            if level == 0:
                if current:
                    result.append(current)
                current = "("
            else:
                current += ch
            level += 1
        elif ch == ")":
            level -= 1
            if level == 0:
                result.append(current + ")")
                current = ""
            else:
                current += ch
        else:
            current += ch
    if current:
        result.append(current)
    return result


def token_weights(s, weight):
    out = []
    for x in parse_parentheses(s):
        w = weight
        if len(x) >= 2 and x[0] == "(" and x[-1] == ")":
            x = x[1:-1]
            xx = x.rfind(":")
            w *= 1.1
            if xx > 0:
                try:
                    w = float(x[xx + 1 :])
                    x = x[:xx]
                except ValueError:
                    pass
            out += token_weights(x, w)
        else:
            out.append([x, weight])
    return out


def parse_comfy(text):
    text = text.replace("\\(", "\0\1").replace("\\)", "\0\2")
    # sdgraph's rule for both dialects: a ")" that closes nothing is text; open brackets close at the end.
    level, fixed = 0, ""
    for ch in text:
        if ch == "(":
            level += 1
        elif ch == ")":
            if level == 0:
                fixed += "\0\2"
                continue
            level -= 1
        fixed += ch
    fixed += ")" * level
    res = []
    for t, w in token_weights(fixed, 1.0):
        t = t.replace("\0\1", "(").replace("\0\2", ")")
        for i, part in enumerate(RE_BREAK.split(t)):
            if i > 0:
                res.append(["BREAK", -1])
            res.append([part, w])
    return res


def tidy(res):
    """Empty text dropped, equal neighbours merged, BREAKs as ["", 1, true]. A BREAK inside brackets
    (weight -1 times theirs) is still a BREAK: AUTOMATIC1111 would encode the word "BREAK" with a
    negative weight there."""
    out = []
    for t, w in res:
        brk = w < 0 and t == "BREAK"
        if not brk and t == "":
            continue
        if brk:
            out.append(["", 1.0, True])
        elif out and not out[-1][2] and out[-1][1] == w:
            out[-1][0] += t
        else:
            out.append([t, w, False])
    return out or [["", 1.0, False]]


# --- weighting arithmetic -------------------------------------------------------------------------
def weight(context, weights):
    k = weights.shape[0]
    a1111, comfy = [], []
    for i in range(k):
        z, w = context[i].double(), weights[i].double()[:, None]
        if (w != 1).any():
            before = z.mean()
            za = z * w
            za = za * (before / za.mean())
        else:
            za = z
        a1111.append(za)
    empty = context[-1].double()
    for i in range(k):
        z = context[i].double().clone()
        for j in range(z.shape[0]):
            wj = float(weights[i, j])
            if wj != 1.0:
                z[j] = (z[j] - empty[j]) * wj + empty[j]
        comfy.append(z)
    return {"a1111": torch.cat(a1111).float()[None], "comfy": torch.cat(comfy).float()[None]}


# --- CLIP's text tower, plainly -------------------------------------------------------------------
def clip(ckpt, heads, tokens, vectors, clip_skip):
    p = "cond_stage_model.transformer.text_model."
    w = load(ckpt)
    g = lambda n: w[p + n].float()
    emb = g("embeddings.token_embedding.weight")
    vocab = emb.shape[0]
    table = torch.cat([emb, vectors.float()]) if vectors.numel() else emb
    x = table[tokens] + g("embeddings.position_embedding.weight")[: tokens.shape[1]]
    n_layers = len({k.split(".")[5] for k in w if k.startswith(p + "encoder.layers.")})
    B, T, W = x.shape
    mask = torch.full((T, T), float("-inf")).triu(1)
    for i in range(n_layers - (clip_skip - 1)):
        L = lambda n: g(f"encoder.layers.{i}.{n}")
        h = torch.nn.functional.layer_norm(x, (W,), L("layer_norm1.weight"), L("layer_norm1.bias"))
        q, k, v = (h @ L(f"self_attn.{n}_proj.weight").T + L(f"self_attn.{n}_proj.bias") for n in "qkv")
        split = lambda t: t.view(B, T, heads, W // heads).transpose(1, 2)
        a = (split(q) @ split(k).transpose(-1, -2)) / (W // heads) ** 0.5 + mask
        o = (a.softmax(-1) @ split(v)).transpose(1, 2).reshape(B, T, W)
        x = x + o @ L("self_attn.out_proj.weight").T + L("self_attn.out_proj.bias")
        h = torch.nn.functional.layer_norm(x, (W,), L("layer_norm2.weight"), L("layer_norm2.bias"))
        h = h @ L("mlp.fc1.weight").T + L("mlp.fc1.bias")
        h = h * torch.sigmoid(1.702 * h)
        x = x + h @ L("mlp.fc2.weight").T + L("mlp.fc2.bias")
    del vocab
    return torch.nn.functional.layer_norm(x, (W,), g("final_layer_norm.weight"), g("final_layer_norm.bias"))


def main(argv):
    cmd = argv[1]
    if cmd == "parse":
        prompts = json.load(open(argv[2]))
        out = {"a1111": [tidy(parse_a1111(p)) for p in prompts], "comfy": [tidy(parse_comfy(p)) for p in prompts]}
        json.dump(out, open(argv[3], "w"))
    elif cmd == "weight":
        t = load(argv[2])
        save(argv[3], weight(t["context"], t["weights"]))
    elif cmd == "clip":
        t = load(argv[4])
        ctx = clip(argv[2], int(argv[3]), t["tokens"], t["vectors"], int(t["clip_skip"][0]))
        save(argv[5], {"context": ctx.contiguous()})
    elif cmd == "ti-pt":
        n, width, seed = int(argv[3]), int(argv[4]), int(argv[5])
        g = torch.Generator().manual_seed(seed)
        param = torch.nn.Parameter(torch.randn(n, width, generator=g))
        torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": param}, "name": "x",
                    "step": 100, "sd_checkpoint": "0123456789", "sd_checkpoint_name": "model"}, argv[2])
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main(sys.argv)
