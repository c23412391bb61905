"""RESULTS.md section of bench/compression.py (no TensorFlow import here)."""

from _common import table as _table


def _pct(value):
    return "-" if value is None else f"{100 * value:.2f}%"


def _x(value):
    return "-" if value is None else f"{value:.1f}x"


def _epochs(settings):
    """Fine-tuning epochs, with the per-net overrides of newer records."""
    text = str(settings["finetune_epochs"])
    overrides = [
        f"{values['finetune_epochs']} for {net}"
        for net, values in settings.get("per_net", {}).items()
        if "finetune_epochs" in values
    ]
    return f"{text} ({', '.join(overrides)})" if overrides else text


def _schedule(settings):
    schedule = settings.get("lr_schedule")
    return f", {schedule}" if schedule else ""


def _search(settings):
    if "tfmot_search" in settings:
        return settings["tfmot_search"]
    return (
        f"a sweep stops after {settings['stop_after_misses']} runs in a row over both the "
        "budget and Sparse VD's own error"
    )


def _verdict(goal):
    return "met" if goal["met"] else "**MISSED**"


def _pick(chosen):
    if chosen.get("compression") is None:
        return "not measured"
    if chosen["scheme"] == "none":
        return "dense (none within budget)"
    scheme = "global" if chosen["scheme"] == "global" else "per layer"
    return f"{chosen['compression']:.1f}x ({scheme}, {chosen['label']})"


def _at_top_of_sweep(tfmot):
    """Whether TFMOT's pick is the top point of its sweep (nothing more compressed was tried)."""
    chosen = tfmot["chosen"]
    runs = [r for r in tfmot["sweep"] if r["scheme"] == chosen.get("scheme")]
    if not runs:
        return False
    top = max(runs, key=lambda r: r["target_compression"])
    return top["label"] == chosen["label"] and "skipped" not in top


def section(result):
    settings = result["settings"]
    goals = {g["name"]: g for g in result["goals"]}
    lines = [
        f"## {result['title']}",
        "",
        result["description"],
        "",
        f"Rule: {result['rule']}",
        "",
        f"Recipe: dense pretraining {settings['pretrain_epochs']} epochs; both methods then "
        f"fine-tune {_epochs(settings)} epochs (Adam, lr "
        f"{settings['learning_rate']:g}{_schedule(settings)}, batch {settings['batch_size']}); "
        "Sparse VD: "
        f"{settings['sparse_vd_recipe']}; TFMOT: {settings['tfmot_schedule']}; global "
        f"target sparsities {', '.join(f'{s:g}' for s in settings['sparsities'])}; per "
        f"layer: {settings['tfmot_per_layer']}, fractions "
        f"{', '.join(f'1/{1 / f:g}' for f in sorted(settings['per_layer_fractions']))}; "
        f"{_search(settings)}.",
    ]
    if settings.get("recipe_note"):
        lines += ["", f"Recipe choice: {settings['recipe_note']}"]
    lines += [""]
    rows = []
    for net in result["nets"].values():
        s = net["summary"]
        goal = goals[f"{net['title']}: compression within the error budget"]
        rows.append(
            [
                net["title"],
                _pct(s["dense_error"]),
                _pct(s["budget"]),
                _x(s["sparse_vd_compression"]),
                _pct(s["sparse_vd_error"]),
                f"{s['sparse_vd_seeds_within_budget']}/{s['seeds']}",
                _x(s["tfmot_compression"]),
                f"{_x(s['tfmot_global_compression'])} / {_x(s['tfmot_per_layer_compression'])}",
                _pct(s["tfmot_error"]),
                f"{goal['ratio']:.2f}",
                goal["goal"],
                _verdict(goal),
                _x(s["tfmot_compression_at_sparse_vd_error"]),
                f"{s['paper_compression']:g}x",
            ]
        )
    lines += _table(
        [
            "Net",
            "Dense error",
            "Budget",
            "Sparse VD compression",
            "Sparse VD error",
            "Sparse VD seeds within budget",
            "TFMOT compression",
            "TFMOT global / per layer",
            "TFMOT error",
            "Ratio",
            "Goal",
            "Result",
            "TFMOT within Sparse VD's own error",
            "Paper, full MNIST",
        ],
        rows,
    )
    lines += [
        "",
        f"Medians over {result['repeats']} seeds on {result.get('data_description', 'digits')}. "
        "The paper's figures come from 60,000 training images; with fewer images the "
        "KL term weighs more against the likelihood. Per seed:",
        "",
    ]
    rows = []
    for net in result["nets"].values():
        for r in net["per_seed"]:
            layers = r["sparse_vd"]["report"]["layers"]
            rows.append(
                [
                    net["title"],
                    r["seed"],
                    _pct(r["dense_error"]),
                    _pct(r["budget"]),
                    _x(r["sparse_vd"]["compression"]),
                    ", ".join(f"{layer['compression']:.0f}x" for layer in layers),
                    _pct(r["sparse_vd"]["test_error"]),
                    _pct(r["sparse_vd"]["train_error"]),
                    _pick(r["tfmot"]["chosen"]),
                    _pct(r["tfmot"]["chosen"]["test_error"]),
                    _x(r["tfmot"]["at_sparse_vd_error"]["compression"]),
                ]
            )
    lines += _table(
        [
            "Net",
            "Seed",
            "Dense error",
            "Budget",
            "Sparse VD compression",
            "Sparse VD per layer",
            "Sparse VD test error",
            "Sparse VD train error",
            "TFMOT pick",
            "TFMOT error",
            "TFMOT within Sparse VD's error",
        ],
        rows,
    )
    capped = [
        f"{net['title']} seed {r['seed']}"
        for net in result["nets"].values()
        for r in net["per_seed"]
        if _at_top_of_sweep(r["tfmot"])
    ]
    if capped:
        lines += [
            "",
            "TFMOT's pick is the highest compression its sweep tried for "
            + ", ".join(capped)
            + ": its best within the budget may lie higher, so there the TFMOT figure is "
            "a lower bound and the ratio an upper bound.",
        ]
    lines += ["", "TFMOT sweeps (medians over the seeds that ran the point):", ""]
    rows = []
    for net in result["nets"].values():
        for point in net["tfmot_sweep_medians"]:
            scheme = "global" if point["scheme"] == "global" else "per layer"
            rows.append(
                [
                    net["title"],
                    scheme,
                    point["label"],
                    _x(point["compression"]),
                    _pct(point["test_error"]),
                    f"{point['seeds_run']}/{result['repeats']}",
                ]
            )
    lines += _table(["Net", "Sweep", "Target", "Compression", "Test error", "Seeds run"], rows)
    return lines
