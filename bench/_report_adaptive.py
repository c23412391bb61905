"""Markdown section of bench/adaptive.py's result (no TensorFlow import here)."""


def _pct(value):
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _ms(value):
    return "—" if value is None else f"{value:.3f}"


def _rows_table(rows):
    lines = [
        "| model | accuracy | FLOPs vs plain | mean units per block | "
        "ms/image batch 1 | ms/image batch 32 |",
        "| --- | ---: | ---: | --- | ---: | ---: |",
    ]
    for row in rows:
        units = ", ".join(f"{v:.2f}" for v in row["mean_units"].values()) or "all"
        lines.append(
            f"| {row['name']} | {_pct(row['accuracy'])} | {_pct(row['flops_ratio'])} | "
            f"{units} | {_ms(row.get('ms_per_image_batch1'))} | "
            f"{_ms(row.get('ms_per_image_batch32'))} |"
        )
    return lines


def section(result):
    lines = [f"## {result['title']}", "", result["description"], ""]
    settings = result["settings"]
    lines += [
        f"ResNet {settings['arch']}, {settings['epochs']} epochs, batch "
        f"{settings['batch_size']}, {settings['optimizer']}; timing: "
        f"{settings['timing']} ({settings['repeats']} repeats).",
        "",
    ]
    lines += _rows_table(result["rows"])
    ref, cifar = result["paper_reference"], result["cifar10"]
    lines += [
        "",
        f"Paper reference: {ref['model']} on {ref['dataset']}: "
        f"{_pct(ref['flops_ratio'])} of the dense FLOPs at {_pct(ref['accuracy'])} "
        "accuracy.",
    ]
    digits = result.get("digits")
    if isinstance(digits, dict):
        lines += [
            "",
            f"8x8 digits (ResNet {digits['arch']}, {digits['train_images']} training "
            f"/ {digits['test_images']} test images; no goals: 8x8, 4x4 and 2x2 "
            "maps leave no spatial work to skip):",
            "",
        ]
        lines += _rows_table(digits["rows"])
    if isinstance(cifar, dict):
        lines += [
            "",
            f"CIFAR-10 (ResNet {cifar['arch']}, {cifar['train_images']} training / "
            f"{cifar['test_images']} test images):",
            "",
        ]
        lines += _rows_table(cifar["rows"])
    else:
        lines += ["", f"CIFAR-10 here: {cifar}."]
    lines += [""]
    lines += [
        "| goal | measured | baseline | ratio | goal | met | note |",
        "| --- | ---: | ---: | ---: | --- | --- | --- |",
    ]
    for goal in result["goals"]:
        lines.append(
            f"| {goal['name']} | {goal['measured']:.4g} {goal['unit']} | "
            f"{goal['baseline']:.4g} | {goal['ratio']:.3f} | {goal['goal']} | "
            f"{'yes' if goal['met'] else 'no'} | {goal['note']} |"
        )
    lines += ["", f"FLOPs vs accuracy: `bench/{result['plot']}`", ""]
    return lines
