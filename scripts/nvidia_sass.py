#!/usr/bin/env python3
"""Disassembles the machine code that NVIDIA's Vulkan driver compiled for
tritium's kernels, from the driver's shader disk cache.

Vulkan shows no compiled code or register counts, but the driver keeps every
pipeline it compiles in its disk cache: zstd frames, each compiled pipeline
one frame that starts with b"NVDANVVM" and holds the raw SM instruction words
(at the offset and size the u32 pair at byte 0x4c gives, plus 8; the layout
of driver 580). nvdisasm reads raw instruction words with `--binary SM90`.

    mkdir -p /tmp/glc
    __GL_SHADER_DISK_CACHE_PATH=/tmp/glc __GL_SHADER_DISK_CACHE_SKIP_CLEANUP=1 \\
        tritium bench --synthetic qwen2.5-32b -p 64 -n 8
    python3 scripts/nvidia_sass.py /tmp/glc sass/

writes sass/kNN.sass (one file a pipeline, in cache order) and prints, for
each, its instruction count, its highest register, its integer dot products
(IDP), loads (LDG, LDS) and barriers, and for each loop (a branch back) the
instructions of its body, their moves and their bounds tests (ISETP): enough
to tell the kernels apart and to see what a change to the WGSL did to them.
Needs the `zstandard` module and nvdisasm (CUDA's, or the
`nvidia-cuda-nvdisasm` package's); `--arch` for a GPU other than SM90.
"""

import argparse
import collections
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile

INSTRUCTION = re.compile(r"\s+/\*([0-9a-f]+)\*/\s+(@!?U?P\w+\s+)?([A-Z0-9_.]+)\s*([^;]*)")


def compiled_pipelines(cache_dir):
    """The raw instruction words of every compiled pipeline in the cache."""
    import zstandard

    decompressor = zstandard.ZstdDecompressor()
    for root, _, files in sorted(os.walk(cache_dir)):
        for name in sorted(files):
            data = open(os.path.join(root, name), "rb").read()
            at = data.find(b"\x28\xb5\x2f\xfd")  # zstd frame magic
            while at >= 0:
                try:
                    blob = decompressor.decompressobj().decompress(data[at:])
                except zstandard.ZstdError:
                    blob = b""
                if blob.startswith(b"NVDANVVM") and len(blob) >= 0x54:
                    size, offset = struct.unpack_from("<II", blob, 0x4C)
                    code = blob[offset + 8 : offset + 8 + size]
                    if len(code) == size and size % 16 == 0:
                        yield code
                at = data.find(b"\x28\xb5\x2f\xfd", at + 4)


def disassemble(nvdisasm, arch, code):
    with tempfile.NamedTemporaryFile(suffix=".bin") as f:
        f.write(code)
        f.flush()
        run = subprocess.run([nvdisasm, "--binary", arch, f.name], capture_output=True, text=True)
    return run.stdout


def summary(text):
    """(address, opcode, operands) of each instruction but NOPs."""
    rows = []
    for line in text.splitlines():
        m = INSTRUCTION.match(line)
        if m and m.group(3) != "NOP":
            rows.append((int(m.group(1), 16), m.group(3), m.group(4)))
    return rows


def describe(rows, text):
    ops = collections.Counter(op.split(".")[0] for _, op, _ in rows)
    registers = [int(r) for r in re.findall(r"\bR(\d+)\b", text)]
    head = (
        f"{len(rows)} instructions, registers up to R{max(registers, default=0)}, "
        f"IDP {ops['IDP']}, LDG {ops['LDG']}, LDS {ops['LDS']}, BAR {ops['BAR']}"
    )
    loops = []
    for address, op, operands in rows:
        target = re.search(r"0x([0-9a-f]+)", operands) if op == "BRA" else None
        if target and int(target.group(1), 16) < address:
            start = int(target.group(1), 16)
            body = [op for a, op, _ in rows if start <= a <= address]
            moves = sum(1 for op in body if op == "MOV" or op.startswith("IMAD.MOV"))
            tests = sum(1 for op in body if op.startswith("ISETP"))
            dots = sum(1 for op in body if op.startswith("IDP"))
            loops.append(
                f"  loop {start:#06x}-{address:#06x}: {len(body)} instructions, "
                f"{dots} IDP, {moves} moves, {tests} ISETP"
            )
    return [head] + loops


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cache_dir", help="the __GL_SHADER_DISK_CACHE_PATH the driver wrote")
    parser.add_argument("out_dir", help="where kNN.sass files go")
    parser.add_argument("--arch", default="SM90", help="nvdisasm's --binary architecture (default SM90)")
    parser.add_argument("--nvdisasm", default=shutil.which("nvdisasm"), help="path of nvdisasm")
    args = parser.parse_args()
    if not args.nvdisasm:
        sys.exit("nvdisasm not found: install CUDA's toolkit or `pip install nvidia-cuda-nvdisasm`, or pass --nvdisasm")
    os.makedirs(args.out_dir, exist_ok=True)
    count = 0
    for code in compiled_pipelines(args.cache_dir):
        text = disassemble(args.nvdisasm, args.arch, code)
        name = f"k{count:02d}"
        count += 1
        with open(os.path.join(args.out_dir, name + ".sass"), "w") as f:
            f.write(text)
        head, *loops = describe(summary(text), text)
        print(name, head)
        for loop in loops:
            print(loop)
    if count == 0:
        sys.exit(f"no compiled pipelines in {args.cache_dir}: did the driver write its cache there?")


if __name__ == "__main__":
    main()
