"""Checks the files under deploy/: every YAML, JSON and XML file parses, and every sd-worker / sd-graph
command written in them (Dockerfiles, compose, Kubernetes manifests, systemd units, farm job templates)
uses only binaries that exist and flags that the built binaries' --help lists.

usage: check_deploy.py DEPLOY_DIR BIN_DIR...   (BIN_DIRs hold the built sd-worker and sd-graph)
Exits non-zero listing every problem.
"""
import json
import os
import re
import shlex
import subprocess
import sys
import xml.etree.ElementTree as ET

import yaml

deploy, bin_dirs = sys.argv[1], sys.argv[2:]
binaries = {}
for d in bin_dirs:
    for name in ("sd-worker", "sd-graph"):
        if os.path.exists(os.path.join(d, name)):
            binaries[name] = os.path.join(d, name)
problems = []
checked = {"files": 0, "commands": 0, "flags": 0}
help_cache = {}


def help_text(binary, sub):
    key = (binary, sub)
    if key not in help_cache:
        cmd = [binaries[binary]] + ([sub] if sub else []) + ["--help"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        help_cache[key] = r.stdout + r.stderr if r.returncode == 0 else None
    return help_cache[key]


def check_tokens(tokens, where):
    """tokens: a command line, split; checks the sd-* invocation in it, if any."""
    targets = set()  # `cmake --build ... --target a b`: names of build targets, not commands
    for i, t in enumerate(tokens):
        if t == "--target":
            j = i + 1
            while j < len(tokens) and not tokens[j].startswith("-") and tokens[j] not in ("&&", "||", ";", "|"):
                targets.add(j)
                j += 1
    for i, t in enumerate(tokens):
        base = os.path.basename(t)
        if "=" in t or not re.fullmatch(r"sd-[a-z-]+", base) or i in targets:
            continue  # an assignment, another word, or a build target name
        if base not in ("sd-worker", "sd-graph"):
            if base not in ("sd-bench", "sd-rpc-bench"):
                problems.append(f"{where}: unknown binary {base}")
            return
        rest = tokens[i + 1:]
        for j, a in enumerate(rest):  # the command ends at a shell separator
            if a in ("&&", "||", ";", "|"):
                rest = rest[:j]
                break
        sub = None
        if base == "sd-graph":
            if not rest or rest[0].startswith("-"):
                problems.append(f"{where}: sd-graph without a subcommand")
                return
            sub, rest = rest[0], rest[1:]
        text = help_text(base, sub)
        if text is None:
            problems.append(f"{where}: `{base} {sub or ''} --help` failed (unknown subcommand?)")
            return
        checked["commands"] += 1
        for a in rest:
            if a.startswith("--") and len(a) > 2:
                flag = a.split("=", 1)[0]
                checked["flags"] += 1
                if not re.search(re.escape(flag) + r"(?![a-z-])", text):
                    problems.append(f"{where}: {base}{' ' + sub if sub else ''} has no flag {flag}")
        return


def split(line):
    try:
        return shlex.split(line, comments=False)
    except ValueError:
        return line.split()


def check_text(text, where):
    """Line-based: joins backslash continuations; Dockerfile ENTRYPOINT + CMD exec forms are combined."""
    text = re.sub(r"\\\n", " ", text)
    entrypoint = []
    executable = ""  # Deadline's CommandLine plugin: Executable= then Arguments=
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if s.startswith("#") or s.startswith("<!--"):
            continue
        m = re.match(r"(ENTRYPOINT|CMD)\s+(\[.*\])\s*$", s)
        if m:
            tokens = json.loads(m.group(2))
            if m.group(1) == "ENTRYPOINT":
                entrypoint = tokens
            else:
                check_tokens(entrypoint + tokens, f"{where}:{n}")
            continue
        if s.startswith("Executable="):
            executable = s[len("Executable="):]
            continue
        if s.startswith("Arguments="):
            s = executable + " " + s[len("Arguments="):]
        s = re.sub(r"^ExecStart=", "", s)
        s = re.sub(r"</?cmd>", " ", s)
        if "sd-worker" in s or "sd-graph" in s:
            check_tokens(split(s), f"{where}:{n}")


def walk_yaml(node, where):
    if isinstance(node, dict):
        cmd = []
        for key in ("entrypoint", "command", "args"):
            v = node.get(key)
            if isinstance(v, list):
                cmd += [str(x) for x in v]
            elif isinstance(v, str):
                cmd += split(v)
        if any(re.search(r"sd-(worker|graph)$", os.path.basename(t)) for t in cmd):
            check_tokens(cmd, where)
        elif node.get("args") and not node.get("command") and not node.get("entrypoint"):
            pass  # args for an image's own entrypoint: checked with the Dockerfile
        for k, v in node.items():
            if k == "data" and isinstance(v, str):
                check_text(v, where + " (embedded file)")
            else:
                walk_yaml(v, where)
    elif isinstance(node, list):
        for v in node:
            walk_yaml(v, where)


for root, _, files in os.walk(deploy):
    for f in sorted(files):
        path = os.path.join(root, f)
        rel = os.path.relpath(path, deploy)
        if f.endswith((".safetensors", ".png")):
            continue  # data (the demo model and its pictures), not configuration
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        checked["files"] += 1
        try:
            if f.endswith((".yaml", ".yml")):
                for doc in yaml.safe_load_all(text):
                    walk_yaml(doc, rel)
            elif f.endswith(".json"):
                json.loads(text)
            elif f.endswith(".xml"):
                ET.fromstring(re.sub(r"<!DOCTYPE[^>]*>", "", text).encode())
                check_text(text, rel)
            else:
                check_text(text, rel)
        except (yaml.YAMLError, json.JSONDecodeError, ET.ParseError) as e:
            problems.append(f"{rel}: does not parse: {e}")

# Images referencing built files must reference ones the build makes.
for p in problems:
    print("PROBLEM:", p)
print(f"checked {checked['files']} files, {checked['commands']} sd-worker/sd-graph commands, {checked['flags']} flags")
sys.exit(1 if problems else 0)
