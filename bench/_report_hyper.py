"""RESULTS.md section of bench/hyper.py (imports no TensorFlow)."""

from _common import table as _table


def _pct(value):
    return f"{100 * value:.1f}%"


def _ms(entry, models=None):
    """Mean ms per training step (of one model when ``models`` are summed), or a dash."""
    if "ms_per_step" not in entry:
        return "-"
    return f"{entry['ms_per_step']:.1f}" + (f" (each of {models})" if models else "")


def section(result):
    settings = result["settings"]
    lines = [
        f"## {result['title']}",
        "",
        result["description"],
        "",
        f"Settings: {settings['net']}, {settings['optimizer']}, batch "
        f"{settings['batch_size']}, {settings['epochs']} epochs, prior variance "
        f"{settings['prior_variance']}, lambda range {settings['lambda_range']}, "
        f"{settings['lambda_draws']} draws per batch, low-rank: rank "
        f"{settings['lowrank_rank']}, {settings['lowrank_hidden_units']} hidden ReLU units; "
        f"{settings['repeats']} repeat(s); {settings.get('train_examples', '?')} training and "
        f"{settings.get('test_examples', '?')} test images"
        + (f" ({settings['data']})." if settings.get("data") else "."),
        "",
    ]
    if settings.get("validation"):
        lines += [f"Learning rate and epochs: {settings['validation']}", ""]
    fractions = settings["fractions"]
    header = ["Lambda", "Model"] + [f"{f:.0%} removed" for f in fractions] + ["Curve mean"]
    rows = []
    for i, lam in enumerate(settings["lambdas"]):
        entries = [("separate", result["separate"]["curves"][i])]
        entries += [
            (f"{kind} hyper", result["hyper"][kind]["curves"][i]) for kind in ("linear", "lowrank")
        ]
        for label, curve in entries:
            rows.append(
                [f"{lam:g}", label] + [_pct(a) for a in curve] + [_pct(sum(curve) / len(curve))]
            )
    lines += _table(header, rows)
    sep = result["separate"]
    lines += ["", "Training time (median over repeats, model.fit wall time incl. tracing):", ""]
    time_rows = [
        [
            "5 separate models",
            f"{sep['seconds_total']:.1f} s",
            "1.00",
            _ms(sep, len(settings["lambdas"])),
        ]
    ]
    for kind in ("linear", "lowrank"):
        hyper = result["hyper"][kind]
        seconds = hyper["seconds"]
        time_rows.append(
            [
                f"{kind} hypernetwork",
                f"{seconds:.1f} s",
                f"{seconds / sep['seconds_total']:.2f}",
                _ms(hyper),
            ]
        )
    lines += _table(["Training", "Time", "Ratio to separate", "ms per step"], time_rows)
    lines += [
        "",
        "Per-lambda separate training times: "
        + ", ".join(
            f"{lam:g}: {s:.1f} s" for lam, s in zip(settings["lambdas"], sep["seconds_per_lambda"])
        )
        + ".",
    ]
    if result.get("plot"):
        lines += ["", f"![accuracy vs removed weights]({result['plot']})"]
    return lines
