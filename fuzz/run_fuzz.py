"""Runs the fuzz targets of the compiled ops under AddressSanitizer + UBSan for a fixed time.

``make fuzz`` builds ``tfpriors/ops/_perforated_conv_fuzz.so`` (``build.py --fuzz``)
and calls this script, which runs the fuzz targets (atheris, libFuzzer in
process) with the sanitizer runtimes preloaded: ``fuzz/fuzz_perforated_conv.py``
(``PerforatedConv2D``) and ``fuzz/fuzz_lrt_sample.py`` (``LrtSample`` and its
gradient op), one after the other, the time split evenly between them. Each
restarts after every finding until its time is spent, grows its own corpus and
writes its reproducers and logs to its own folder. The summary (executions,
seconds, findings with their reproducer files, corpus size, per target and in
total) goes to ``bench/results/fuzz.json``. Earlier runs recorded in that file
are kept under ``history``, so the file also holds the total time fuzzed.

Coverage: g++ has no ``-fsanitize=fuzzer``, so the fuzzing build is compiled
with ``-fsanitize-coverage=trace-pc,trace-cmp`` and ``build/fuzz_coverage.so``
(``custom_ops/fuzz_coverage.c``, preloaded first) turns those hooks into edge
counters and comparison feedback for the libFuzzer inside atheris, next to
atheris' coverage of the driver's own Python.

    python fuzz/run_fuzz.py --seconds 600                        # both targets, 300 s each
    python fuzz/run_fuzz.py --seconds 600 --target lrt_sample    # one target
"""

import argparse
import glob
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "bench"))

import _common  # noqa: E402  (bench/ is not a package)

# Each fuzz target: its driver and the folder of its regression inputs (read-only seeds;
# the files directly in it, not its subfolders).
TARGETS = {
    "perforated_conv": {
        "driver": os.path.join(HERE, "fuzz_perforated_conv.py"),
        "regressions": os.path.join(HERE, "regressions"),
        "op": "PerforatedConv2D",
    },
    "lrt_sample": {
        "driver": os.path.join(HERE, "fuzz_lrt_sample.py"),
        "regressions": os.path.join(HERE, "regressions", "lrt_sample"),
        "op": "LrtSample / LrtSampleVarianceGrad",
    },
}
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


