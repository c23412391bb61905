"""Runs the PerforatedConv2D fuzzer under AddressSanitizer + UBSan for a fixed time.

``make fuzz`` builds ``tfpriors/ops/_perforated_conv_fuzz.so`` (``build.py --fuzz``)
and calls this script, which runs ``fuzz/fuzz_perforated_conv.py`` (atheris,
libFuzzer in process) with the sanitizer runtimes preloaded, restarts it after
every finding until the time is spent, and writes a summary (executions,
seconds, findings with their reproducer files, corpus size) to
``bench/results/fuzz.json``. Earlier runs recorded in that file are kept under
``history``, so the file also holds the total time fuzzed.

Coverage: g++ has no ``-fsanitize=fuzzer``, so the fuzzing build is compiled
with ``-fsanitize-coverage=trace-pc,trace-cmp`` and ``build/fuzz_coverage.so``
(``custom_ops/fuzz_coverage.c``, preloaded first) turns those hooks into edge
counters and comparison feedback for the libFuzzer inside atheris, next to
atheris' coverage of the driver's own Python.

    python fuzz/run_fuzz.py --seconds 600
"""

import argparse
import glob
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "bench"))

import _common  # noqa: E402  (bench/ is not a package)

TARGET = os.path.join(HERE, "fuzz_perforated_conv.py")
FUZZ_LIBRARY = os.path.join(ROOT, "tfpriors", "ops", "_perforated_conv_fuzz.so")
COVERAGE_LIBRARY = os.path.join(ROOT, "build", "fuzz_coverage.so")
# A run that keeps hitting one finding is stopped after this many reproducers of it.
MAX_REPEATS = 3
# What a libFuzzer log says about why the process ended, most specific first.
FINDING_PATTERNS = (
    ("AddressSanitizer", re.compile(r"ERROR: AddressSanitizer: ([^\n]*)")),
    ("UndefinedBehaviorSanitizer", re.compile(r"runtime error: ([^\n]*)")),
    ("ContractViolation", re.compile(r"ContractViolation: ([^\n]*)")),
    ("CheckFailed", re.compile(r"Check failed: ([^\n]*)")),
    (
        "PythonException",
        re.compile(r"=== Uncaught Python exception: ===\n(?:.*\n)*?(\w+: [^\n]*)\n"),
    ),
    ("libFuzzer", re.compile(r"ERROR: libFuzzer: ([^\n]*)")),
)


def runtime_library(name):
    """The path of a g++ runtime library (``libasan.so``, ``libstdc++.so``)."""
    return subprocess.run(
        ["g++", f"-print-file-name={name}"], capture_output=True, text=True, check=True
    ).stdout.strip()


def atheris_libfuzzer():
    """The path of the atheris module that holds libFuzzer (found without importing it)."""
    import importlib.util

    spec = importlib.util.find_spec("atheris.core_with_libfuzzer")
    if spec is None:
        sys.exit("atheris is not installed: pip install -e '.[fuzz]'")
    return spec.origin


def sanitizer_environment(library):
    """The environment that runs the fuzz target against the sanitizer build."""
    # The coverage bridge first, so that its hooks win over libasan's no-op ones; then
    # libasan (not first any more, hence verify_asan_link_order=0, but loaded before
    # anything allocates); libstdc++ too, so that ASan finds the real __cxa_throw.
    preload = " ".join(
        [COVERAGE_LIBRARY, runtime_library("libasan.so"), runtime_library("libstdc++.so")]
    )
    return dict(
        os.environ,
        LD_PRELOAD=preload,
        TFPRIORS_OPS_LIBRARY=library,
        ATHERIS_LIBFUZZER=atheris_libfuzzer(),
        # Python and TensorFlow keep allocations alive until exit by design.
        ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=0:verify_asan_link_order=0",
        UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1",
        TF_CPP_MIN_LOG_LEVEL="2",
        PYTHONPATH=ROOT,
    )


def classify(log):
    """``(kind, message)`` of the finding a libFuzzer log ends with."""
    for kind, pattern in FINDING_PATTERNS:
        match = pattern.search(log)
        if match:
            return kind, match.group(1).strip()[:300]
    return "unknown", log.strip().splitlines()[-1][:300] if log.strip() else "no output"


def executions(log):
    """How many inputs one libFuzzer process ran, from its final stats or last status line."""
    match = re.search(r"stat::number_of_executed_units: (\d+)", log)
    if match:
        return int(match.group(1))
    lines = re.findall(r"^#(\d+)\s", log, flags=re.MULTILINE)
    return int(lines[-1]) if lines else 0


class _Stop:
    """SIGINT / SIGTERM to the runner: interrupt libFuzzer, then still write the summary."""

    requested = False
    process = None

    @classmethod
    def handle(cls, signum, frame):
        cls.requested = True
        if cls.process is not None and cls.process.poll() is None:
            cls.process.send_signal(signal.SIGINT)  # libFuzzer prints its stats and exits


