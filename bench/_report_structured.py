"""RESULTS.md section of bench/structured.py (no TensorFlow import)."""

from _common import table as _table

_NAMES = {
    "sbp": "SBP (structured)",
    "sparse_vd": "Sparse VD",
    "sparse_vd_sbp": "Sparse VD + SBP",
    "tfmot": "TFMOT magnitude pruning",
}


def _pct(value):
    return f"{100 * value:.2f}%"


def _units(units_kept):
    return " - ".join(f"{kept:g}/{total}" for kept, total in units_kept.values())


def _epochs(epochs):
    if isinstance(epochs, dict):  # per net
        return ", ".join(f"{net} {n}" for net, n in epochs.items())
    return f"{epochs}"


def section(result):
    settings = result["settings"]
    lines = [
        f"## {result['title']}",
        "",
        result["description"],
        "",
        f"Rule: {result['rule']}",
        "",
        f"Recipe: dense pretraining {settings['pretrain_epochs']} epochs, then "
        f"{_epochs(settings['finetune_epochs'])} fine-tuning epochs (Adam, lr "
        f"{settings['learning_rate']:g}, batch {settings['batch_size']}, KL warmed up over "
        f"epochs [0, {settings['warmup_end']}), gate learning-rate multiplier "
        f"{settings['learning_rate_multiplier']:g}). Latency: median of "
        f"{settings['latency_rounds']} interleaved rounds of {settings['latency_invokes']} "
        f"invokes, batch {settings['batch']}, {settings['threads']} thread, "
        f"{settings['runtime']}.",
        "",
    ]
    rows = []
    for net in result["nets"].values():
        s = net["summary"]
        rows.append(
            [
                net["title"],
                "dense export",
                f"{s['seeds']}",
                "1.0x",
                "",
                f"{1000 * s['dense_latency_ms']:.1f}",
                "1.00x",
                f"{s['dense_size_bytes']:,.0f}",
                _pct(s["dense_error"]),
                "",
                "",
            ]
        )
        for key, v in s["variants"].items():
            rows.append(
                [
                    net["title"],
                    _NAMES[key],
                    f"{v['seeds']}",
                    f"{v['flops_ratio']:.2f}x",
                    _units(v["units_kept"]),
                    f"{1000 * v['latency_ms']:.1f}",
                    f"{v['speedup']:.2f}x",
                    f"{v['size_bytes']:,.0f}",
                    _pct(v["test_error"]),
                    _pct(v["file_test_error"]),
                    f"{v['seeds_within_budget']}/{v['seeds']}",
                ]
            )
    lines += _table(
        [
            "Net",
            "Model",
            "Seeds",
            "Fewer FLOPs than dense",
            "Units kept per layer (file)",
            "Latency us",
            "Faster than dense",
            "File bytes",
            "Test error (Keras)",
            "Test error (LiteRT)",
            "Seeds within budget",
        ],
        rows,
    )
    lines += [
        "",
        "Medians over the seeds (the dense row over all of them; each model's ratios "
        "against the dense export of its own seed, timed in the same rounds). TFMOT "
        "prunes to the sparsity Sparse VD reached on the same seed; its file keeps "
        "dense kernels (zeros included), so it computes every multiply-add of the "
        "dense net.",
        "",
    ]
    tfmot = [
        (net["title"], r["seed"], r["sparse_vd"]["weight_compression"], r["tfmot"])
        for net in result["nets"].values()
        for r in net["per_seed"]
        if "tfmot" in r
    ]
    if tfmot:
        lines += ["TFMOT runs (Keras 2 subprocess):", ""]
        lines += _table(
            [
                "Net",
                "Seed",
                "Sparse VD weight compression",
                "TFMOT sparsity reached",
                "TFMOT test error",
                "Fine-tuning s",
            ],
            [
                [
                    title,
                    seed,
                    f"{svd:.1f}x",
                    f"{t['sparsity_reached']:.4f}",
                    _pct(t["test_error"]),
                    f"{t['seconds']:.0f}",
                ]
                for title, seed, svd, t in tfmot
            ],
        )
        lines += [""]
    timing = result.get("timing_seconds")
    if timing:
        lines += [
            "Wall time of the run (s): "
            + ", ".join(f"{k.replace('_seconds', '')} {v:.0f}" for k, v in timing.items())
            + ".",
            "",
        ]
    lines += [
        "Per seed, SBP:",
        "",
    ]
    rows = []
    for net in result["nets"].values():
        for r in net["per_seed"]:
            sbp = r["sbp"]
            rows.append(
                [
                    net["title"],
                    r["seed"],
                    _pct(r["dense_error"]),
                    _pct(sbp["test_error"]),
                    _pct(r["budget"]),
                    f"{sbp['flops_ratio']:.2f}x",
                    " - ".join(f"{x['units_kept']}/{x['units']}" for x in sbp["layers"]),
                    f"{sbp['speedup']:.2f}x",
                    f"{sbp['seconds']:.0f}",
                ]
            )
    lines += _table(
        [
            "Net",
            "Seed",
            "Dense error",
            "SBP error",
            "Budget",
            "Fewer FLOPs",
            "Units kept",
            "Faster",
            "Fine-tuning s",
        ],
        rows,
    )
    lines += ["", "Per-layer FLOPs of SBP (first seed), dense -> kept:", ""]
    rows = []
    for net in result["nets"].values():
        sbp = net["per_seed"][0]["sbp"]
        for layer in sbp["layers"]:
            rows.append(
                [
                    net["title"],
                    layer["layer"],
                    f"{layer['units_kept']}/{layer['units']}",
                    f"{layer['flops']:,}",
                    f"{layer['flops_kept']:,}",
                ]
            )
    lines += _table(["Net", "Layer", "Units kept", "FLOPs dense", "FLOPs kept"], rows)
    lines += ["", "Units kept during SBP fine-tuning (first seed), every 5th epoch:", ""]
    for net in result["nets"].values():
        trajectory = net["per_seed"][0]["sbp"]["units_kept_trajectory"]
        points = [
            f"epoch {i + 1}: " + ", ".join(f"{k} {v}" for k, v in kept.items())
            for i, kept in enumerate(trajectory)
            if (i + 1) % 5 == 0 or i + 1 == len(trajectory)
        ]
        lines.append(f"- {net['title']}: " + "; ".join(points))
    return lines
