"""RESULTS.md section of bench/distill.py (no TensorFlow import here)."""

from _common import table as _table

# Results written before the move to the MNIST sample kept the classification
# part under "digits", with a constant SGLD step size and no bootstrap.
_LEGACY_KEY = "digits"


def _classification_text(part):
    d = part["settings"]
    data = part.get("data", {"name": "digits", "test": 450})
    inputs = 784 if data["name"] == "MNIST sample" else 64
    if "cycles" not in d:
        return (
            f"Digits, 64-{d['hidden']}-10 MLP, Normal(0, {d['prior_variance']:g}) prior; "
            f"SGLD lr {d['lr']:g} at posterior temperature {d['temperature']:g}, "
            f"{d['epochs']} epochs ({d['burn_in_epochs']} burn-in), k = {part['k']} samples."
        )
    return (
        f"{data['name']} ({data.get('train', '?')} training / {data['test']} test images), "
        f"{inputs}-{d['hidden']}-10 MLPs. Single SGD model: lr {d['sgd_lr']:g}, momentum 0.9, "
        f"Normal(0, {d['sgd_prior_variance']:g}) prior, {d['sgd_epochs']} epochs. SGLD: "
        f"Normal(0, {d['prior_variance']:g}) prior, temperature {d['temperature']:g}, "
        f"cosine step size from {d['lr']:g} over {d['cycle_epochs']}-epoch cycles, "
        f"{d['cycles']} cycles ({d['burn_in_cycles']} burn-in), one sample per cycle end: "
        f"k = {part['k']}. Offline student: {d['distill_epochs']} epochs, each on "
        f"{d['distill_copies']} fresh copies of the training images shifted by up to "
        f"{d['max_shift']} px with noise sd {d['input_noise']:g}, T = "
        f"{d['distill_temperature']:g}, no labels. Online BDK student: input noise sd "
        f"{d['bdk_input_noise']:g}, the same chain. "
        + (
            "Settings chosen on a validation split of the training images. "
            if data["name"] == "MNIST sample"
            else ""
        )
        + "Inference: one compiled forward pass over the test images, median of "
        "interleaved repeats."
    )


def section(result):
    part = result.get("classification") or result[_LEGACY_KEY]
    diabetes = result["diabetes"]
    lines = [
        "## Bayesian dark knowledge (bench/distill.py)",
        "",
        _classification_text(part),
        "",
    ]
    rows = []
    for name, row in part["rows"].items():
        rows.append(
            [
                name,
                f"{100 * row['accuracy']:.2f}%",
                f"{row['nll']:.4f}",
                f"{row['ece']:.4f}",
                f"{row['seconds_train']:.0f} s",
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
            "Training",
            "Inference",
            "Time / ensemble",
            "Multiply-adds / ensemble",
        ],
        rows,
    )
    intervals = part.get("nll_ratio_intervals")
    if intervals:
        lines += [
            "",
            "NLL ratios with 90% paired-bootstrap intervals over the test images: "
            + "; ".join(f"{key} {low:.3f}-{high:.3f}" for key, (low, high) in intervals.items())
            + ".",
        ]
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
