#!/usr/bin/env python3
"""Boots every configuration of the QEMU test matrix and collects per-test results.

Each boot runs the kernel with `test=<filter>`; the kernel prints `TEST <name> ... ok|skipped: why|
FAILED: why`, then `TESTS DONE passed=N failed=M skipped=K`, and exits QEMU with a status. A boot
that times out (hangs), exits without `TESTS DONE`, disagrees with its own summary, or exits with a
failure status counts as a failure. Every boot is held to the declared list of the tests its
configuration runs (`scripts/qemu-tests.expected`): a missing, unexpected or duplicated test
fails, and so does a test skipped where it must run or run where it must be skipped. Before the
matrix, the runner checks itself: a deliberately failing test, a hang, a kernel that ends QEMU
before its summary, and a missing, extra or duplicated test must each be reported as failures.

After each architecture's matrix, the runner checks fwdump against QEMU's own tables: it boots
with `dump-acpi=<SIG>` (the DMAR of q35 + intel-iommu, the IORT of virt + SMMUv3), rebuilds the
table from the hex the kernel prints, runs `fwdump --check-iasl` on it (every decoded field must
equal what `iasl -d` shows) and checks what fwdump's JSON says the table contains. Without an
iasl these checks fail: they are the only test of fwdump against real tables.

Usage: qemu-tests.py [--arch x86_64|aarch64|all] [--timeout SECONDS] [--filter PREFIX]
Prints one line per test (PASS, FAIL or SKIP) and ends with `N passed, N failed, N skipped`.
"""
import argparse
import fnmatch
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (name, arch, qemu-run.sh options[, the tests it runs: comma-separated name prefixes])
MATRIX = [
    ("x86_64/vtd", "x86_64", ["--iommu", "vtd"]),
    ("x86_64/vtd-aw39", "x86_64", ["--iommu", "vtd", "--aw-bits", "39"]),
    ("x86_64/vtd-cm", "x86_64", ["--iommu", "vtd", "--caching-mode"]),
    ("x86_64/vtd-sm", "x86_64", ["--iommu", "vtd-sm"]),
    ("x86_64/vtd-sm-aw39", "x86_64", ["--iommu", "vtd-sm", "--aw-bits", "39"]),
    ("x86_64/vtd-flts", "x86_64", ["--iommu", "vtd-flts"]),
    ("x86_64/none", "x86_64", ["--iommu", "none"]),
    ("aarch64/smmuv3", "aarch64", ["--iommu", "smmuv3"]),
    ("aarch64/smmuv3-el2", "aarch64", ["--iommu", "smmuv3", "--el2"]),
    ("aarch64/none", "aarch64", ["--iommu", "none"]),
    # GICv2 (GICv2m MSIs, not isolated): only the tests of what the server does about that, and
    # the MSI latency without isolation.
    ("aarch64/smmuv3-gicv2", "aarch64", ["--iommu", "smmuv3", "--gic", "2"],
     "iommu::attached_device_msi_reaches_the_cpu,its::driver_msi_through_the_its,bench::msi_gicv2m"),
    # Edu devices behind a PCIe root port and a PCIe-to-PCI bridge: only the topology tests and
    # the reset of a device alone below its bridge.
    ("x86_64/bridges-vtd", "x86_64", ["--iommu", "vtd", "--topology", "bridges"], "topology::,reset::"),
    ("aarch64/bridges-smmuv3", "aarch64", ["--iommu", "smmuv3", "--topology", "bridges"], "topology::,reset::"),
    # A firmware-table override (DMAR / IORT through fw_cfg) giving an edu device an RMRR / RMR:
    # only the test of its identity map (both VT-d table formats; both SMMU stages in one boot).
    ("x86_64/rmrr-vtd", "x86_64", ["--iommu", "vtd", "--fw-override", "rmrr"], "rmrr::"),
    ("x86_64/rmrr-vtd-sm", "x86_64", ["--iommu", "vtd-sm", "--fw-override", "rmrr"], "rmrr::"),
    ("aarch64/rmrr-smmuv3", "aarch64", ["--iommu", "smmuv3", "--fw-override", "rmrr"], "rmrr::"),
]

