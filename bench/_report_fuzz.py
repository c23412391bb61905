"""RESULTS.md section of ``make fuzz`` (fuzz/run_fuzz.py; imports no TensorFlow)."""

# Runs recorded before the second fuzz target carry no "target": they fuzzed this one.
FIRST_TARGET = "perforated_conv"


def _count(findings):
    # The current run lists its findings; the history keeps their number.
    return findings if isinstance(findings, int) else len(findings)


def _runs(result):
    """One row per target and run, oldest first (files from before ``history`` too)."""
    runs = list(result.get("history", []))
    if not runs or runs[-1]["timestamp"] != result["timestamp"]:
        # A file without this run in its history: the top level is the run (one target).
        runs.append(result)
    return runs


def section(result):
    runs = _runs(result)
    lines = [
        f"## {result['title']}",
        "",
        f"`{result['command']}` (run by `make fuzz`; `--target` picks one); the method, the "
        "contract and the findings are in "
        "[`RELIABILITY.md`](../RELIABILITY.md#custom-op-fuzzing).",
        "",
        "| Run (UTC) | Target | Seconds | Inputs | Inputs/s | Native coverage | Findings |",
        "|---|---|---:|---:|---:|---|---:|",
    ]
    totals = {}
    for run in runs:
        target = run.get("target", FIRST_TARGET)
        seconds = run["seconds"]
        rate = run["executions"] / seconds if seconds else 0.0
        lines.append(
            f"| {run['timestamp']} | {target} | {seconds:.0f} | {run['executions']:,} | "
            f"{rate:.1f} | {'yes' if run.get('native_coverage') else 'no'} | "
            f"{_count(run['findings'])} |"
        )
        total = totals.setdefault(target, [0.0, 0, 0])
        total[0] += seconds
        total[1] += run["executions"]
        total[2] += _count(run["findings"])
    findings = sum(total[2] for total in totals.values())
    per_target = "; ".join(
        f"{target} {seconds / 3600:.2f} h, {inputs:,} inputs, {found} findings"
        for target, (seconds, inputs, found) in totals.items()
    )
    lines += [
        "",
        f"Total: {result['total_seconds'] / 3600:.2f} h, "
        f"{result['total_executions']:,} inputs, {findings} findings ({per_target}), under "
        f"{result['sanitizers']}.",
    ]
    return lines
