"""Keeps DESIGN.md true: every repository path it names (a word with a '/' in backticks or in a fenced
block, optionally a glob like nodes/weights/lora*.cc) exists. Placeholders (<kind>) are skipped.

usage: check_design_doc.py REPO_ROOT       Exits non-zero listing every missing path.
"""
import glob
import os
import re
import sys

root = sys.argv[1]
with open(os.path.join(root, "DESIGN.md"), encoding="utf-8") as f:
    text = f.read()
top = {e for e in os.listdir(root) if os.path.isdir(os.path.join(root, e)) and not e.startswith(".")}
top.discard("build")
missing, checked = [], 0
# Fenced blocks (the layer diagram): every word with a '/'; the prose: what is in backticks.
fenced = re.findall(r"```.*?```", text, flags=re.S)
prose = re.sub(r"```.*?```", "", text, flags=re.S)
spans = re.findall(r"`([^`]+)`", prose) + fenced
for span in spans:
    for word in span.replace("`", " ").split():
        word = word.rstrip(",.;:)")
        if "/" not in word or "<" in word or word.startswith(("-", "dns:", "http")):
            continue
        if not re.match(r"^[A-Za-z0-9_.*/-]+$", word) or word.startswith("/"):
            continue
        if word.split("/")[0] not in top:  # a node name ("denoise/eps/unet_cond"), not a path
            continue
        checked += 1
        if not glob.glob(os.path.join(root, word)):
            missing.append(word)
for m in missing:
    print("DESIGN.md names a path that does not exist:", m)
print(f"checked {checked} paths")
sys.exit(1 if missing or checked < 20 else 0)
