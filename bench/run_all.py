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
    start = time.perf_counter()
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    completed = subprocess.run(command, env=env)
    seconds = time.perf_counter() - start
    print(f"=== {name}: exit status {completed.returncode} after {seconds:.0f} s", flush=True)
    return completed.returncode, seconds


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


def summary_section(results):
    rows = []
    for result in results:
        for goal in result.get("goals", []):
            rows.append(
                [
                    goal["name"],
                    fmt_measure(goal["measured"], goal["unit"]),
                    f"{fmt_measure(goal['baseline'], goal['unit'])} ({goal['baseline_name']})",
                    fmt_ratio(goal),
                    goal["goal"],
                    verdict(goal),
                ]
            )
    lines = ["## Goals", ""]
    lines += table(["Benchmark", "Measured", "Baseline", "Ratio", "Goal", "Result"], rows)
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


def compression_section(result):
    settings = result["settings"]
    lines = [
        f"## {result['title']}",
        "",
        result["description"],
        "",
        f"Rule: {result['rule']}",
        "",
        f"Recipe: dense pretraining {settings['pretrain_epochs']} epochs; both methods then "
        f"fine-tune {settings['finetune_epochs']} epochs (Adam, lr "
        f"{settings['learning_rate']:g}, batch {settings['batch_size']}); Sparse VD: "
        f"{settings['sparse_vd_recipe']}; TFMOT: {settings['tfmot_schedule']}, target "
        f"sparsities {', '.join(str(s) for s in settings['sparsities'])}.",
        "",
    ]
    rows = []
    for net in result["nets"].values():
        s = net["summary"]
        goal = next(g for g in result["goals"] if g["name"].startswith(net["title"]))
        rows.append(
            [
                net["title"],
                pct(s["dense_error"]),
                pct(s["budget"]),
                f"{s['sparse_vd_compression']:.1f}x",
                pct(s["sparse_vd_error"]),
                f"{s['sparse_vd_seeds_within_budget']}/{s['seeds']}",
                f"{s['tfmot_compression']:.1f}x",
                pct(s["tfmot_error"]),
                fmt_ratio(goal),
                goal["goal"],
                verdict(goal),
                f"{s['tfmot_compression_at_sparse_vd_error']:.1f}x",
            ]
        )
    lines += table(
        [
            "Net",
            "Dense error",
            "Budget",
            "Sparse VD compression",
            "Sparse VD error",
            "Sparse VD seeds within budget",
            "TFMOT compression",
            "TFMOT error",
            "Ratio",
            "Goal",
            "Result",
            "TFMOT within Sparse VD's own error",
        ],
        rows,
    )
    lines += ["", f"Medians over {result['repeats']} seeds. Per seed:", ""]
    rows = []
    for net in result["nets"].values():
        for r in net["per_seed"]:
            chosen = r["tfmot"]["chosen"]
            rows.append(
                [
                    net["title"],
                    r["seed"],
                    pct(r["dense_error"]),
                    pct(r["budget"]),
                    f"{r['sparse_vd']['compression']:.1f}x",
                    pct(r["sparse_vd"]["test_error"]),
                    pct(r["sparse_vd"]["train_error"]),
                    f"{chosen['compression']:.1f}x (sparsity {chosen['target_sparsity']})",
                    pct(chosen["test_error"]),
                    f"{r['tfmot']['at_sparse_vd_error']['compression']:.1f}x",
                ]
            )
    lines += table(
        [
            "Net",
            "Seed",
            "Dense error",
            "Budget",
            "Sparse VD compression",
            "Sparse VD test error",
            "Sparse VD train error",
            "TFMOT pick",
            "TFMOT error",
            "TFMOT within Sparse VD's error",
        ],
        rows,
    )
    lines += ["", "TFMOT sweep (medians over seeds):", ""]
    nets = list(result["nets"].values())
    header = ["Target sparsity"] + [f"{n['title']}: compression / error" for n in nets]
    rows = []
    for i, point in enumerate(nets[0]["tfmot_sweep_medians"]):
        rows.append(
            [point["target_sparsity"]]
            + [
                f"{n['tfmot_sweep_medians'][i]['compression']:.1f}x / "
                f"{pct(n['tfmot_sweep_medians'][i]['test_error'])}"
                for n in nets
            ]
        )
    lines += table(header, rows)
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
            f"{net['tfmot']['sparsity']} ({net['tfmot']['compression']:.1f}x)."
        )
    return lines


