"""Runs every benchmark, then writes bench/RESULTS.md from bench/results/*.json.

    python bench/run_all.py                    # all benchmarks (what `make bench` runs)
    python bench/run_all.py --only compression # one benchmark, then RESULTS.md again
    python bench/run_all.py --quick            # smoke check into bench/results/quick/
    python bench/run_all.py --report-only      # RESULTS.md from the JSON files alone

Each benchmark runs in its own Python process, so one benchmark's TensorFlow
state (threads, traced functions, memory) cannot colour another's figures.
RESULTS.md is rebuilt from every JSON file present, so ``--only`` keeps the
other benchmarks' latest figures.
"""

import argparse
import glob
import importlib
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402
from _common import table  # noqa: E402

# Every bench/<name>.py that does not start with "_" is a benchmark; these run
# first, in this order, the others after them alphabetically.
_FIRST = ("compression", "train_step", "export_tflite", "tta")


def discover_benchmarks():
    names = sorted(
        os.path.splitext(os.path.basename(p))[0]
        for p in glob.glob(os.path.join(_common.BENCH_DIR, "*.py"))
    )
    names = [n for n in names if not n.startswith("_") and n != "run_all"]
    return tuple(n for n in _FIRST if n in names) + tuple(n for n in names if n not in _FIRST)


BENCHMARKS = discover_benchmarks()


def run_benchmark(name, quick):
    command = [sys.executable, os.path.join(_common.BENCH_DIR, f"{name}.py")]
    if quick:
        command.append("--quick")
    print(f"=== {name}: {' '.join(command)}", flush=True)
    start_wall = time.time()
    start = time.perf_counter()
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    completed = subprocess.run(command, env=env)
    seconds = time.perf_counter() - start
    print(f"=== {name}: exit status {completed.returncode} after {seconds:.0f} s", flush=True)
    if completed.returncode == 0:
        record_wall_time(
            os.path.join(_common.results_dir(quick), f"{name}.json"), seconds, start_wall
        )
    return completed.returncode, seconds


def record_wall_time(path, seconds, started):
    """Adds the wall time of the process that wrote ``path`` (imports and start-up included).

    Only a file written after ``started`` (seconds since the epoch) is this
    run's; an older one is left alone.
    """
    if not os.path.exists(path) or os.path.getmtime(path) < started:
        return
    result = _common.read_json(path)
    result["wall_seconds"] = seconds
    _common.write_json(path, result)


# -- RESULTS.md ----------------------------------------------------------------------------


def pct(value):
    return f"{100 * value:.2f}%"


def verdict(goal):
    return "met" if goal["met"] else "**MISSED**"


def fmt_ratio(goal):
    # Two decimals, unless rounding would make a missed goal look met (2.004 vs <= 2).
    text = f"{goal['ratio']:.2f}"
    return f"{goal['ratio']:.3f}" if float(text) == goal["goal_value"] else text


def fmt_measure(value, unit):
    return f"{value:.1f}x" if unit == "x" else f"{value:.2f} {unit}"


def summary_section(results, stale=None):
    stale = stale or {}
    rows = []
    for result in results:
        record = "**stale**" if stale.get(result["benchmark"]) else "current"
        for goal in result.get("goals", []):
            rows.append(
                [
                    goal["name"],
                    fmt_measure(goal["measured"], goal["unit"]),
                    f"{fmt_measure(goal['baseline'], goal['unit'])} ({goal['baseline_name']})",
                    fmt_ratio(goal),
                    goal["goal"],
                    verdict(goal),
                    record,
                ]
            )
    lines = ["## Goals", ""]
    lines += table(["Benchmark", "Measured", "Baseline", "Ratio", "Goal", "Result", "Record"], rows)
    missed = [g for r in results for g in r.get("goals", []) if not g["met"]]
    if missed:
        lines += ["", "Missed goals:", ""]
        for goal in missed:
            reason = f" {goal['note']}" if goal["note"] else ""
            lines.append(
                f"- **{goal['name']}**: ratio {fmt_ratio(goal)} against the goal "
                f"{goal['goal']}.{reason}"
            )
    return lines


