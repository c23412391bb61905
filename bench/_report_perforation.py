"""RESULTS.md section of bench/perforation.py (no TensorFlow import)."""

from _common import table as _table


def section(result):
    lines = [f"## {result['title']}", "", result["description"], ""]
    if not result.get("fused_op", True):
        lines += ["**The fused op was not built for this run: the 'fused' columns are the "
                  "pure-TF path.**", ""]
    rates = sorted({float(name.split("@")[1]) for row in result["layers"]
                    for name in row["ms"] if "@" in name})
    header = ["Layer", "Batch", "Kind", "Repeats", "Conv2D ms"]
    for rate in rates:
        header += [f"fused @{rate:g} ms (x)", f"pure TF @{rate:g} ms (x)"]
    rows = []
    for row in result["layers"]:
        ms = row["ms"]
        cells = [row["layer"], row["batch"], row["kind"], row["repeats"], f"{ms['Conv2D']:.2f}"]
        for rate in rates:
            for impl in ("fused", "reference"):
                value = ms[f"{impl}@{rate}"]
                cells.append(f"{value:.2f} ({ms['Conv2D'] / value:.2f}x)")
        rows.append(cells)
    lines += ["Medians of interleaved repeats; (x) = Conv2D time / this time (train step: "
              "forward + gradients of input and kernel).", ""]
    lines += _table(header, rows)
    lite = result["litert"]
    lines += ["", f"LiteRT, 1 thread, batch 1, {lite['layer']} at rate {lite['rate']}: "
              f"perforated export {lite['ms']['perforated']:.3f} ms "
              f"({', '.join(lite['ops']['perforated'])}; max |diff| vs Keras "
              f"{lite['max_abs_diff']['perforated']:.2g}) vs CONV_2D export "
              f"{lite['ms']['CONV_2D']:.3f} ms: "
              f"{lite['ms']['CONV_2D'] / lite['ms']['perforated']:.2f}x.", ""]
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
    lines += [f"Digits test error, both convolutions perforated, no fine-tuning (unperforated "
              f"{100 * accuracy['baseline_error']:.2f}%); nearest fill / zero fill:", ""]
    lines += _table(["Mask"] + [f"rate {r:g}" for r in acc_rates], acc_rows)
    lines += ["", f"![error vs rate]({result['picture']})", ""]
    goal_rows = [[g["name"], f"{g['measured']:.2f}x", g["goal"],
                  "met" if g["met"] else "**MISSED**", g.get("note", "")]
                 for g in result["goals"]]
    lines += _table(["Goal", "Measured", "Goal", "Result", "Note"], goal_rows)
    notes = result.get("notes", [])
    if notes:
        lines += [""] + [f"- {note}" for note in notes]
    return lines
