"""RESULTS.md section of bench/dwp.py (no TensorFlow import)."""

import statistics

from _common import table as _table


def _pct(values):
    """The median and, over several seeds, the range: ``93.1% (91.0-94.2)``."""
    median = statistics.median(values)
    if len(values) == 1:
        return f"{100 * median:.1f}%"
    return f"{100 * median:.1f}% ({100 * min(values):.1f}-{100 * max(values):.1f})"


def _layers_line(result):
    """The per-layer KernelVAE figures, or the single VAE of older (digits) records."""
    if "layers" not in result:
        return (
            f"KernelVAE on {result['kernel_slices']} slices, negative ELBO "
            f"{result['vae_negative_elbo']:.2f} per slice; weight std of real kernels "
            f"{result['kernel_std']:.3f}, of VAE samples (decoder means) "
            f"{result['vae_sample_std']:.3f}."
        )
    parts = [
        f"{layer}: {s['kernel_slices']} slices, negative ELBO {s['vae_negative_elbo']:.2f} "
        f"per slice, weight std of real kernels {s['kernel_std']:.3f}, of VAE samples "
        f"(decoder means) {s['vae_sample_std']:.3f}"
        for layer, s in result["layers"].items()
    ]
    return "KernelVAE per layer (" + "; ".join(parts) + ")."


def _steps(settings):
    steps = settings["steps"]
    if isinstance(steps, dict):
        return ", ".join(f"{count} steps for {n} images" for n, count in steps.items())
    return f"{steps} steps"


def section(result):
    settings = result["settings"]
    data = result.get("data", {})
    source = data.get("source", "the source task")
    target = data.get("target", "the target task")
    lines = [
        f"## {result['title']}",
        "",
        result["description"],
        "",
        f"Source: {source}; {settings['sources']} net(s) x {settings['source_epochs']} "
        "epoch(s), "
        f"test accuracy {100 * statistics.mean(result['source_test_accuracy']):.1f}% "
        f"(mean). {_layers_line(result)} Target: {target}; variational nets trained "
        f"{_steps(settings)}, batch 32 (Adam 2e-3).",
        "",
        "Test accuracy (median over seeds, min-max in brackets), variational net by prior "
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
    timings = result.get("timings")
    if timings:
        parts = [f"{name.replace('_', ' ')} {seconds:.0f} s" for name, seconds in timings.items()]
        lines += ["", f"Run time: {', '.join(parts)}; {result['seconds']:.0f} s in all."]
    lines += ["", f"![DWP benchmark]({result['plot']})"]
    return lines
