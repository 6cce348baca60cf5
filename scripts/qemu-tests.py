#!/usr/bin/env python3
"""Boots every configuration of the QEMU test matrix and collects per-test results.

Each boot runs the kernel with `test=<filter>`; the kernel prints `TEST <name> ... ok|FAILED`,
then `TESTS DONE passed=N failed=M`, and exits QEMU with a status. A boot that times out, exits
without `TESTS DONE`, disagrees with its own summary, or exits with a failure status counts as a
failure. Before the matrix, the runner checks itself: a deliberately failing test and a
deliberately hanging test must both be reported as failures.

Usage: qemu-tests.py [--arch x86_64|aarch64|all] [--timeout SECONDS]
Prints one line per test and ends with `N passed, N failed`.
"""
import argparse
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (name, arch, qemu-run.sh options)
MATRIX = [
    ("x86_64/vtd", "x86_64", ["--iommu", "vtd"]),
    ("x86_64/vtd-aw39", "x86_64", ["--iommu", "vtd", "--aw-bits", "39"]),
    ("x86_64/vtd-cm", "x86_64", ["--iommu", "vtd", "--caching-mode"]),
    ("x86_64/vtd-sm", "x86_64", ["--iommu", "vtd-sm"]),
    ("x86_64/vtd-flts", "x86_64", ["--iommu", "vtd-flts"]),
    ("x86_64/none", "x86_64", ["--iommu", "none"]),
    ("aarch64/smmuv3", "aarch64", ["--iommu", "smmuv3"]),
    ("aarch64/smmuv3-el2", "aarch64", ["--iommu", "smmuv3", "--el2"]),
    ("aarch64/none", "aarch64", ["--iommu", "none"]),
]

TEST_LINE = re.compile(r"^TEST (\S+) \.\.\. (ok|FAILED.*)$")
DONE_LINE = re.compile(r"^TESTS DONE passed=(\d+) failed=(\d+)$")


class Boot:
    """The outcome of one QEMU boot."""

    def __init__(self, config, results, errors, log, seconds):
        self.config = config
        self.results = results  # list of (test name, passed: bool, detail)
        self.errors = errors  # boot-level failures (timeout, crash, missing summary)
        self.log = log
        self.seconds = seconds


def kernel_path(arch):
    return os.path.join(ROOT, "target", f"{arch}-target", "release", "kernel")


def expected_iommu(options):
    mode = options[options.index("--iommu") + 1] if "--iommu" in options else "default"
    return {"vtd": "vtd", "vtd-sm": "vtd", "vtd-flts": "vtd", "smmuv3": "smmuv3", "none": "none"}.get(mode, "none")


def boot(config, arch, options, test_filter, timeout):
    cmd = ["bash", os.path.join(ROOT, "qemu-run.sh"), "--arch", arch, "--kernel", kernel_path(arch),
           "--append", f"test={test_filter} expect-iommu={expected_iommu(options)}"] + options
    start = time.monotonic()
    errors = []
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, timeout=timeout)
        output, status = proc.stdout, proc.returncode
    except subprocess.TimeoutExpired as e:
        output, status = e.stdout or b"", None
        errors.append(f"timed out after {timeout} s (hang)")
    seconds = time.monotonic() - start
    log = output.decode("utf-8", "replace")
    results = []
    summary = None
    for raw in log.splitlines():
        line = raw.strip("\r")
        m = TEST_LINE.match(line)
        if m:
            results.append((m.group(1), m.group(2) == "ok", m.group(2)))
        m = DONE_LINE.match(line)
        if m:
            summary = (int(m.group(1)), int(m.group(2)))
    passed = sum(1 for r in results if r[1])
    failed = len(results) - passed
    if status is not None:
        if summary is None:
            errors.append(f"QEMU exited with status {status} before TESTS DONE (crash?)")
        elif summary != (passed, failed):
            errors.append(f"kernel summary {summary} disagrees with the reported tests ({passed}, {failed})")
        elif status != 0 and failed == 0:
            errors.append(f"QEMU exit status {status} although every test passed")
        elif status == 0 and failed > 0:
            errors.append("QEMU exit status 0 although tests failed")
    if summary is None and not errors:
        errors.append("no TESTS DONE line")
    return Boot(config, results, errors, log, seconds)


def self_test(arch, timeout):
    """The runner must see the intentional failure and the intentional hang."""
    outcomes = []
    fail = boot(f"{arch}/selftest-fail", arch, [], "selftest::intentional_failure", timeout)
    detected = any(name == "selftest::intentional_failure" and not ok for name, ok, _ in fail.results) and not fail.errors
    outcomes.append((f"runner::{arch}::detects_failing_test", detected, fail))
    hang = boot(f"{arch}/selftest-hang", arch, [], "selftest::intentional_hang", min(timeout, 20))
    detected = any("hang" in e for e in hang.errors)
    outcomes.append((f"runner::{arch}::detects_hang", detected, hang))
    return outcomes


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--arch", default="all", choices=["x86_64", "aarch64", "all"])
    parser.add_argument("--timeout", type=int, default=180)
    parser.add_argument("--filter", default="all")
    args = parser.parse_args()
    arches = ["x86_64", "aarch64"] if args.arch == "all" else [args.arch]
    passed = failed = 0

    def record(name, ok, detail=""):
        nonlocal passed, failed
        if ok:
            passed += 1
            print(f"PASS {name}")
        else:
            failed += 1
            print(f"FAIL {name} {detail}")

    for arch in arches:
        for name, ok, b in self_test(arch, args.timeout):
            record(name, ok, "" if ok else f"(runner did not detect it; errors={b.errors})")
            if not ok:
                print(b.log[-3000:])
        for config, config_arch, options in MATRIX:
            if config_arch != arch:
                continue
            b = boot(config, arch, options, args.filter, args.timeout)
            for test, ok, detail in b.results:
                record(f"{config}::{test}", ok, detail)
            for e in b.errors:
                record(f"{config}::boot", False, e)
            if b.errors or any(not ok for _, ok, _ in b.results):
                print(f"--- {config} serial log (tail) ---")
                print(b.log[-4000:])
            print(f"time {config}: {b.seconds:.1f} s")
            sys.stdout.flush()
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
