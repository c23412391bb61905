"""RESULTS.md section of bench/multiworker.py (imports no TensorFlow)."""

from _common import table as _table


def _rows(figures):
    rows = []
    for model, row in figures.items():
        rows.append(
            [
                model,
                f"{row['max_abs_weight_diff']:.1e}",
                f"{row['max_rel_weight_diff']:.1e}",
                f"{row['max_weight_change']:.2g}",
                f"{row['max_rel_loss_diff']:.1e}",
                f"{row['regularizer_single']:.4g} / {row['regularizer_multiworker']:.4g}",
                f"{row['seconds_single']:.1f} / {row['seconds_multiworker']:.1f}",
            ]
        )
    return rows


def section(result):
    settings = result["settings"]
    lines = [
        f"## {result['title']}",
        "",
        result["description"],
        "",
        f"Settings: {settings['workers']} workers x {settings['replicas_per_worker']} "
        f"replica ({settings['device']}), {settings['examples']} examples, global batch "
        f"{settings['global_batch']} ({settings['per_replica_batch']} per replica), "
        f"{settings['steps']} steps, {settings['optimizer']}; tolerances: weights "
        f"{settings['weight_rtol']:g} of each tensor's largest magnitude, losses "
        f"{settings['loss_rtol']:g} relative. Compared: {settings['compared']}.",
        "",
    ]
    header = [
        "Model",
        "Max abs weight diff",
        "Max rel weight diff",
        "Max weight change",
        "Max rel loss diff",
        "KL / ponder term (1 device / 2 workers)",
        "fit seconds (1 device / 2 workers)",
    ]
    lines += _table(header, _rows(result["models"]))
    control = result.get("control_per_replica_noise")
    if control:
        lines += ["", "Control, noise drawn per replica slice (what the checks must catch):", ""]
        lines += _table(header, _rows(control))
    floor = result.get("rounding_floor_one_ulp")
    if floor:
        lines += [
            "",
            "Rounding floor, single device with every initial weight moved by one "
            "float32 ulp, against the unmoved run:",
            "",
        ]
        lines += _table(header, _rows(floor))
    lines += ["", f"Wall time of the three processes together: {result['run_seconds']:.0f} s."]
    return lines