def train_step_section(result):
    lines = [
        f"## {result['title']}",
        "",
        result["description"],
        "",
        f"Medians of {result['repeats']} timed repeats after a warm-up call; "
        "ms per train step (lower is better).",
        "",
    ]
    rows = []
    for c in result["cases"].values():
        med = c["median_ms_per_step"]
        others = {k: v for k, v in med.items() if k != "dense"}
        goal = c["goal"]
        noise = c.get("noise_ms_per_step")
        rows.append(
            [
                c["description"],
                f"{med['dense']:.2f}",
                "; ".join(f"{k} {v:.2f} ({c['ratios'][k]:.2f}x)" for k, v in others.items()),
                f"{_common.median(noise):.2f}" if noise else "-",
                fmt_ratio(goal) if goal else f"{c['ratio']:.2f}",
                goal["goal"] if goal else "peer, no goal",
                verdict(goal) if goal else "-",
            ]
        )
    lines += table(
        [
            "Case",
            "Baseline ms/step",
            "Others ms/step (ratio)",
            "Noise draw alone ms/step",
            "Ratio",
            "Goal",
            "Result",
        ],
        rows,
    )
    before, after = result.get("load_average_before_after", [None, None])
    if before:
        lines += [
            "",
            f"Load average (1/5/15 min) before: {', '.join(f'{x:.2f}' for x in before)}; "
            f"after: {', '.join(f'{x:.2f}' for x in after)} on "
            f"{result['machine']['cores']} cores. A load above the core count means "
            "other processes shared the CPU; the alternating order keeps the ratios "
            "fair, the absolute times less so.",
        ]
    return lines


def fmt_sparsity(sparsity):
    if isinstance(sparsity, list):
        return "per layer " + "/".join(f"{s:g}" for s in sparsity)
    return f"{sparsity:g}"


def export_section(result):
    lines = [
        f"## {result['title']}",
        "",
        result["description"],
        "",
        f"Latency: median of {result['repeats']} {result['repeat_kind']}, batch 1, "
        "1 thread, LiteRT with XNNPACK.",
        "",
    ]
    rows = []
    names = {
        "dense": "dense export",
        "tfpriors": "tfpriors",
        "tfpriors_int8": "tfpriors int8",
        "tfmot": "TFMOT strip_pruning + sparsity",
    }
    for net in result["nets"].values():
        dense = net["files"]["dense"]
        for key, label in names.items():
            f = net["files"][key]
            rows.append(
                [
                    net["title"],
                    label,
                    f"{f['size_bytes']:,}",
                    f"{dense['size_bytes'] / f['size_bytes']:.1f}x",
                    f"{1000 * f['latency_ms']:.2f}",
                    f"{dense['latency_ms'] / f['latency_ms']:.2f}x",
                    pct(f["test_accuracy"]),
                    # Older records lack the field; the difference follows from the accuracies.
                    f"{100 * (f['test_accuracy'] - dense['test_accuracy']):+.2f}",
                ]
            )
    lines += table(
        [
            "Net",
            "File",
            "Bytes",
            "Smaller than dense",
            "Latency us",
            "Faster than dense",
            "Test accuracy (LiteRT)",
            "Accuracy vs dense (pt)",
        ],
        rows,
    )
    lines += [""]
    for net in result["nets"].values():
        report = net["tfpriors_report"]
        shrink = ", ".join(f"{name} {a}->{b}" for name, (a, b) in report["shrink"].items())
        lines.append(
            f"- {net['title']}: Keras Sparse VD model {net['keras_sparse_vd_compression']:.1f}x "
            f"compressed, test accuracy {pct(net['keras_sparse_vd_test_accuracy'])}; "
            f"shrink {shrink or 'none'}; ops {', '.join(report['ops'])}; sparse "
            f"storage {', '.join(report['sparse_layers']) or 'none'}; max |diff| "
            f"vs Keras {report['max_abs_diff']:.2g}. TFMOT pruned to sparsity "
            f"{fmt_sparsity(net['tfmot']['sparsity'])} ({net['tfmot']['compression']:.1f}x)."
        )
    return lines


