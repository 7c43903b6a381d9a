#!/usr/bin/env python3
"""Writes a corpus of hostile or broken PyTorch-style checkpoints for the .ckpt reader's security tests.

usage: write_hostile_ckpts.py OUTDIR CANARY

Every payload that could run code tries to create the file CANARY; the test asserts it never appears.
Each OUTDIR/<case>.ckpt must be rejected; OUTDIR/expected.json maps each case to {"error": a substring
the reader's error must contain, "code": its absl status code name}. Pickles are assembled opcode by opcode (pickle's own opcodes, protocol 2),
so no code from here runs at write time either.
"""
import io
import json
import os
import struct
import sys
import zipfile


def s(text):  # BINUNICODE
    b = text.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def i(v):  # BININT (signed 32-bit) or LONG1 for wider values
    if -(2**31) <= v < 2**31:
        return b"J" + struct.pack("<i", v)
    b = v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(b)]) + b


def glob(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def tup(*items):
    return b"(" + b"".join(items) + b"t"


def tensor(key, numel, offset, size, stride, storage="FloatStorage"):
    pid = tup(s("storage"), glob("torch", storage), s(key), s("cpu"), i(numel))
    args = tup(pid + b"Q", i(offset), tup(*map(i, size)), tup(*map(i, stride)), b"\x89",
               glob("collections", "OrderedDict") + b")R")
    return glob("torch._utils", "_rebuild_tensor_v2") + args + b"R"


def state_dict(*entries):
    body = b"".join(s(k) + v for k, v in entries)
    return b"\x80\x02" + glob("collections", "OrderedDict") + b")R(" + body + b"u."


def archive(pkl, records=None, prefix="archive", compress=False, names=None):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as z:
        z.writestr((names or {}).get("pkl", prefix + "/data.pkl"), pkl)
        for key, data in (records or {}).items():
            z.writestr(prefix + "/data/" + key, data)
        z.writestr(prefix + "/version", b"3\n")
    return buf.getvalue()


def main():
    outdir, canary = sys.argv[1], sys.argv[2]
    os.makedirs(outdir, exist_ok=True)
    cmd = "touch " + canary
    floats16 = struct.pack("<16f", *range(16))
    cases = {}

    def case(name, data, expect, code="INVALID_ARGUMENT"):
        with open(os.path.join(outdir, name + ".ckpt"), "wb") as f:
            f.write(data)
        cases[name] = {"error": expect, "code": code}

    call = lambda mod, fn, *args: glob(mod, fn) + tup(*args) + b"R"
    case("global_os_system", archive(b"\x80\x02" + call("os", "system", s(cmd)) + b"."), "os.system")
    case("global_posix_system", archive(b"\x80\x02" + call("posix", "system", s(cmd)) + b"."), "posix.system")
    case("global_builtins_eval",
         archive(b"\x80\x02" + call("builtins", "eval", s("__import__('os').system('%s')" % cmd)) + b"."),
         "builtins.eval")
    case("global_builtin_exec_py2",
         archive(b"\x80\x02" + call("__builtin__", "exec", s("open('%s','w')" % canary)) + b"."),
         "__builtin__.exec")
    stack_global = s("subprocess") + s("Popen") + b"\x93"
    case("stack_global_subprocess_popen",
         archive(b"\x80\x04" + stack_global + b"(" + b"]" + b"(" + s("touch") + s(canary) + b"e" + b"tR."),
         "subprocess.Popen")
    # getattr(__import__('os'), 'system')(cmd): REDUCE on the result of REDUCE.
    nested = glob("builtins", "getattr") + tup(call("builtins", "__import__", s("os")), s("system")) + b"R"
    case("nested_reduce_getattr", archive(b"\x80\x02" + nested + tup(s(cmd)) + b"R."), "builtins.getattr")
    # Nested REDUCE through unknown (not known-dangerous) globals: opaque values, never called; the
    # result is not a state dict.
    unknown = glob("evil.factory", "make") + tup(s(cmd)) + b"R"
    case("nested_reduce_unknown", archive(b"\x80\x02" + unknown + tup(s(cmd)) + b"R."), "not a dict")
    # BUILD on an unknown class placed where a tensor belongs.
    payload = glob("evil.payload", "Payload") + b")\x81" + b"}" + s("cmd") + s(cmd) + b"sb"
    case("build_unknown_class_as_tensor", archive(state_dict(("weight", payload))),
         "object of class evil.payload.Payload, not a tensor")
    case("build_on_global", archive(b"\x80\x02" + glob("evil", "Cls") + b"}b."), "BUILD on the global")
    case("inst_opcode_protocol0",
         archive(b"(S'" + cmd.encode() + b"'\nios\nsystem\n."), "unsupported opcode")
    case("storage_offset_past_end",
         archive(state_dict(("w", tensor("0", 16, 10, [4, 2], [2, 1]))), {"0": floats16}),
         "reaches element")
    case("numel_past_record",
         archive(state_dict(("w", tensor("0", 1 << 30, 0, [4], [1]))), {"0": floats16}), "record holds")
    case("negative_size",
         archive(state_dict(("w", tensor("0", 16, 0, [-4, 4], [4, 1]))), {"0": floats16}), "non-negative")
    case("negative_offset",
         archive(state_dict(("w", tensor("0", 16, -4, [4], [1]))), {"0": floats16}), "offset")
    case("overflowing_size",
         archive(state_dict(("w", tensor("0", 16, 0, [1 << 40, 1 << 40], [1, 1]))), {"0": floats16}),
         "overflow")
    case("overflowing_stride",
         archive(state_dict(("w", tensor("0", 16, 0, [2, 2], [1 << 62, 1]))), {"0": floats16}),
         "overflow")
    # Offsets and strides whose sums wrap past 2^64 so that the last element "lands" inside the storage.
    case("offset_near_2_63_wraps",
         archive(state_dict(("w", tensor("0", 16, (1 << 63) - 8, [2, 2], [(1 << 63) - 1, 12]))), {"0": floats16}),
         "outside its storage")
    case("offset_past_storage_empty_shape",
         archive(state_dict(("w", tensor("0", 16, 17, [0], [1]))), {"0": floats16}), "outside its storage")
    case("offset_at_end_of_storage",
         archive(state_dict(("w", tensor("0", 16, 16, [1], [1]))), {"0": floats16}), "outside its storage")
    case("strides_wrap_into_storage",
         archive(state_dict(("w", tensor("0", 16, 10, [3], [(1 << 63) - 1]))), {"0": floats16}), "overflow")
    case("strides_wrap_two_dims",
         archive(state_dict(("w", tensor("0", 16, 1, [2, 3], [(1 << 63) - 1, (1 << 62) + 1]))), {"0": floats16}),
         "overflow")
    case("numel_wraps_to_small",
         archive(state_dict(("w", tensor("0", 16, 0, [1 << 32, 1 << 32, 2], [0, 0, 1]))), {"0": floats16}),
         "overflow")
    # Memory bombs inside the format's limits: 3 MB of empty lists (each a heap object), and 3 MB of
    # memoized empty dicts. Refused by the object budget, cheaply.
    case("bomb_empty_lists", archive(b"\x80\x02" + b"]" * (3 << 20) + b"."), "budget", "RESOURCE_EXHAUSTED")
    case("bomb_memoized_dicts", archive(b"\x80\x04" + b"}\x94" * (3 << 19) + b"."), "budget",
         "RESOURCE_EXHAUSTED")
    case("huge_int", archive(state_dict(("w", b"\x8a\x10" + b"\xff" * 16))), "wider than 64 bits")
    case("missing_storage_record",
         archive(state_dict(("w", tensor("7", 16, 0, [16], [1]))), {"0": floats16}), "is missing")
    case("storage_key_traversal",
         archive(state_dict(("w", tensor("../../x", 16, 0, [16], [1]))), {"0": floats16}), "plain name")
    case("unknown_storage_class",
         archive(state_dict(("w", tensor("0", 16, 0, [16], [1], "EvilStorage"))), {"0": floats16}),
         "unknown storage class")
    good = archive(state_dict(("w", tensor("0", 16, 0, [16], [1]))), {"0": floats16})
    case("truncated_zip", good[: len(good) // 2], "end-of-central-directory")
    case("truncated_zip_tail", good[:-10], "end-of-central-directory")
    case("zip_path_traversal",
         archive(state_dict(("w", tensor("0", 16, 0, [16], [1]))), {"0": floats16},
                 names={"pkl": "../../archive/data.pkl"}), "escapes the archive")
    case("zip_absolute_name",
         archive(state_dict(("w", tensor("0", 16, 0, [16], [1]))), {"0": floats16},
                 names={"pkl": "/tmp/archive/data.pkl"}), "escapes the archive")
    case("zip_compressed", archive(state_dict(("w", tensor("0", 16, 0, [16], [1]))), {"0": floats16},
                                   compress=True), "compressed")
    case("memo_get_unset", archive(b"\x80\x02h\x05."), "never stored")
    case("deeply_nested_lists", archive(b"\x80\x02" + b"]" * 5000 + b"a" * 4999 + b"."), "nested too deeply")
    case("deeply_nested_tuples", archive(b"\x80\x02" + b")" + b"\x85" * 5000 + b"."), "nested too deeply")
    case("no_stop", archive(b"\x80\x02}"), "no STOP")
    case("top_level_list", archive(b"\x80\x02]."), "not a dict")
    case("not_a_zip", b"PK\x03\x04" + b"\x00" * 100, "end-of-central-directory")
    case("empty_file", b"", "not a checkpoint")
    with open(os.path.join(outdir, "expected.json"), "w") as f:
        json.dump(cases, f, indent=1)


if __name__ == "__main__":
    main()
