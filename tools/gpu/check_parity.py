#!/usr/bin/env python3
"""Checks sd-bench's error table (--json) against the fp32 bound: every stage's f32 max-abs against
the goldens at most BOUND; prints the table of every dtype (f16's is reported, not bounded).

usage: check_parity.py BENCH.json BOUND      exit 1 when an f32 stage is over BOUND or none was run
"""
import json
import sys


def main(path, bound):
    with open(path, encoding="utf-8") as f:
        rows = json.load(f).get("accuracy", [])
    if not any(r["dtype"] == "f32" for r in rows):
        print(f"check_parity: {path} has no f32 accuracy rows (were the goldens found?)")
        return 1
    failed = []
    print(f"{'dtype':6} {'stage':22} {'max-abs':>10} {'rel':>10}")
    for r in rows:
        over = r["dtype"] == "f32" and r["max_abs"] > bound
        print(f"{r['dtype']:6} {r['stage']:22} {r['max_abs']:10.3e} {r['rel']:10.3e}{'  OVER' if over else ''}")
        if over:
            failed.append(r["stage"])
    if failed:
        print(f"check_parity: f32 over {bound:g} max-abs on: {', '.join(failed)}")
        return 1
    print(f"check_parity: every f32 stage within {bound:g} max-abs")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], float(sys.argv[2])))