SECTIONS = {
    "train_step": train_step_section,
    "export_tflite": export_section,
}


def section_renderer(name):
    """The RESULTS.md renderer of benchmark ``name``.

    Newer benchmarks keep theirs beside them in ``bench/_report_<name>.py``
    (a ``section(result)`` function returning Markdown lines), a module that
    imports no TensorFlow so that ``--report-only`` stays fast.
    """
    if name in SECTIONS:
        return SECTIONS[name]
    if os.path.exists(os.path.join(_common.BENCH_DIR, f"_report_{name}.py")):
        return importlib.import_module(f"_report_{name}").section
    return None


# -- provenance: which commit, which tree, which machine, and is the figure still current --

REPO_ROOT = os.path.dirname(_common.BENCH_DIR)
# Always part of what a benchmark measures.
SHARED_SOURCES = ("tfpriors", "custom_ops", "bench/_common.py")
# Code a benchmark runs that the import scan below cannot see.
EXTRA_SOURCES = {
    "fuzz": ("fuzz", "bench/_report_fuzz.py"),
    "multiworker": ("tests/reliability/multiworker_worker.py",),
}
# Where a benchmark's own imports may live (bench/ is first on its sys.path).
_IMPORT_DIRS = ("bench", "examples", "mobile", "")
_IMPORT = re.compile(r"^\s*(?:from|import)\s+([A-Za-z_]\w*)", re.MULTILINE)
_WORKER = re.compile(r"[\"'](_\w+\.py)[\"']")


def _local_module(name, repo):
    """The repo-relative path of module ``name`` when it is the repository's own code."""
    for directory in _IMPORT_DIRS:
        base = os.path.join(directory, name) if directory else name
        if os.path.isfile(os.path.join(repo, base + ".py")):
            return base + ".py"
        if os.path.isfile(os.path.join(repo, base, "__init__.py")):
            return base
    return None


def benchmark_sources(name, repo=REPO_ROOT):
    """The repo-relative paths whose changes can move benchmark ``name``'s figures.

    ``tfpriors/``, ``custom_ops/`` and ``bench/_common.py``; ``bench/<name>.py``
    and ``bench/_report_<name>.py``; and, followed from those files, the
    repository modules they import (``examples/``, ``mobile/``, other
    ``bench/`` files) and the ``bench/_*.py`` workers they name.
    """
    found = list(SHARED_SOURCES) + list(EXTRA_SOURCES.get(name, ()))
    queue = [f"bench/{name}.py", f"bench/_report_{name}.py"]
    while queue:
        path = queue.pop()
        full = os.path.join(repo, path)
        if path in found or not os.path.exists(full):
            continue
        found.append(path)
        if not path.endswith(".py"):
            continue  # a package: its whole folder is listed
        with open(full, encoding="utf-8") as f:
            text = f.read()
        for module in _IMPORT.findall(text):
            local = _local_module(module, repo)
            if local and local != "tfpriors":
                queue.append(local)
        queue += [f"bench/{script}" for script in _WORKER.findall(text)]
    return found


def _git_lines(repo, *args):
    out = _common._git(repo, *args)
    return None if out is None else [line for line in out.splitlines() if line]


def staleness(result, repo=REPO_ROOT):
    """Why ``result`` no longer stands for the code here (a list of reasons; empty: current).

    A result is stale when it was measured with uncommitted changes, when its
    commit is unknown, or when any of :func:`benchmark_sources` differs
    between its commit and the working tree (later commits and uncommitted
    edits alike; new untracked files too).
    """
    code = result.get("machine", {}).get("code", {})
    commit = code.get("commit")
    if not commit:
        return ["commit unknown"]
    reasons = []
    if code.get("dirty"):
        paths = code.get("dirty_paths") or []
        reasons.append(f"measured on a dirty tree ({_grouped(paths, _common.CODE_PATHS[:2])})")
    elif code.get("dirty") is None and code.get("tfpriors_uncommitted_changes"):
        reasons.append("measured with uncommitted changes in tfpriors/")
    if _common._git(repo, "cat-file", "-e", f"{commit}^{{commit}}") is None:
        return reasons + [f"commit {commit[:12]} is not in this repository"]
    sources = benchmark_sources(result["benchmark"], repo)
    changed = _git_lines(repo, "diff", "--name-only", commit, "--", *sources) or []
    untracked = _git_lines(repo, "ls-files", "--others", "--exclude-standard", "--", *sources)
    changed = sorted(set(changed) | set(untracked or []))
    if changed:
        reasons.append(f"changed since {commit[:12]}: {_grouped(changed, sources)}")
    return reasons


