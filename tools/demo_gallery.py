#!/usr/bin/env python3
"""Regenerates the demo model's gallery in README: txt2img in several colours, shapes, sizes and places
(two of them triples the model never saw in training), img2img and inpainting (by the demo
model's inpainting variant, which `sd-graph inpaint` runs when no model is named), each at the model's native
64x64, plus one grid picture (each image scaled x2, nearest) of all of them; then sketches and what the demo
ControlNet (sd-demo-shapes-canny) makes of them.

    tools/demo_gallery.py [--sdgraph build/host_plugin/cli/sd-graph] [--out deploy/models/gallery]

Python's standard library only: sd-graph writes PPM files, this script composes the grid and writes PNGs.
"""
import argparse
import os
import struct
import subprocess
import sys
import tempfile
import zlib

TXT2IMG = [
    ("a red circle on a blue background", 42),
    ("a green square on a yellow background", 42),
    ("a large white triangle on a black background", 42),
    ("an orange circle on the left on a purple background", 42),
    ("a small yellow square at the top on a green background", 42),
    ("a purple triangle on the right on a white background", 42),
    ("a blue circle on a yellow background", 42),  # held out of training
    ("a green square on a purple background", 42),  # held out of training
]
IMG2IMG = ("a yellow circle on a blue background", 0.6)  # from the first txt2img picture
# The demo ControlNet: a sketch (a filled shape: its Canny edges are the hint) and a prompt that
# names the colours. (shape, centre x, centre y, prompt)
CONTROLNET = [
    ("square", 0.27, 0.5, "a red square on a yellow background"),
    ("triangle", 0.5, 0.27, "a blue triangle on a white background"),
    ("circle", 0.73, 0.73, "a green circle on a purple background"),
]
INPAINT = "a white square on the right on a blue background"  # its right half repainted


def read_ppm(path):
    with open(path, "rb") as f:
        data = f.read()
    fields, pos = [], 0
    while len(fields) < 4:
        while data[pos:pos + 1].isspace():
            pos += 1
        if data[pos:pos + 1] == b"#":
            pos = data.index(b"\n", pos)
            continue
        end = pos
        while not data[end:end + 1].isspace():
            end += 1
        fields.append(data[pos:end])
        pos = end
    if fields[0] != b"P6" or fields[3] != b"255":
        raise ValueError(f"{path}: not an 8-bit binary PPM")
    w, h = int(fields[1]), int(fields[2])
    return w, h, data[pos + 1:pos + 1 + w * h * 3]


def write_png(path, w, h, rgb):
    rows = b"".join(b"\x00" + rgb[y * w * 3:(y + 1) * w * 3] for y in range(h))

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(png)


def write_ppm(path, w, h, rgb):
    with open(path, "wb") as f:
        f.write(b"P6\n%d %d\n255\n" % (w, h) + rgb)


def sketch(shape, cx, cy, size=64, radius=0.21):
    """A black shape on white, as a user would draw one, as size x size RGB bytes."""
    r, out = radius * size, bytearray()
    for y in range(size):
        for x in range(size):
            dx, dy = x + 0.5 - cx * size, y + 0.5 - cy * size
            if shape == "circle":
                inside = dx * dx + dy * dy <= r * r
            elif shape == "square":
                inside = abs(dx) <= r * 0.886 and abs(dy) <= r * 0.886
            else:  # an upright triangle: apex at the top
                inside = -r <= dy <= r * 0.5 and abs(dx) <= (dy + r) * 0.577
            out += b"\x14\x14\x14" if inside else b"\xf5\xf5\xf5"
    return bytes(out)


