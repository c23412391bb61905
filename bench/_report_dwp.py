"""RESULTS.md section of bench/dwp.py (no TensorFlow import)."""

import statistics

from _common import table as _table


def _pct(values):
    """The median and, over several seeds, the range: ``93.1% (91.0-94.2)``."""
    median = statistics.median(values)
    if len(values) == 1:
        return f"{100 * median:.1f}%"
    return f"{100 * median:.1f}% ({100 * min(values):.1f}-{100 * max(values):.1f})"


def section(result):
    settings = result["settings"]
    lines = [
        f"## {result['title']}",
        "",
        result["description"],
        "",
        f"Source nets: {settings['sources']} x {settings['source_epochs']} epochs, test "
        "accuracy on digits 0-4 "
        f"{100 * statistics.mean(result['source_test_accuracy']):.1f}%; "
        f"KernelVAE on {result['kernel_slices']} slices, {settings['vae_epochs']} epochs, "
        f"negative ELBO {result['vae_negative_elbo']:.2f} per slice; weight std of real "
        f"kernels {result['kernel_std']:.3f}, of VAE samples (decoder means) "
        f"{result['vae_sample_std']:.3f}. Target nets: {settings['steps']} steps of "
        "batch 32 (Adam 2e-3).",
        "",
        "Test accuracy on digits 5-9 (median over seeds, min-max in brackets), "
        "variational net by prior "
        "on the conv kernels:",
        "",
    ]
    sizes = settings["train_sizes"]
    rows = []
    for name, by_size in result["priors"].items():
        rows.append([name] + [_pct(by_size[str(n)]) for n in sizes])
    lines += _table(["Prior"] + [f"{n} images" for n in sizes], rows)
    lines += ["", "Plain net by initialization, all target training images, batch 32:", ""]
    epochs = settings["init_epochs"]
    rows = [
        [f"{name} init"] + [_pct(curve[str(e)]) for e in epochs]
        for name, curve in result["inits"].items()
    ]
    lines += _table(["Initialization"] + [f"{e} epoch{'s' if e > 1 else ''}" for e in epochs], rows)
    lines += ["", f"![DWP benchmark]({result['plot']})"]
    return lines