def _grouped(paths, sources):
    """``paths`` for a reader: files named, folders (``tfpriors/``...) as file counts."""
    folders = [s for s in sources if os.path.splitext(s)[1] != ".py"]
    counts, files = {}, []
    for path in paths:
        folder = next((f for f in folders if path.startswith(f + "/")), None)
        if folder is None:
            files.append(path)
        else:
            counts[folder] = counts.get(folder, 0) + 1
    parts = files + [f"{folder}/ ({n} file{'s' if n > 1 else ''})" for folder, n in counts.items()]
    return ", ".join(parts)


def tree_state(code):
    if code.get("dirty") is None:
        if code.get("tfpriors_uncommitted_changes") is False:
            return "clean tfpriors/ (bench/, custom_ops/ not checked)"
        return "dirty tfpriors/" if code.get("tfpriors_uncommitted_changes") else "unknown"
    return "dirty" if code["dirty"] else "clean"


def fmt_load(values):
    return "-" if not values else "/".join(f"{x:.1f}" for x in values)


def fmt_minutes(seconds):
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def run_seconds(result):
    """Wall time of the process when run_all timed it, else the benchmark's own clock."""
    return result.get("wall_seconds", result.get("seconds", 0.0))


def records_section(results, stale):
    """Per benchmark: commit, tree, CPU, ISA, load, time and whether the figures are stale."""
    rows = []
    for result in results:
        machine = result["machine"]
        code = machine.get("code", {})
        simd = machine.get("isa", {}).get("simd")
        # Older records hold one load average, taken when the JSON was made.
        start = machine.get("load_average_start")
        end = machine.get("load_average_end", machine.get("load_average"))
        reasons = stale[result["benchmark"]]
        rows.append(
            [
                result["benchmark"],
                (code.get("commit") or "unknown")[:12],
                tree_state(code),
                machine["cpu"],
                _common.isa_summary(simd) if simd is not None else "not recorded",
                f"{fmt_load(start)} -> {fmt_load(end)}" if start else f"{fmt_load(end)} (one)",
                result["timestamp"],
                fmt_minutes(run_seconds(result)),
                "**stale**" if reasons else "current",
            ]
        )
    lines = ["## Records", ""]
    lines += table(
        [
            "Benchmark",
            "Commit",
            "Tree",
            "CPU",
            "ISA",
            "Load 1/5/15 min (start -> end)",
            "Run at",
            "Time",
            "Figures",
        ],
        rows,
    )
    in_make = [r for r in results if r["benchmark"] in BENCHMARKS]
    others = [r for r in results if r["benchmark"] not in BENCHMARKS]
    timed = sum("wall_seconds" in r for r in in_make)
    lines += [
        "",
        f"Total time of the {len(in_make)} benchmarks that `make bench` runs: "
        f"{fmt_minutes(sum(run_seconds(r) for r in in_make))} on these records "
        f"({timed} timed by run_all.py as whole processes, the others by their own "
        "clock, which leaves out start-up).",
    ]
    if others:
        lines[-1] += (
            " Not part of `make bench`: "
            + ", ".join(f"{r['benchmark']} ({fmt_minutes(run_seconds(r))})" for r in others)
            + "."
        )
    stale_results = [r for r in results if stale[r["benchmark"]]]
    if stale_results:
        lines += [
            "",
            "**Stale** figures were measured on code that differs from this tree; they "
            "stay below for reference but need a re-run on a clean tree before anyone "
            "quotes them:",
            "",
        ]
        lines += [f"- {r['benchmark']}: {'; '.join(stale[r['benchmark']])}." for r in stale_results]
    return lines