def tta_rows(result):
    names = list(result["rows"][0]["policies"])
    header = (
        ["Models", "Samples"] + [f"{n}: acc / NLL / cNLL / DEE" for n in names] + ["Lowest cNLL"]
    )
    curve = result["settings"]["ensemble_curve"]
    largest, best_curve = max(curve, key=int), min(curve.values())

    def dee(m):
        # Better than every ensemble on the curve: the DEE is only a lower bound.
        beyond = m["calibrated_nll"] < best_curve
        return f"> {largest}" if beyond else f"{m['dee']:.2f}"

    rows = []
    for row in result["rows"]:
        cells = [row["models"], row["samples"]]
        for name in names:
            m = row["policies"][name]
            cells.append(
                f"{pct(m['accuracy'])} / {m['nll']:.4f} / {m['calibrated_nll']:.4f} / {dee(m)}"
            )
        cells.append(row["best"])
        rows.append(cells)
    lines = table(header, rows)
    lines += ["", "Equal compute (model calls per image = members x TTA samples):", ""]
    rows = []
    for group in result.get("equal_compute", []):
        rows.append(
            [
                group["budget"],
                f"{group['budget']} members, no TTA",
                "-",
                f"{group['ensemble_calibrated_nll']:.4f}",
                "-",
            ]
        )
        for split in group["splits"]:
            rows.append(
                [
                    group["budget"],
                    f"{split['members']} x {split['samples']} samples",
                    split["policy"],
                    f"{split['calibrated_nll']:.4f}",
                    pct(split["accuracy"]),
                ]
            )
    lines += table(["Calls per image", "Split", "Policy", "Calibrated NLL", "Accuracy"], rows)
    settings, metta = result["settings"], result["metta"]
    curve = ", ".join(f"{k}: {v:.4f}" for k, v in settings["ensemble_curve"].items())
    lines += [
        "",
        f"- Data: {settings.get('train_images', '?')} training images, search split "
        f"{settings.get('search_split', '?')}, {settings.get('test_images', '?')} "
        f"test images; members trained {settings['epochs']} epochs with "
        f"{settings.get('train_policy', 'shift+rotate')}.",
        f"- Deep-ensemble curve (calibrated NLL by size, no TTA): {curve}.",
        "- RandAugment grid on the search split (calibrated NLL by M): "
        + ", ".join(f"{k}: {v:.4f}" for k, v in settings["randaugment_grid"].items())
        + f"; chosen M = {settings['randaugment_best_m']}.",
        f"- GPS (pool {settings['pool_size']}, length {settings['policy_length']}): "
        + "; ".join(
            " -> ".join(f"{s['op']}({s['magnitude']:g})" for s in sub)
            for sub in settings["gps_policy"]["subpolicies"]
        )
        + ".",
        f"- MeTTA linear probe on the 'features' layer: central embeddings "
        f"{pct(metta['central'])}, mean embeddings (16 augmentations) "
        f"{pct(metta['mean'])}.",
    ]
    return lines


def tta_section(result):
    lines = [f"## {result['title']}", "", result["description"], "", "### Digits", ""]
    lines += tta_rows(result)
    speed = result["speed"]
    lines += [
        f"- Speed ({speed['samples']} samples): TTAPredictor "
        f"{speed['median_batched']:.2f} ms per image, Python loop "
        f"{speed['median_python_loop']:.2f} ms per image "
        f"({speed['median_python_loop'] / speed['median_batched']:.1f}x)."
    ]
    cifar = result.get("cifar10")
    if cifar and "skipped" in cifar:
        lines += ["", "### CIFAR-10", "", f"Skipped: {cifar['skipped']}"]
    elif cifar:
        lines += ["", "### CIFAR-10", ""] + tta_rows(cifar)
    return lines


SECTIONS = {
    "compression": compression_section,
    "train_step": train_step_section,
    "export_tflite": export_section,
    "tta": tta_section,
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


def machine_lines(results):
    machine = results[0]["machine"]
    v = machine["versions"]
    worker = results[0].get("keras2_worker_machine", {}).get("versions", {})
    code = machine.get("code", {})
    changes = (
        " with uncommitted changes in tfpriors/" if code.get("tfpriors_uncommitted_changes") else ""
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
    commits = {}
    for result in results:
        commit = (result["machine"].get("code", {}).get("commit") or "unknown")[:12]
        commits.setdefault(commit, []).append(result["benchmark"])
    commit_text = (
        f"- tfpriors at commit {(code.get('commit') or 'unknown')[:12]}{changes}"
        if len(commits) == 1
        else "- tfpriors at commits "
        + "; ".join(f"{commit} ({', '.join(names)})" for commit, names in commits.items())
    )
    return [
        *machine_text,
        f"- Python {v['python']}, TensorFlow {v['tensorflow']}, Keras {v['keras']}, NumPy "
        f"{v['numpy']}; Keras 2 baselines: tf_keras {worker.get('tf_keras')}, TFMOT "
        f"{worker.get('tensorflow-model-optimization')}, TFP "
        f"{worker.get('tensorflow-probability')}",
        commit_text,
        "- Runs: "
        + "; ".join(
            f"{r['benchmark']} at {r['timestamp']} ({r['seconds']:.0f} s)" for r in results
        ),
    ]


def render(results_dir):
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
    lines += machine_lines(results) + [""]
    lines += summary_section(results)
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
    failed = []
    if not args.report_only:
        for name in args.only or BENCHMARKS:
            status, _ = run_benchmark(name, args.quick)
            if status != 0:
                failed.append(name)

    results_dir = _common.results_dir(args.quick)
    report_path = (
        os.path.join(results_dir, "RESULTS.md")
        if args.quick
        else os.path.join(_common.BENCH_DIR, "RESULTS.md")
    )
    _common.write_text(report_path, render(results_dir))
    print(f"wrote {report_path}; total {time.perf_counter() - start:.0f} s", flush=True)
    if failed:
        sys.exit(f"benchmarks failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
