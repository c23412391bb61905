"""RESULTS.md section of ``make fuzz`` (fuzz/run_fuzz.py; imports no TensorFlow)."""


def _count(findings):
    # The current run lists its findings; the history keeps their number.
    return findings if isinstance(findings, int) else len(findings)


def section(result):
    runs = list(result.get("history", []))
    if not runs or runs[-1]["timestamp"] != result["timestamp"]:
        runs.append(result)  # the history holds every run, this one included, when complete
    lines = [
        f"## {result['title']}",
        "",
        f"`{result['command']}` (run by `make fuzz`); the method, the contract and the "
        "findings are in [`RELIABILITY.md`](../RELIABILITY.md#custom-op-fuzzing).",
        "",
        "| Run (UTC) | Seconds | Inputs | Inputs/s | Native coverage | Findings |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for run in runs:
        seconds = run["seconds"]
        rate = run["executions"] / seconds if seconds else 0.0
        lines.append(
            f"| {run['timestamp']} | {seconds:.0f} | {run['executions']:,} | "
            f"{rate:.1f} | {'yes' if run.get('native_coverage') else 'no'} | "
            f"{_count(run['findings'])} |"
        )
    findings = sum(_count(run["findings"]) for run in runs)
    lines += [
        "",
        f"Total: {result['total_seconds'] / 3600:.2f} h, "
        f"{result['total_executions']:,} inputs, {findings} findings, under "
        f"{result['sanitizers']}.",
    ]
    return lines