def machine_lines(results):
    v = results[0]["machine"]["versions"]
    worker = next(
        (r["keras2_worker_machine"]["versions"] for r in results if "keras2_worker_machine" in r),
        {},
    )
    # Benchmarks rerun on another machine say so: one line per machine.
    machines = {}
    for result in results:
        other = result["machine"]
        key = (other["cpu"], other["cores"], other["platform"])
        machines.setdefault(key, []).append(result["benchmark"])
    machine_text = [
        f"- Machine: {cpu}, {cores} cores, {platform}"
        + (f" ({', '.join(names)})" if len(machines) > 1 else "")
        for (cpu, cores, platform), names in machines.items()
    ]
    return [
        *machine_text,
        f"- Python {v['python']}, TensorFlow {v['tensorflow']}, Keras {v['keras']}, NumPy "
        f"{v['numpy']}; Keras 2 baselines: tf_keras {worker.get('tf_keras')}, TFMOT "
        f"{worker.get('tensorflow-model-optimization')}, TFP "
        f"{worker.get('tensorflow-probability')}",
    ]


def render(results_dir, repo=REPO_ROOT):
    """RESULTS.md from every JSON file in ``results_dir``; staleness judged against ``repo``."""
    paths = sorted(glob.glob(os.path.join(results_dir, "*.json")))
    results = [_common.read_json(p) for p in paths]
    order = {name: i for i, name in enumerate(BENCHMARKS)}
    results.sort(key=lambda r: order.get(r["benchmark"], len(order)))
    if not results:
        return "# Benchmark results\n\nNo results yet: run `make bench`.\n"
    # Records without repeats (the fuzzer, the multi-worker equality run) say what they are
    # in their own sections.
    repeats = "; ".join(
        f"{r['benchmark']}: {r['repeat_kind']} = {r['repeats']}"
        for r in results
        if "repeat_kind" in r
    )
    lines = [
        "# Benchmark results",
        "",
        f"Figures are medians of repeats on this machine: {repeats}. "
        "Raw per-repeat values are in `bench/results/*.json`.",
        "",
        "Command: `make bench` (runs `.venv/bin/python bench/run_all.py`). "
        f"Generated {_common.now_iso()}.",
        "",
    ]
    if any(r.get("quick") for r in results):
        lines += ["**Quick smoke run: few repeats and epochs; these figures mean nothing.**", ""]
    stale = {r["benchmark"]: staleness(r, repo) for r in results}
    lines += machine_lines(results) + [""]
    lines += records_section(results, stale) + [""]
    lines += summary_section(results, stale)
    for result in results:
        section = section_renderer(result["benchmark"])
        if section is not None:
            lines += [""] + section(result)
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer repeats and epochs; writes bench/results/quick/"
    )
    parser.add_argument(
        "--only", choices=BENCHMARKS, action="append", help="run only this benchmark (repeatable)"
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="do not run anything; rebuild RESULTS.md from the JSON files",
    )
    args = parser.parse_args()

    start = time.perf_counter()
    failed, timings = [], {}
    if not args.report_only:
        for name in args.only or BENCHMARKS:
            status, timings[name] = run_benchmark(name, args.quick)
            if status != 0:
                failed.append(name)

    results_dir = _common.results_dir(args.quick)
    report_path = (
        os.path.join(results_dir, "RESULTS.md")
        if args.quick
        else os.path.join(_common.BENCH_DIR, "RESULTS.md")
    )
    _common.write_text(report_path, render(results_dir))
    for name, seconds in timings.items():
        print(f"  {name:<16} {fmt_minutes(seconds):>10}{' (failed)' if name in failed else ''}")
    print(f"wrote {report_path}; total {fmt_minutes(time.perf_counter() - start)}", flush=True)
    if failed:
        sys.exit(f"benchmarks failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