# Searched, not matched at the line start: a user process may leave a partial line on the
# shared serial console just before the kernel reports a test.
TEST_LINE = re.compile(r"TEST (\S+) \.\.\. (ok|skipped: .*|FAILED.*)$")
DONE_LINE = re.compile(r"TESTS DONE passed=(\d+) failed=(\d+) skipped=(\d+)$")
EXPECTED_FILE = os.path.join(ROOT, "scripts", "qemu-tests.expected")

OK, SKIPPED, FAILED = "ok", "skipped", "failed"


class Boot:
    """The outcome of one QEMU boot."""

    def __init__(self, config, results, errors, log, seconds):
        self.config = config
        self.results = results  # list of (test name, outcome: OK | SKIPPED | FAILED, detail)
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
    # A session of its own, so that a hang kills QEMU too and not only the script around it
    # (a hung guest left running holds its 1 GiB of RAM for good).
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
        status = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        status = None
        errors.append(f"timed out after {timeout} s (hang)")
    seconds = time.monotonic() - start
    log = output.decode("utf-8", "replace")
    results = []
    summary = None
    for raw in log.splitlines():
        line = raw.strip("\r")
        m = TEST_LINE.search(line)
        if m:
            word = m.group(2)
            outcome = OK if word == "ok" else SKIPPED if word.startswith("skipped") else FAILED
            results.append((m.group(1), outcome, word.removeprefix("skipped: ")))
        m = DONE_LINE.search(line)
        if m:
            summary = (int(m.group(1)), int(m.group(2)), int(m.group(3)))
    counts = tuple(sum(1 for r in results if r[1] == kind) for kind in (OK, FAILED, SKIPPED))
    failed = counts[1]
    if status is not None:
        if summary is None:
            errors.append(f"QEMU exited with status {status} before TESTS DONE (crash?)")
        elif summary != counts:
            errors.append(f"kernel summary (passed, failed, skipped) {summary} disagrees with the reported tests {counts}")
        elif status != 0 and failed == 0:
            errors.append(f"QEMU exit status {status} although every test passed")
        elif status == 0 and failed > 0:
            errors.append("QEMU exit status 0 although tests failed")
    if summary is None and not errors:
        errors.append("no TESTS DONE line")
    return Boot(config, results, errors, log, seconds)