def run_once(seconds, paths, args, env, log_path):
    """One libFuzzer process of one target; returns ``(exit code, log text, command)``.

    ``paths``: the target's ``driver``, ``corpus``, ``seeds`` and ``artifacts``.
    """
    command = [
        sys.executable,
        paths["driver"],
        f"-max_total_time={seconds}",
        f"-timeout={args.timeout}",
        f"-rss_limit_mb={args.rss_limit_mb}",
        # Full-length inputs from the start: libFuzzer only grows the length on new
        # coverage, and a short input decodes to a nearly all-default call.
        f"-max_len={args.max_len}",
        "-len_control=0",
        "-detect_leaks=0",
        "-print_final_stats=1",
        f"-artifact_prefix={paths['artifacts']}{os.sep}",
        paths["corpus"],
        paths["seeds"],
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


def _move_flat_corpus(root):
    """Moves a corpus from before the per-target folders (files directly in ``root``,
    all of them PerforatedConv2D inputs) into ``root/perforated_conv``."""
    flat = [p for p in glob.glob(os.path.join(root, "*")) if os.path.isfile(p)]
    if flat:
        os.makedirs(os.path.join(root, "perforated_conv"), exist_ok=True)
        for path in flat:
            os.replace(path, os.path.join(root, "perforated_conv", os.path.basename(path)))


def target_paths(target, args):
    """The driver, corpus, seed and artifact folders of ``target`` (created).

    The seeds are the regression inputs of the target (the files directly in its
    ``regressions`` folder), copied afresh into its artifact folder, because
    libFuzzer reads a corpus folder recursively and ``fuzz/regressions/`` holds the
    other target's regressions in a subfolder. ``--seeds`` replaces them.
    """
    artifacts = os.path.join(args.artifacts, target)
    corpus = os.path.join(args.corpus, target)
    for directory in (corpus, artifacts):
        os.makedirs(directory, exist_ok=True)
    seeds = args.seeds
    if seeds is None:
        seeds = os.path.join(artifacts, "seeds")
        shutil.rmtree(seeds, ignore_errors=True)
        os.makedirs(seeds)
        for path in glob.glob(os.path.join(TARGETS[target]["regressions"], "*")):
            if os.path.isfile(path):
                shutil.copy(path, seeds)
    return {
        "driver": TARGETS[target]["driver"],
        "corpus": corpus,
        "seeds": seeds,
        "artifacts": artifacts,
    }


def fuzz(target, seconds, args, env):
    """Fuzzes ``target`` for ``seconds``; returns its summary (see :func:`write_summary`)."""
    paths = target_paths(target, args)
    start = time.monotonic()
    total, processes, findings, command, native_coverage = 0, 0, [], None, False
    while not _Stop.requested:
        remaining = int(seconds - (time.monotonic() - start))
        if remaining < 10:
            break
        processes += 1
        log_path = os.path.join(paths["artifacts"], f"run-{processes}.log")
        code, log, command = run_once(remaining, paths, args, env, log_path)
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
                "target": target,
                "kind": kind,
                "message": message,
                "exit_code": code,
                "reproducer": os.path.relpath(reproducer[-1], ROOT) if reproducer else None,
                "log": os.path.relpath(log_path, ROOT),
            }
        )
        print(f"[fuzz] {target}: finding {len(findings)}: {kind}: {message}", flush=True)
        if sum(f["message"] == message for f in findings) >= MAX_REPEATS:
            print(f"[fuzz] {target}: the same finding again: stopping", flush=True)
            break
    elapsed = time.monotonic() - start
    corpus = glob.glob(os.path.join(paths["corpus"], "*"))
    return {
        "target": target,
        "op": TARGETS[target]["op"],
        "seconds": round(elapsed, 1),
        "stopped_early": _Stop.requested,
        "executions": total,
        "executions_per_second": round(total / elapsed, 2) if elapsed else 0.0,
        "processes": processes,
        "findings": findings,
        "corpus": os.path.relpath(paths["corpus"], ROOT),
        "corpus_files": len(corpus),
        "corpus_bytes": sum(os.path.getsize(path) for path in corpus),
        "native_coverage": native_coverage,
        "libfuzzer_command": shlex.join(command or []),
    }


def fuzz_targets(targets, args):
    """Fuzzes each of ``targets`` in turn, ``args.seconds`` split evenly between them.

    Returns ``{target: summary}`` for the targets that ran (a stop request ends the
    current one, which still reports, and skips the rest).
    """
    env = sanitizer_environment(args.library)
    _move_flat_corpus(args.corpus)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _Stop.handle)
    start, runs = time.monotonic(), {}
    for i, target in enumerate(targets):
        if _Stop.requested:
            break
        # What the earlier targets left (a target that stops early gives its time on).
        share = (args.seconds - (time.monotonic() - start)) / (len(targets) - i)
        print(f"[fuzz] {target}: {share:.0f} s", flush=True)
        runs[target] = fuzz(target, share, args, env)
    return runs


# Per-run keys kept in the history (with the number of findings, not the list).
HISTORY_KEYS = (
    "timestamp",
    "command",
    "target",
    "seconds",
    "executions",
    "processes",
    "corpus_files",
    "native_coverage",
    "stopped_early",
)


# Runs from before the second target carry no "target": they fuzzed PerforatedConv2D.
FIRST_TARGET = "perforated_conv"
# The keys of such a run at the top level of its file.
LEGACY_RUN_KEYS = HISTORY_KEYS + (
    "executions_per_second",
    "findings",
    "corpus_bytes",
    "library",
    "libfuzzer_command",
)


def _history_target(entry):
    return entry.get("target", FIRST_TARGET)


