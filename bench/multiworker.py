"""MultiWorkerMirroredStrategy, two worker processes on 127.0.0.1, against one device.

A Sparse VD net (dense, and one with a Sparse VD convolution), a
probabilistic-ACT ResNet (relaxed halting samples, and the deterministic
threshold mode) and a linear lambda-hypernetwork (2 lambda draws per batch)
train on the first 256 digits, global batch 64, SGD with momentum, in three
processes at once: the single-device reference and the two workers of a
TF_CONFIG cluster (tests/reliability/multiworker_worker.py). Every model
trains in its ordinary stochastic mode; each replica draws the noise of the
global batch and keeps its rows (``tfpriors.distributed.batch_rows``), and
the ResNet's batch normalization uses global batch statistics. The KL terms
are divided by the global training-set size.

Reported per model: the largest difference between the chief's final
weights and the single-device ones (absolute, and relative to each tensor's
largest magnitude), next to how far training moved the weights; the largest
difference of the per-batch losses ``fit`` logged; the KL / ponder term of
the final model in both runs; the wall time of ``fit``. Two references
frame these figures: a control run in which every replica draws noise for
its own slice only (the behaviour before ``batch_rows``) shows the size of
difference the checks catch, and a single-device run whose initial weights
moved by one float32 ulp shows how far training amplifies rounding alone
(the floor for two runs that sum in different orders). Goals, over 16
steps: losses within 1e-5 relative, weights within 1e-2 of each tensor's
largest magnitude (the 4-step test asks for 1e-4).

    python bench/multiworker.py [--quick]
"""

import argparse
import importlib.util
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

NAME = "multiworker"
_WORKER = os.path.join(
    os.path.dirname(_common.BENCH_DIR), "tests", "reliability", "multiworker_worker.py"
)
WEIGHT_RTOL, LOSS_RTOL = 1e-2, 1e-5
STOCHASTIC = ["sparse_vd", "pact_relaxed", "hyper"]


def _worker_module():
    spec = importlib.util.spec_from_file_location("multiworker_worker", _WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _figures(worker, outputs, models):
    import numpy as np

    single, chief = np.load(outputs["single"]), np.load(outputs["worker0"])
    return {model: worker.compare(single, chief, model) for model in models}


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 epoch, no control (smoke run)")
    parser.add_argument("--epochs", type=int, default=None)
    args = parser.parse_args()
    epochs = args.epochs or (1 if args.quick else 4)
    worker = _worker_module()
    models = sorted(worker.MODELS)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tfpriors-multiworker-") as tmp:
        print(
            f"[{NAME}] single device + 2 workers, {len(models)} models, {epochs} epochs", flush=True
        )
        run_start = time.perf_counter()
        figures = _figures(worker, worker.run_all(tmp, models, epochs=epochs, timeout=1800), models)
        run_seconds = time.perf_counter() - run_start
        control = floor = None
        if not args.quick:
            print(f"[{NAME}] rounding floor: initial weights moved by one ulp", flush=True)
            import numpy as np

            perturbed = np.load(
                worker.run_single(tmp, models, epochs=epochs, timeout=1800, perturb_init=True)
            )
            single = np.load(os.path.join(tmp, "single.npz"))
            floor = {model: worker.compare(single, perturbed, model) for model in models}
            print(f"[{NAME}] control: noise drawn per replica slice", flush=True)
            control_dir = os.path.join(tmp, "control")
            os.makedirs(control_dir)
            control = _figures(
                worker,
                worker.run_all(
                    control_dir, STOCHASTIC, epochs=epochs, timeout=1800, per_replica_noise=True
                ),
                STOCHASTIC,
            )

    result = _common.result_header(
        NAME,
        "Multi-worker training equals single-device training (2 workers on loopback)",
        __doc__,
        args.quick,
    )
    result["settings"] = {
        "workers": 2,
        "replicas_per_worker": 1,
        "device": "CPU, 1 intra-op thread per process",
        "examples": worker.EXAMPLES,
        "global_batch": worker.BATCH,
        "per_replica_batch": worker.BATCH // 2,
        "epochs": epochs,
        "steps": epochs * worker.EXAMPLES // worker.BATCH,
        "optimizer": "SGD momentum 0.9 (lr 0.05; hypernetwork 0.01)",
        "op_determinism": True,
        "weight_rtol": WEIGHT_RTOL,
        "loss_rtol": LOSS_RTOL,
        "test_weight_rtol_4_steps": 1e-4,
        "compared": "chief (worker 0) vs single device; every model in its stochastic "
        "training mode with global-batch noise, except pact_threshold "
        "(deterministic halting)",
    }
    result["models"] = figures
    result["control_per_replica_noise"] = control
    result["rounding_floor_one_ulp"] = floor
    result["run_seconds"] = run_seconds
    result["goals"] = [
        _common.goal_row(
            f"multiworker: {model} max relative weight difference",
            1e6 * row["max_rel_weight_diff"],
            "ppm",
            "tolerance",
            1e6 * WEIGHT_RTOL,
            "<=",
            1.0,
            condition=row["max_rel_loss_diff"] <= LOSS_RTOL,
            note=f"loss difference {row['max_rel_loss_diff']:.1e} relative "
            f"(tolerance {LOSS_RTOL:g})",
        )
        for model, row in figures.items()
    ]
    result["seconds"] = time.perf_counter() - started
    _common.save_result(NAME, args.quick, result)


if __name__ == "__main__":
    sys.exit(main())
