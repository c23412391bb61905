"""The TTA / GPS section of RESULTS.md (imports no TensorFlow: --report-only stays fast)."""

from _common import table


def pct(value):
    return f"{100 * value:.2f}%"


def _dee(metrics, curve):
    # Better than every ensemble on the curve: the DEE is only a lower bound.
    largest, best_curve = max(curve, key=int), min(curve.values())
    if metrics["calibrated_nll"] < best_curve:
        return f"> {largest}"
    return f"{metrics['dee']:.2f}"


def policy_rows(result):
    """The policies x (models, samples) table and the equal-compute table of one data set."""
    names = list(result["rows"][0]["policies"])
    header = (
        ["Models", "Samples"] + [f"{n}: acc / NLL / cNLL / DEE" for n in names] + ["Lowest cNLL"]
    )
    curve = result["settings"]["ensemble_curve"]
    rows = []
    for row in result["rows"]:
        seeds = max(m.get("seeds", 1) for m in row["policies"].values())
        samples = f"{row['samples']} (median of {seeds} seeds)" if seeds > 1 else row["samples"]
        cells = [row["models"], samples]
        for name in names:
            m = row["policies"][name]
            cells.append(
                f"{pct(m['accuracy'])} / {m['nll']:.4f} / {m['calibrated_nll']:.4f} / "
                f"{_dee(m, curve)}"
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
    return lines + [""] + setting_lines(result)


def setting_lines(result):
    """How the members, the RandAugment magnitude and the GPS policy came about."""
    settings, metta = result["settings"], result["metta"]
    curve = ", ".join(f"{k}: {v:.4f}" for k, v in settings["ensemble_curve"].items())
    lines = [
        f"- Data: {settings.get('train_images', '?')} training images, a stratified search "
        f"split of {settings.get('search_split', '?')}, {settings.get('test_images', '?')} "
        f"test images; {settings.get('members', '?')} members trained "
        f"{settings['epochs']} epochs with {settings.get('train_policy', 'shift+rotate')}.",
    ]
    by_epoch = settings.get("search_split_calibrated_nll_by_epoch")
    if by_epoch:
        lines.append(
            f"- Epochs chosen by {settings['epoch_choice']}: "
            + ", ".join(f"{k}: {v:.4f}" for k, v in by_epoch.items())
            + "."
        )
    lines += [
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
        f"{pct(metta['central'])}, mean embeddings ({metta.get('samples', 16)} "
        f"augmentations) {pct(metta['mean'])}.",
    ]
    return lines


def speed_lines(speed):
    if "median_per_augmentation_loop" in speed:
        baseline, label = (
            speed["median_per_augmentation_loop"],
            f"a loop with one batched call per augmentation over the {speed['images']} test images",
        )
    else:  # records before the fair baseline: one eager call per image and augmentation
        baseline, label = speed["median_python_loop"], "a Python loop of one call per image"
    lines = [
        f"- Speed ({speed['samples']} samples): TTAPredictor "
        f"{speed['median_batched']:.3f} ms per image, {label} "
        f"{baseline:.3f} ms per image ({baseline / speed['median_batched']:.1f}x)."
    ]
    parts = speed.get("parts_ms_per_image")
    if parts and "ratio_cap_free_model" in speed:
        lines.append(
            "- Where the time goes (ms per image, all samples, each part in one call): "
            f"augmentation eager {parts['augment_eager']:.3f}, traced "
            f"{parts['augment_graph']:.3f}; model calls eager {parts['model_eager']:.3f}, "
            f"traced {parts['model_graph']:.3f}. The predictor gains mostly on the model call; "
            "with free model calls its ratio to the loop would still be "
            f"{speed['ratio_cap_free_model']:.1f}x at most."
        )
    return lines


def section(result):
    """RESULTS.md lines of the tta benchmark."""
    data = result["settings"].get("data", "Digits")
    lines = [f"## {result['title']}", "", result["description"], "", f"### {data}", ""]
    lines += policy_rows(result)
    lines += speed_lines(result["speed"])
    cifar = result.get("cifar10")
    if cifar and "skipped" in cifar:
        lines += ["", "### CIFAR-10", "", f"Skipped: {cifar['skipped']}"]
    elif cifar:
        lines += ["", "### CIFAR-10", ""] + policy_rows(cifar)
    return lines