def write_summary(path, runs, command, library=FUZZ_LIBRARY):
    """Writes this run (``{target: summary}``) and every earlier run recorded in ``path``.

    The top level describes this run (totals over its targets, every finding with
    its target); ``targets`` holds the latest run of each target, this one's or an
    earlier one's; ``history`` one entry per target and run; ``by_target`` the
    totals of the history per target.
    """
    history, targets = [], {}
    if os.path.exists(path):
        with open(path) as f:
            previous = json.load(f)
        history = previous.get("history", [])
        targets = previous.get("targets", {})
        if "targets" not in previous and "executions" in previous:
            # A file from before the second target: its top level is a PerforatedConv2D run.
            targets[FIRST_TARGET] = {"target": FIRST_TARGET} | {
                key: value for key, value in previous.items() if key in LEGACY_RUN_KEYS
            }
    timestamp = _common.now_iso()
    for target, run in runs.items():
        entry = {"timestamp": timestamp, "command": command, **run}
        history.append(
            {key: entry[key] for key in HISTORY_KEYS} | {"findings": len(run["findings"])}
        )
        targets[target] = entry
    seconds = sum(run["seconds"] for run in runs.values())
    executions_total = sum(run["executions"] for run in runs.values())
    by_target = {}
    for entry in history:
        totals = by_target.setdefault(
            _history_target(entry), {"runs": 0, "seconds": 0.0, "executions": 0, "findings": 0}
        )
        totals["runs"] += 1
        totals["seconds"] = round(totals["seconds"] + entry["seconds"], 1)
        totals["executions"] += entry["executions"]
        totals["findings"] += entry["findings"]
    payload = {
        "benchmark": "fuzz",
        "title": "Fuzzing of the compiled ops under ASan + UBSan",
        "description": __doc__.strip().split("\n\n")[1],
        "timestamp": timestamp,
        "command": command,
        "targets_run": list(runs),
        "seconds": round(seconds, 1),
        "stopped_early": any(run["stopped_early"] for run in runs.values()),
        "executions": executions_total,
        "executions_per_second": round(executions_total / seconds, 2) if seconds else 0.0,
        "processes": sum(run["processes"] for run in runs.values()),
        "findings": [finding for run in runs.values() for finding in run["findings"]],
        "corpus_files": sum(run["corpus_files"] for run in runs.values()),
        "corpus_bytes": sum(run["corpus_bytes"] for run in runs.values()),
        "library": os.path.relpath(library, ROOT),
        "sanitizers": "address,undefined (g++ -fsanitize=address,undefined)",
        "native_coverage": bool(runs) and all(run["native_coverage"] for run in runs.values()),
        "targets": targets,
        "machine": _common.machine_info(),
        "total_seconds": round(sum(h["seconds"] for h in history), 1),
        "total_executions": sum(h["executions"] for h in history),
        "by_target": by_target,
        "history": history,
    }
    _common.write_json(path, payload)
    return payload


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--seconds", type=int, default=600, help="total fuzzing time, split between the targets"
    )
    parser.add_argument(
        "--target",
        choices=(*TARGETS, "all"),
        default="all",
        help="which fuzz target to run (default: all, one after the other)",
    )
    parser.add_argument("--library", default=FUZZ_LIBRARY, help="sanitizer build of the ops")
    parser.add_argument(
        "--corpus",
        default=os.path.join(HERE, "corpus"),
        help="corpus root: each target grows CORPUS/<target> as libFuzzer finds new inputs",
    )
    parser.add_argument(
        "--seeds",
        default=None,
        help="read-only seed inputs for every target (default: each target's regressions, "
        "fuzz/regressions/ and fuzz/regressions/lrt_sample/)",
    )
    parser.add_argument(
        "--artifacts",
        default=os.path.join(HERE, "artifacts"),
        help="where reproducers and logs go (ARTIFACTS/<target>)",
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
    targets = list(TARGETS) if args.target == "all" else [args.target]
    runs = fuzz_targets(targets, args)
    command = "python fuzz/run_fuzz.py " + shlex.join(sys.argv[1:])
    payload = write_summary(args.out, runs, command, args.library)
    for target, run in runs.items():
        print(
            f"[fuzz] {target}: {run['executions']} inputs in {run['seconds']:.0f} s, "
            f"{len(run['findings'])} findings, corpus {run['corpus_files']} files",
            flush=True,
        )
    print(
        f"[fuzz] {payload['total_seconds'] / 3600:.2f} h fuzzed in total; wrote {args.out}",
        flush=True,
    )
    return 1 if payload["findings"] else 0


if __name__ == "__main__":
    sys.exit(main())