def load_expected(path=EXPECTED_FILE):
    """The declared tests: [(test name, patterns of configurations that run it, patterns of those
    where it must report itself skipped)]."""
    entries = []
    with open(path) as f:
        for number, raw in enumerate(f, 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            fields = line.split()
            if len(fields) != 3:
                raise SystemExit(f"{path}:{number}: expected `test runs-in skipped-in`, got {raw.strip()!r}")
            name, runs, skips = fields
            entries.append((name, runs.split(","), [] if skips == "-" else skips.split(",")))
    return entries


def matches(config, patterns):
    return any(fnmatch.fnmatchcase(config, p) for p in patterns)


def selected(test_filter, name):
    """The kernel's own selection rule (kernel/src/ktest.rs)."""
    if name.startswith("selftest::"):
        return name.startswith(test_filter) and test_filter.startswith("selftest::")
    return test_filter == "all" or any(name.startswith(p) for p in test_filter.split(","))


def config_filter(test_filter, config_tests):
    """The filter a configuration boots with: its own test list, narrowed by the command
    line's --filter; None if the two select nothing in common."""
    if config_tests is None:
        return test_filter
    if test_filter == "all":
        return config_tests
    # Each pair of prefixes selects the longer one when one extends the other, else nothing.
    prefixes = [max(own, wanted, key=len) for own in config_tests.split(",") for wanted in test_filter.split(",")
                if own.startswith(wanted) or wanted.startswith(own)]
    return ",".join(prefixes) if prefixes else None


def expectation_problems(config, test_filter, results, expected):
    """How a boot's reported tests differ from what its configuration declares."""
    want = {name: matches(config, skips) for name, runs, skips in expected
            if matches(config, runs) and selected(test_filter, name)}
    problems = []
    seen = {}
    for name, outcome, _ in results:
        seen[name] = seen.get(name, 0) + 1
    for name, count in seen.items():
        if name not in want:
            problems.append(f"{name}: ran but is not declared for {config} in scripts/qemu-tests.expected")
        elif count > 1:
            problems.append(f"{name}: reported {count} times")
    for name, must_skip in want.items():
        if name not in seen:
            problems.append(f"{name}: declared for {config} but never reported")
            continue
        outcomes = {outcome for n, outcome, _ in results if n == name}
        if must_skip and outcomes != {SKIPPED}:
            problems.append(f"{name}: must report itself skipped on {config}, reported {sorted(outcomes)}")
        elif not must_skip and SKIPPED in outcomes:
            problems.append(f"{name}: skipped on {config}, where it must run")
    return problems


DUMP_HEADER = re.compile(r"^ACPI-DUMP (\S+) (\d+)$")
DUMP_END = "ACPI-DUMP END"
# Where q35 puts the VT-d unit and virt the SMMUv3 (kernel/src/platform.rs uses the same).
Q35_VTD_BASE = 0xFED9_0000
VIRT_SMMUV3_BASE = 0x0905_0000


def dmar_content_problems(table):
    """What the DMAR fwdump decoded lacks: a DRHD for q35's VT-d unit."""
    bases = [int(s["register_base"], 16) for s in table["structures"] if s["kind"] == "drhd"]
    if Q35_VTD_BASE not in bases:
        return [f"no DRHD at {Q35_VTD_BASE:#x} (DRHD register bases: {[hex(b) for b in bases]})"]
    return [f"firmware bug reported in QEMU's table: {w['message']}" for w in table["warnings"]]


def iort_content_problems(table):
    """What the IORT fwdump decoded lacks: virt's SMMUv3, and a root complex mapping to it."""
    nodes = table["nodes"]
    smmus = [n["index"] for n in nodes if n["kind"] == "smmu_v3" and int(n["base_address"], 16) == VIRT_SMMUV3_BASE]
    if not smmus:
        return [f"no SMMUv3 node at {VIRT_SMMUV3_BASE:#x}"]
    if not any(m["output_node_index"] in smmus for n in nodes if n["kind"] == "root_complex" for m in n["id_mappings"]):
        return ["no root complex ID mapping leads to the SMMUv3 node"]
    return [f"firmware bug reported in QEMU's table: {w['message']}" for w in table["warnings"]]


# (arch, qemu-run.sh options, table signature, content check on fwdump's JSON)
ACPI_DUMPS = [
    ("x86_64", ["--iommu", "vtd"], "DMAR", dmar_content_problems),
    ("aarch64", ["--iommu", "smmuv3"], "IORT", iort_content_problems),
]


def extract_dump(log, signature):
    """The table bytes between `ACPI-DUMP <SIG> <len>` and `ACPI-DUMP END`, or an error."""
    lines = [raw.strip("\r") for raw in log.splitlines()]
    for start, line in enumerate(lines):
        m = DUMP_HEADER.match(line)
        if not m or m.group(1) != signature:
            continue
        if DUMP_END not in lines[start + 1:]:
            return None, "no ACPI-DUMP END line"
        end = lines.index(DUMP_END, start + 1)
        try:
            data = bytes.fromhex(" ".join(lines[start + 1:end]))
        except ValueError as e:
            return None, f"malformed hex in the dump: {e}"
        if len(data) != int(m.group(2)):
            return None, f"dump holds {len(data)} bytes, its header says {m.group(2)}"
        return data, None
    return None, f"no ACPI-DUMP {signature} line"


class Fwdump:
    """fwdump built for the host once, with the iasl it compares against."""

    def __init__(self):
        self.binary = os.path.join(ROOT, "target", "host", "debug", "fwdump")
        self.build_problem = self.iasl_problem = None
        build = subprocess.run(["bash", os.path.join(ROOT, "scripts", "host-test.sh"), "build", "--quiet", "-p", "fwdump"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if build.returncode != 0:
            self.build_problem = "building fwdump failed: " + build.stdout.decode("utf-8", "replace")[-2000:]
        self.iasl = os.environ.get("IASL")
        if not self.iasl:
            got = subprocess.run(["bash", os.path.join(ROOT, "scripts", "get-iasl.sh")], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
            self.iasl = got.stdout.decode().strip() if got.returncode == 0 else None
        if not self.iasl:
            self.iasl_problem = "no iasl: IASL is unset and scripts/get-iasl.sh failed"

    def run(self, args):
        env = dict(os.environ, IASL=self.iasl or "")
        proc = subprocess.run([self.binary] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, env=env, timeout=120)
        return proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")


def acpi_dump_checks(arch, options, signature, content_check, fwdump, timeout):
    """Dumps QEMU's `signature` table; returns [(test name, passed, detail)] for the comparison
    with iasl and for the expected content."""
    prefix = f"acpi-dump::{arch}::{signature}"
    names = (f"{prefix}::fwdump_matches_iasl", f"{prefix}::expected_content")
    cmd = ["bash", os.path.join(ROOT, "qemu-run.sh"), "--arch", arch, "--kernel", kernel_path(arch),
           "--append", f"dump-acpi={signature}"] + options
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return [(name, False, f"boot timed out after {timeout} s") for name in names]
    log = proc.stdout.decode("utf-8", "replace")
    data, problem = extract_dump(log, signature)
    if problem is None and proc.returncode != 0:
        problem = f"QEMU exited with status {proc.returncode}"
    if problem is not None:
        return [(name, False, f"{problem}\n{log[-2000:]}") for name in names]
    if fwdump.build_problem:
        return [(name, False, fwdump.build_problem) for name in names]
    with tempfile.NamedTemporaryFile(prefix=f"qemu-{signature.lower()}-", suffix=".dat") as table:
        table.write(data)
        table.flush()
        if fwdump.iasl_problem:
            iasl_result = (names[0], False, fwdump.iasl_problem)
        else:
            status, out, err = fwdump.run(["--check-iasl", table.name])
            iasl_result = (names[0], status == 0, (out + err).strip())
        status, out, err = fwdump.run([table.name])
    if status != 0:
        return [iasl_result, (names[1], False, f"fwdump failed: {err.strip()}")]
    problems = content_check(json.loads(out))
    return [iasl_result, (names[1], not problems, "; ".join(problems))]


def self_test(arch, timeout, expected):
    """The runner must see each way a run can go wrong: [(check name, detected, boot)]."""
    outcomes = []
    fail = boot(f"{arch}/selftest-fail", arch, [], "selftest::intentional_failure", timeout)
    detected = any(name == "selftest::intentional_failure" and outcome == FAILED
                   for name, outcome, _ in fail.results) and not fail.errors
    outcomes.append((f"runner::{arch}::detects_failing_test", detected, fail))
    hang = boot(f"{arch}/selftest-hang", arch, [], "selftest::intentional_hang", min(timeout, 20))
    outcomes.append((f"runner::{arch}::detects_hang", any("hang" in e for e in hang.errors), hang))
    crash = boot(f"{arch}/selftest-crash", arch, [], "selftest::intentional_crash", timeout)
    outcomes.append((f"runner::{arch}::detects_exit_before_summary",
                     any("before TESTS DONE" in e for e in crash.errors), crash))
    # The declared list, checked on the failing boot's real report: the test it ran is declared
    # for the self-test configuration; a second declared test is missing; dropping the
    # declaration makes the test unexpected; reporting it twice is a duplicate.
    config = f"{arch}/selftest-fail"
    declared = [("selftest::intentional_failure", [config], [])]
    missing = declared + [("selftest::declared_but_absent", [config], [])]
    checks = [
        ("declared_test_matches", expectation_problems(config, "selftest::", fail.results, declared) == []),
        ("detects_missing_test", any("never reported" in p for p in expectation_problems(config, "selftest::", fail.results, missing))),
        ("detects_unexpected_test", any("not declared" in p for p in expectation_problems(config, "selftest::", fail.results, []))),
        ("detects_duplicated_test", any("2 times" in p for p in expectation_problems(config, "selftest::", fail.results * 2, declared))),
        ("detects_wrong_skip", any("must report itself skipped" in p for p in expectation_problems(
            config, "selftest::", fail.results, [("selftest::intentional_failure", [config], [config])]))),
        ("matrix_tests_declared", all(any(matches(c, runs) for c, *_ in MATRIX) for _, runs, _ in expected)),
    ]
    for check, ok in checks:
        outcomes.append((f"runner::{arch}::{check}", ok, fail))
    return outcomes


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--arch", default="all", choices=["x86_64", "aarch64", "all"])
    parser.add_argument("--timeout", type=int, default=180)
    parser.add_argument("--filter", default="all")
    args = parser.parse_args()
    arches = ["x86_64", "aarch64"] if args.arch == "all" else [args.arch]
    expected = load_expected()
    passed = failed = skipped = 0
    fwdump = None

    def record(name, outcome, detail=""):
        nonlocal passed, failed, skipped
        if outcome == OK:
            passed += 1
            print(f"PASS {name}")
        elif outcome == SKIPPED:
            skipped += 1
            print(f"SKIP {name}: {detail}")
        else:
            failed += 1
            print(f"FAIL {name} {detail}")

    for arch in arches:
        for name, ok, b in self_test(arch, args.timeout, expected):
            record(name, OK if ok else FAILED, "" if ok else f"(runner did not detect it; errors={b.errors})")
            if not ok:
                print(b.log[-3000:])
        for config, config_arch, options, *config_tests in MATRIX:
            test_filter = config_filter(args.filter, config_tests[0] if config_tests else None)
            if config_arch != arch or test_filter is None:
                continue
            b = boot(config, arch, options, test_filter, args.timeout)
            if not b.results and any("hang" in e for e in b.errors):
                # A configuration that hangs before its first test fails; it is booted once more
                # only to show in the log whether the hang repeats (see README "Known problems").
                record(f"{config}::boot", FAILED, "; ".join(b.errors))
                print(f"--- {config} serial log (tail) ---")
                print(b.log[-4000:])
                print(f"RETRY {config}: hung before its first test; booting once more to see whether it repeats")
                b = boot(config, arch, options, test_filter, args.timeout)
            for test, outcome, detail in b.results:
                record(f"{config}::{test}", outcome, detail)
            for e in b.errors:
                record(f"{config}::boot", FAILED, e)
            problems = expectation_problems(config, test_filter, b.results, expected)
            for p in problems:
                record(f"{config}::expected", FAILED, p)
            if b.errors or problems or any(outcome == FAILED for _, outcome, _ in b.results):
                print(f"--- {config} serial log (tail) ---")
                print(b.log[-4000:])
            print(f"time {config}: {b.seconds:.1f} s")
            sys.stdout.flush()
        if args.filter != "all":
            continue
        for dump_arch, options, signature, check in ACPI_DUMPS:
            if dump_arch != arch:
                continue
            if fwdump is None:
                fwdump = Fwdump()
            for name, ok, detail in acpi_dump_checks(arch, options, signature, check, fwdump, args.timeout):
                record(name, OK if ok else FAILED, detail)
            sys.stdout.flush()
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
