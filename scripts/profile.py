#!/usr/bin/env python3
"""Guest-instruction profile of a boot, per function.

Boots a kernel under `-icount shift=0,sleep=off` with QEMU's `-d in_asm,exec,nochain` log:
`in_asm` gives every translated block's instructions, `exec` (unchained, so every block entry
is logged) the blocks in the order they ran. Each executed block adds its instruction count to
the function its first instruction belongs to, found in the symbol tables of the kernel and of
the user programs given with --elf (user programs share one address range; name the one the
profile is about). A block cut short by an interrupt or an I/O exit counts in full, so figures
are close to, not exactly, what the icount benchmarks print.

    scripts/profile.py --arch x86_64 --append "test=bench::iommu" \
        --elf target/user/x86_64-target/release/iommu-server [--window SYMBOL]

--window SYMBOL counts only between the first and the last execution of a function whose name
contains SYMBOL (for example the benchmark function), to leave boot and setup out; --from and
--to narrow it to one path inside (from the first run of one function to the next run of
another, for example the server's event thread to the driver's code after `fault_read`).
"""

import argparse
import bisect
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def symbols(elf):
    """Sorted (address, name) of the functions of `elf`."""
    out = subprocess.run(["nm", "-C", "--defined-only", "-n", elf], capture_output=True, text=True, check=True).stdout
    table = []
    for line in out.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[1] in "tTwW":
            table.append((int(parts[0], 16), parts[2]))
    return table


def parse_log(path):
    """Instruction count per block start address, and the executed block addresses in order."""
    block_size = {}
    executed = []
    current = None
    count = 0
    insn = re.compile(r"^\s*0x([0-9a-f]+):\s")
    trace = re.compile(r"^Trace \d+: 0x[0-9a-f]+ \[[0-9a-f]+/([0-9a-f]+)/")
    with open(path, errors="replace") as log:
        for line in log:
            if line.startswith("IN:"):
                if current is not None:
                    block_size[current] = count
                current, count = None, 0
                continue
            m = insn.match(line)
            if m:
                if current is None:
                    current = int(m.group(1), 16)
                count += 1
                continue
            m = trace.match(line)
            if m:
                if current is not None:
                    block_size[current] = count
                    current, count = None, 0
                executed.append(int(m.group(1), 16))
    if current is not None:
        block_size[current] = count
    return block_size, executed


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="x86_64", choices=["x86_64", "aarch64"])
    parser.add_argument("--append", required=True, help="kernel command line, e.g. test=bench::iommu")
    parser.add_argument("--elf", action="append", default=[], help="user program to symbolize against")
    parser.add_argument("--window", help="count only between first and last run of this function")
    parser.add_argument("--from", dest="start", help="within the window, start at the first run of this function")
    parser.add_argument("--to", dest="end", help="end at the first run of this function after --from")
    parser.add_argument("--sequence", action="store_true", help="also print the path: runs of one function in order, with their instructions")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--iommu", help="qemu-run.sh --iommu mode")
    parser.add_argument("--blocks", help="also list the hottest blocks of functions containing this")
    args = parser.parse_args()

    kernel = os.path.join(ROOT, f"target/{args.arch}-target/release/kernel")
    table = []
    for elf in [kernel] + args.elf:
        table.extend(symbols(elf))
    table.sort()
    addresses = [address for address, _ in table]

    def name_of(pc):
        i = bisect.bisect_right(addresses, pc) - 1
        return table[i][1] if i >= 0 else f"?{pc:#x}"

    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "qemu.log")
        command = ["bash", os.path.join(ROOT, "qemu-run.sh"), "--arch", args.arch, "--icount", "--kernel", kernel,
                   "--append", args.append]
        if args.iommu:
            command += ["--iommu", args.iommu]
        command += ["--", "-d", "in_asm,exec,nochain", "-D", log]
        subprocess.run(command, stdout=subprocess.DEVNULL, timeout=1200)
        block_size, executed = parse_log(log)

    names = [name_of(pc) for pc in executed]
    first, last = 0, len(executed)
    if args.window:
        hits = [i for i, name in enumerate(names) if args.window in name]
        if not hits:
            sys.exit(f"profile: no executed function matches {args.window!r}")
        first, last = hits[0], hits[-1] + 1
    if args.start:
        first = next((i for i in range(first, last) if args.start in names[i]), None)
        if first is None:
            sys.exit(f"profile: no function matching {args.start!r} runs in the window")
    if args.end:
        last = next((i for i in range(first + 1, last) if args.end in names[i]), None)
        if last is None:
            sys.exit(f"profile: no function matching {args.end!r} runs after {args.start!r}")
    per_function = Counter()
    for pc, name in zip(executed[first:last], names[first:last]):
        per_function[name] += block_size.get(pc, 0)
    per_block = Counter()
    if args.blocks:
        for pc, name in zip(executed[first:last], names[first:last]):
            if args.blocks in name:
                per_block[pc] += block_size.get(pc, 0)
    total = sum(per_function.values())
    print(f"{total} guest instructions in {last - first} blocks")
    for name, count in per_function.most_common(args.top):
        print(f"{count:>10} {100 * count / max(total, 1):5.1f}%  {name}")
    if args.sequence:
        runs = []
        for pc, name in zip(executed[first:last], names[first:last]):
            if runs and runs[-1][0] == name:
                runs[-1][1] += block_size.get(pc, 0)
            else:
                runs.append([name, block_size.get(pc, 0)])
        for name, count in runs:
            print(f"  {count:>6}  {name}")
    for pc, count in per_block.most_common(args.top):
        print(f"{count:>10}  block {pc:#x} ({block_size.get(pc, 0)} instructions)  {name_of(pc)}")


if __name__ == "__main__":
    main()