def grid(images, columns, scale, gap=4):
    w, h = images[0][0], images[0][1]
    rows = (len(images) + columns - 1) // columns
    gw, gh = columns * (w * scale + gap) + gap, rows * (h * scale + gap) + gap
    out = bytearray(b"\xff" * gw * gh * 3)
    for i, (_, _, px) in enumerate(images):
        ox, oy = gap + (i % columns) * (w * scale + gap), gap + (i // columns) * (h * scale + gap)
        for y in range(h * scale):
            for x in range(w * scale):
                s = ((y // scale) * w + x // scale) * 3
                d = ((oy + y) * gw + ox + x) * 3
                out[d:d + 3] = px[s:s + 3]
    return gw, gh, bytes(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sdgraph", default="build/host_plugin/cli/sd-graph")
    ap.add_argument("--out", default="deploy/models/gallery")
    ap.add_argument("--model", default="", help="default: the demo model sd-graph finds")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    model = ["--model", args.model] if args.model else []
    tmp = tempfile.mkdtemp(prefix="sdgraph-gallery-")

    def run(*argv):
        cmd = [args.sdgraph, *argv, *model]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL)

    images, captions = [], []
    for i, (prompt, seed) in enumerate(TXT2IMG):
        ppm = os.path.join(tmp, f"txt2img_{i}.ppm")
        run("txt2img", "--prompt", prompt, "--seed", str(seed), "-o", ppm)
        images.append((ppm, f"txt2img_{i + 1}.png", f"txt2img: {prompt} (seed {seed})"))
    first = images[0][0]
    ppm = os.path.join(tmp, "img2img.ppm")
    run("img2img", "--init", first, "--prompt", IMG2IMG[0], "--strength", str(IMG2IMG[1]), "--seed", "42", "-o", ppm)
    images.append((ppm, "img2img.png", f"img2img of the first picture, strength {IMG2IMG[1]}: {IMG2IMG[0]}"))
    w, h, _ = read_ppm(first)
    mask = bytes(255 if x >= w // 2 else 0 for y in range(h) for x in range(w) for _ in range(3))
    mask_path = os.path.join(tmp, "mask.ppm")
    write_ppm(mask_path, w, h, mask)
    ppm = os.path.join(tmp, "inpaint.ppm")
    run("inpaint", "--init", first, "--mask", mask_path, "--prompt", INPAINT, "--seed", "42", "-o", ppm)
    images.append((ppm, "inpaint.png", f"inpainting the right half of the first picture: {INPAINT}"))

    decoded = []
    for ppm, name, caption in images:
        w, h, px = read_ppm(ppm)
        write_png(os.path.join(args.out, name), w, h, px)
        decoded.append((w, h, px))
        captions.append(f"{name}: {caption}")
    # ComfyUI workflows (graphs/examples/comfy_*.json) and the hires fix, beside the grid.
    examples = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "graphs", "examples")
    for name in ("comfy_txt2img", "comfy_hires_fix"):
        ppm = os.path.join(tmp, name + ".ppm")
        run("run", os.path.join(examples, name + ".json"), "-o", ppm)
        w, h, px = read_ppm(ppm)
        write_png(os.path.join(args.out, name + ".png"), w, h, px)
        captions.append(f"{name}.png: sd-graph run graphs/examples/{name}.json")
    ppm = os.path.join(tmp, "hires.ppm")
    run("txt2img", "--prompt", TXT2IMG[0][0], "--seed", "42", "--hires-scale", "2", "--sampler", "euler_a", "-o", ppm)
    w, h, px = read_ppm(ppm)
    write_png(os.path.join(args.out, "hires_fix.png"), w, h, px)
    captions.append(f"hires_fix.png: txt2img --hires-scale 2 --sampler euler_a: {TXT2IMG[0][0]} (seed 42)")
    # The demo ControlNet: each sketch, then what the prompt makes of its edges.
    for i, (shape, cx, cy, prompt) in enumerate(CONTROLNET):
        hint = os.path.join(tmp, f"sketch_{i}.ppm")
        write_ppm(hint, 64, 64, sketch(shape, cx, cy))
        write_png(os.path.join(args.out, f"sketch_{i + 1}.png"), 64, 64, read_ppm(hint)[2])
        ppm = os.path.join(tmp, f"controlnet_{i}.ppm")
        run("txt2img", "--prompt", prompt, "--seed", "42", "--controlnet", "sd-demo-shapes-canny.safetensors",
            "--hint", hint, "--hint-pass", "canny", "-o", ppm)
        w, h, px = read_ppm(ppm)
        write_png(os.path.join(args.out, f"controlnet_{i + 1}.png"), w, h, px)
        captions.append(f"controlnet_{i + 1}.png: txt2img --controlnet sd-demo-shapes-canny.safetensors "
                        f"--hint sketch_{i + 1}.png --hint-pass canny: {prompt} (seed 42)")
    gw, gh, px = grid(decoded, columns=5, scale=2)
    write_png(os.path.join(args.out, "grid.png"), gw, gh, px)
    with open(os.path.join(args.out, "captions.txt"), "w") as f:
        f.write("\n".join(captions) + "\n")
    print(f"wrote {len(images)} pictures, grid.png and captions.txt to {args.out}")


if __name__ == "__main__":
    sys.exit(main())
