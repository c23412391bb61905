"""RESULTS.md section of bench/perforation.py (no TensorFlow import)."""

from _common import table as _table


def _speedup(ms, name):
    return f"{ms[name]:.2f} ({ms['Conv2D'] / ms[name]:.2f}x)" if name in ms else "-"


def section(result):
    lines = [f"## {result['title']}", "", result["description"], ""]
    if not result.get("fused_op", True):
        lines += [
            "**The compiled op was not built for this run: 'fused' is missing and "
            "'auto' chose among the pure-TF implementations.**",
            "",
        ]
    lines += [
        f"CPU flags: {', '.join(result.get('cpu_flags', [])) or 'unknown'}; the "
        f"compiled op multiplies with {result.get('gemm') or 'nothing (not built)'}.",
        "",
    ]
    forward = [row for row in result["layers"] if row["kind"] == "forward"]
    keys = list(
        dict.fromkeys(
            key[: -len(":auto")] for row in forward for key in row["ms"] if key.endswith(":auto")
        )
    )
    header = ["Layer", "Batch", "Conv2D ms"] + [f"{key} ms (x)" for key in keys]
    rows = [
        [row["layer"], row["batch"], f"{row['ms']['Conv2D']:.2f}"]
        + [_speedup(row["ms"], f"{key}:auto") for key in keys]
        for row in forward
    ]
    lines += [
        'Forward, implementation="auto" (medians of interleaved repeats; (x) = '
        "Conv2D time / this time):",
        "",
    ]
    lines += _table(header, rows)
    breakdown = list(
        dict.fromkeys(
            key for row in forward for key in row["ms"] if ":" in key and not key.endswith(":auto")
        )
    )
    rows = [
        [row["layer"], row["batch"], f"{row['ms']['Conv2D']:.2f}"]
        + [_speedup(row["ms"], key) for key in breakdown]
        for row in forward
    ]
    lines += [
        "",
        "Each implementation, and the bounds timed beside them (strided "
        "convolutions alone; tf.matmul on the kept im2col rows; one elementwise pass "
        "over the output):",
        "",
    ]
    lines += _table(["Layer", "Batch", "Conv2D ms"] + [f"{key} ms (x)" for key in breakdown], rows)
    choices = [
        [
            row["layer"],
            row["batch"],
            row["kind"],
            ", ".join(f"{k}: {v}" for k, v in row["auto_chose"].items()),
        ]
        for row in result["layers"]
    ]
    lines += ["", 'What "auto" ran:', ""]
    lines += _table(["Layer", "Batch", "Kind", "Choice per mask @ rate"], choices)
    train = [row for row in result["layers"] if row["kind"] == "train step"]
    if train:
        keys = [key for key in train[0]["ms"] if key != "Conv2D"]
        lines += ["", "Training step (forward + gradients of input and kernel):", ""]
        lines += _table(
            ["Layer", "Batch", "Conv2D ms"] + [f"{k} ms (x)" for k in keys],
            [
                [row["layer"], row["batch"], f"{row['ms']['Conv2D']:.2f}"]
                + [_speedup(row["ms"], k) for k in keys]
                for row in train
            ],
        )
    lite = result["litert"]
    lite_rows = [
        [
            name,
            f"{lite['ms'][name]:.3f}",
            f"{lite['ms']['CONV_2D'] / lite['ms'][name]:.2f}x",
            ", ".join(lite["ops"][name]),
            f"{lite['max_abs_diff'][name]:.2g}",
        ]
        for name in lite["ms"]
    ]
    lines += ["", f"LiteRT, 1 thread, batch 1, {lite['layer']}:", ""]
    lines += _table(["Export", "ms", "vs CONV_2D", "Ops", "max |diff| vs Keras"], lite_rows)
    accuracy = result["accuracy"]
    masks = list(dict.fromkeys(row["mask"] for row in accuracy["rows"]))
    acc_rates = sorted({row["rate"] for row in accuracy["rows"]})
    acc_rows = []
    for mask in masks:
        cells = [mask]
        for rate in acc_rates:
            row = next(r for r in accuracy["rows"] if r["mask"] == mask and r["rate"] == rate)
            cells.append(f"{100 * row['error_nearest']:.2f}% / {100 * row['error_zero']:.2f}%")
        acc_rows.append(cells)
    lines += [
        "",
        f"Digits test error, both convolutions perforated, no fine-tuning "
        f"(unperforated {100 * accuracy['baseline_error']:.2f}%); nearest fill / zero "
        "fill:",
        "",
    ]
    lines += _table(["Mask"] + [f"rate {r:g}" for r in acc_rates], acc_rows)
    lines += ["", f"![error vs rate]({result['picture']})", ""]
    goal_rows = [
        [
            g["name"],
            f"{g['measured']:.2f}x",
            g["goal"],
            "met" if g["met"] else "**MISSED**",
            g.get("note", ""),
        ]
        for g in result["goals"]
    ]
    lines += _table(["Goal", "Measured", "Goal", "Result", "Note"], goal_rows)
    notes = result.get("notes", [])
    if notes:
        lines += [""] + [f"- {note}" for note in notes]
    return lines
