"""RESULTS.md section of bench/distill.py (no TensorFlow import here)."""

from _common import table as _table


def section(result):
    digits, diabetes = result["digits"], result["diabetes"]
    d = digits["settings"]
    lines = [
        "## Bayesian dark knowledge (bench/distill.py)",
        "",
        f"Digits, 64-{d['hidden']}-10 MLP, Normal(0, {d['prior_variance']:g}) prior; "
        f"SGLD lr {d['lr']:g} at posterior temperature {d['temperature']:g}, "
        f"{d['epochs']} epochs ({d['burn_in_epochs']} burn-in), k = {digits['k']} "
        f"samples. Offline student: {d['distill_epochs']} epochs on "
        f"{d['distill_copies']} noisy copies (sd {d['input_noise']:g}) of the training "
        f"images, T = {d['distill_temperature']:g}, no labels. Online BDK student: "
        f"input noise sd {d['input_noise']:g}, {d['bdk_burn_in_epochs']} burn-in epochs. "
        "Inference: one compiled forward pass over the 450 test images, "
        "median of interleaved repeats (shared CPU).",
        "",
    ]
    rows = []
    for name, row in digits["rows"].items():
        rows.append(
            [
                name,
                f"{100 * row['accuracy']:.2f}%",
                f"{row['nll']:.4f}",
                f"{row['ece']:.4f}",
                f"{row['inference_ms']:.2f} ms",
                f"{row['inference_ratio_vs_ensemble']:.3f}",
                f"{row['cost_ratio_vs_ensemble']:.3f}",
            ]
        )
    lines += _table(
        [
            "Model",
            "Accuracy",
            "NLL",
            "ECE",
            "Inference",
            "Time / ensemble",
            "Multiply-adds / ensemble",
        ],
        rows,
    )
    r = diabetes["settings"]
    lines += [
        "",
        f"Diabetes regression (scikit-learn, 80/20 split), 10-{r['hidden']}-2 MLP "
        f"(mean, log variance); SGLD lr {r['lr']:g}, {r['epochs']} epochs, "
        f"k = {diabetes['k']}. RMSE and NLL in the target's units.",
        "",
    ]
    rows = [
        [name, f"{row['rmse']:.3f}", f"{row['nll']:.4f}"] for name, row in diabetes["rows"].items()
    ]
    lines += _table(["Model", "RMSE", "NLL"], rows)
    return lines + [""]