def run_once(seconds, args, env, log_path):
    """One libFuzzer process; returns ``(exit code, log text, command)``."""
    command = [
        sys.executable,
        TARGET,
        f"-max_total_time={seconds}",
        f"-timeout={args.timeout}",
        f"-rss_limit_mb={args.rss_limit_mb}",
        # Full-length inputs from the start: libFuzzer only grows the length on new
        # coverage, and a short input decodes to a nearly all-default call.
        f"-max_len={args.max_len}",
        "-len_control=0",
        "-detect_leaks=0",
        "-print_final_stats=1",
        f"-artifact_prefix={args.artifacts}{os.sep}",
        args.corpus,
        args.seeds,
    ]
    with open(log_path, "w") as log:
        _Stop.process = subprocess.Popen(
            ["nice", "-n", str(args.nice), *command],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        code = _Stop.process.wait()
    with open(log_path, errors="replace") as log:
        return code, log.read(), command


def fuzz(args):
    """Fuzzes for ``args.seconds``; returns the summary that goes into the JSON file."""
    for directory in (args.corpus, args.artifacts):
        os.makedirs(directory, exist_ok=True)
    env = sanitizer_environment(args.library)
    start = time.monotonic()
    total, processes, findings, command, native_coverage = 0, 0, [], None, False
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _Stop.handle)
    while not _Stop.requested:
        remaining = int(args.seconds - (time.monotonic() - start))
        if remaining < 10:
            break
        processes += 1
        log_path = os.path.join(args.artifacts, f"run-{processes}.log")
        code, log, command = run_once(remaining, args, env, log_path)
        total += executions(log)
        native_coverage = native_coverage or "tfpriors native coverage: on" in log
        if _Stop.requested:
            break
        if code == 0:
            continue  # -max_total_time reached
        kind, message = classify(log)
        reproducer = re.findall(r"Test unit written to (\S+)", log)
        findings.append(
            {
                "kind": kind,
                "message": message,
                "exit_code": code,
                "reproducer": os.path.relpath(reproducer[-1], ROOT) if reproducer else None,
                "log": os.path.relpath(log_path, ROOT),
            }
        )
        print(f"[fuzz] finding {len(findings)}: {kind}: {message}", flush=True)
        if sum(f["message"] == message for f in findings) >= MAX_REPEATS:
            print("[fuzz] the same finding again: stopping", flush=True)
            break
    seconds = time.monotonic() - start
    corpus = glob.glob(os.path.join(args.corpus, "*"))
    return {
        "seconds": round(seconds, 1),
        "stopped_early": _Stop.requested,
        "executions": total,
        "executions_per_second": round(total / seconds, 2) if seconds else 0.0,
        "processes": processes,
        "findings": findings,
        "corpus_files": len(corpus),
        "corpus_bytes": sum(os.path.getsize(path) for path in corpus),
        "library": os.path.relpath(args.library, ROOT),
        "sanitizers": "address,undefined (g++ -fsanitize=address,undefined)",
        "native_coverage": native_coverage,
        "libfuzzer_command": shlex.join(command or []),
    }


def write_summary(path, run, command):
    """Writes the run and every earlier run recorded in ``path`` (totals included)."""
    history = []
    if os.path.exists(path):
        with open(path) as f:
            previous = json.load(f)
        history = previous.get("history", [])
    entry = {"timestamp": _common.now_iso(), "command": command, **run}
    history.append(
        {
            key: entry[key]
            for key in (
                "timestamp",
                "command",
                "seconds",
                "executions",
                "processes",
                "corpus_files",
                "native_coverage",
                "stopped_early",
            )
        }
        | {"findings": len(run["findings"])}
    )
    payload = {
        "benchmark": "fuzz",
        "title": "Fuzzing of the fused PerforatedConv2D op under ASan + UBSan",
        "description": __doc__.strip().split("\n\n")[1],
        **entry,
        "machine": _common.machine_info(),
        "total_seconds": round(sum(h["seconds"] for h in history), 1),
        "total_executions": sum(h["executions"] for h in history),
        "history": history,
    }
    _common.write_json(path, payload)
    return payload


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=600, help="total fuzzing time")
    parser.add_argument("--library", default=FUZZ_LIBRARY, help="sanitizer build of the op")
    parser.add_argument(
        "--corpus",
        default=os.path.join(HERE, "corpus"),
        help="corpus directory (grows as libFuzzer finds new inputs)",
    )
    parser.add_argument(
        "--seeds",
        default=os.path.join(HERE, "regressions"),
        help="read-only seed inputs: the reproducers of past findings",
    )
    parser.add_argument(
        "--artifacts", default=os.path.join(HERE, "artifacts"), help="where reproducers and logs go"
    )
    parser.add_argument("--out", default=os.path.join(_common.RESULTS_DIR, "fuzz.json"))
    parser.add_argument("--timeout", type=int, default=60, help="seconds before a hang")
    parser.add_argument("--rss-limit-mb", type=int, default=8192)
    parser.add_argument("--max-len", type=int, default=1024)
    parser.add_argument("--nice", type=int, default=10)
    args = parser.parse_args()
    for path in (args.library, COVERAGE_LIBRARY):
        if not os.path.exists(path):
            sys.exit(f"{path} is missing: run `python custom_ops/build.py --fuzz`.")
    run = fuzz(args)
    command = "python fuzz/run_fuzz.py " + shlex.join(sys.argv[1:])
    payload = write_summary(args.out, run, command)
    print(
        f"[fuzz] {run['executions']} inputs in {run['seconds']:.0f} s, "
        f"{len(run['findings'])} findings, corpus {run['corpus_files']} files; "
        f"{payload['total_seconds'] / 3600:.2f} h in total; wrote {args.out}",
        flush=True,
    )
    return 1 if run["findings"] else 0


if __name__ == "__main__":
    sys.exit(main())
