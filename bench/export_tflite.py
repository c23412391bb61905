"""TFLite export: file size and LiteRT latency against the dense export and TFMOT's path.

For LeNet-300-100 and the Caffe LeNet-5 on the MNIST sample (``--data
digits``: scikit-learn's digits; seed 0, the recipe of bench/compression.py:
dense pretraining, ``tfpriors.sparsify``, fine-tuning with the KL warmed up),
three float32 files are measured side by side:

1. dense: the dense net as trained, exported as it is;
2. tfpriors: ``tfpriors.export.to_tflite`` of the Sparse VD net (pruned,
   dead units removed, sparse storage where it pays); also its int8 variant;
3. TFMOT: the same dense net pruned by magnitude to TFMOT's pick for seed 0
   in bench/compression.py on the same data (global or per-layer target
   sparsities; 0.9 for every layer when that result is absent),
   ``strip_pruning``, converted with EXPERIMENTAL_SPARSITY, in a Keras 2
   subprocess.

Latency: one invoke of a batch of 1 on LiteRT with XNNPACK and 1 thread;
each figure is the median of rounds that alternate between the files (each
round itself the median of many invokes), so drift of the machine hits all
files alike. Top-1: test accuracy of each file, run on LiteRT.

Goal: tfpriors at least 5x smaller and 2x faster than the dense export, with
the file's test accuracy at most 0.5 points below the dense export's (the
error budget of bench/compression.py) and within 0.5 points of the Keras
Sparse VD model it was exported from (the export itself loses nothing). Every
file's accuracy is listed with its difference from the dense export's.

    python bench/export_tflite.py [--quick] [--data mnist|digits]
"""

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import tfpriors  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402
import compression  # noqa: E402

from tfpriors_mobile import load_interpreter, run_batch  # noqa: E402

SEED = 0
SIZE_GOAL = 5.0
SPEED_GOAL = 2.0
ACCURACY_BUDGET = 0.005


def tfmot_sparsity(net, data):
    """TFMOT's pick for seed 0 in bench/compression.py on ``data``: a sparsity or one per layer.

    0.9 for the whole model when there is no such result (another data set,
    or no pruned model within the budget).
    """
    path = os.path.join(_common.RESULTS_DIR, "compression.json")
    if os.path.exists(path):
        result = _common.read_json(path)
        if result.get("data", "digits") == data:
            for row in result["nets"][net]["per_seed"]:
                chosen = row["tfmot"]["chosen"]
                if row["seed"] == SEED and "sparsity" in chosen:
                    return chosen["sparsity"]
    return 0.9


def accuracy(interpreter, x, y):
    return float(np.mean(run_batch(interpreter, x).argmax(1) == y))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--data",
        choices=sorted(compression.DATA),
        default=None,
        help="the MNIST sample (default) or scikit-learn's digits (--quick's default)",
    )
    args = parser.parse_args()
    data = args.data or ("digits" if args.quick else "mnist")
    settings = compression.QUICK if args.quick else compression.FULL[data]
    rounds, invokes = (3, 200) if args.quick else (9, 2000)
    start = time.perf_counter()
    workdir = tempfile.mkdtemp(prefix="tfpriors-export-bench-")

    trained, arrays, tfmot_job = {}, {}, {}
    titles = {}
    for net in compression.NETS:
        (x_train, y_train), (x_test, y_test) = compression.load(net, data)
        titles[net] = compression.net_title(net, x_train)
        dense = compression.train_dense(net, x_train, y_train, settings, SEED)
        sparse = compression.train_sparse_vd(dense, x_train, y_train, settings, net=net)
        trained[net] = (dense, sparse, x_train, x_test, y_test)
        weights = dense.get_weights()
        arrays.update(
            {
                f"{net}/x_train": x_train,
                f"{net}/y_train": y_train,
                f"{net}/x_test": x_test,
                f"{net}/y_test": y_test,
                f"{net}/count": np.array(len(weights)),
            }
        )
        arrays.update({f"{net}/w{i}": w for i, w in enumerate(weights)})
        tfmot_job[net] = {
            "sparsity": tfmot_sparsity(net, data),
            "path": os.path.join(workdir, f"{net}_tfmot.tflite"),
        }
        print(f"[export_tflite] trained {net}", flush=True)

    job = {
        "nets": tfmot_job,
        "seed": SEED,
        "recipe": {
            "num_classes": compression.NUM_CLASSES,
            "epochs": settings.finetune_epochs,
            "batch_size": compression.BATCH_SIZE,
            "learning_rate": compression.LEARNING_RATE,
            # The same fine-tuning schedule as the Sparse VD net (linear decay to 0).
            "lr_schedule": compression.LR_SCHEDULE,
        },
    }
    reply = _common.run_keras2_worker("_tfmot_export_worker.py", job, "export_tflite", arrays)

    nets, goals = {}, []
    for net, (dense, sparse, x_train, x_test, y_test) in trained.items():
        paths = {
            name: os.path.join(workdir, f"{net}_{name}.tflite")
            for name in ("dense", "tfpriors", "tfpriors_int8")
        }
        tfpriors.export.to_tflite(dense, paths["dense"], shrink=False, sparse_storage=False)
        report = tfpriors.export.to_tflite(
            sparse, paths["tfpriors"], verify_data=x_test, compare_dense=False, latency_repeats=10
        )
        int8 = tfpriors.export.to_tflite(
            sparse,
            paths["tfpriors_int8"],
            quantize="int8",
            representative_data=x_train[:200],
            verify_data=x_test,
            compare_dense=False,
            latency_repeats=10,
        )
        paths["tfmot"] = tfmot_job[net]["path"]
        interpreters = {
            name: load_interpreter(path, num_threads=1)[0] for name, path in paths.items()
        }
        latencies = _common.litert_latencies(interpreters, x_test[:1], rounds, invokes)
        files = {}
        for name, path in paths.items():
            files[name] = {
                "size_bytes": os.path.getsize(path),
                "latency_ms_rounds": latencies[name],
                "latency_ms": _common.median(latencies[name]),
                "test_accuracy": accuracy(interpreters[name], x_test, y_test),
            }
        dense_file, ours = files["dense"], files["tfpriors"]
        for f in files.values():
            # Positive: the file is more accurate than the dense export.
            f["accuracy_vs_dense_points"] = 100 * (f["test_accuracy"] - dense_file["test_accuracy"])
        size_ratio = dense_file["size_bytes"] / ours["size_bytes"]
        speedup = dense_file["latency_ms"] / ours["latency_ms"]
        keras_accuracy = float(np.mean(sparse.predict(x_test, verbose=0).argmax(1) == y_test))
        within = abs(ours["test_accuracy"] - keras_accuracy) <= ACCURACY_BUDGET
        vs_dense = ours["accuracy_vs_dense_points"]
        within_dense = ours["test_accuracy"] >= dense_file["test_accuracy"] - ACCURACY_BUDGET - 1e-9
        accuracy_note = (
            f"file accuracy {ours['test_accuracy']:.2%}, {vs_dense:+.2f} pt against the "
            f"dense export's {dense_file['test_accuracy']:.2%} (budget -0.5 pt)"
            + ("" if within_dense else ": below the budget")
            + ("" if within else f"; more than 0.5 pt off the Keras model's {keras_accuracy:.2%}")
        )
        nets[net] = {
            "title": titles[net],
            "files": files,
            "tfpriors_report": report.to_dict(),
            "tfpriors_int8_report": int8.to_dict(),
            "tfmot": reply["nets"][net],
            "keras_sparse_vd_compression": tfpriors.compression_report(sparse).total_compression,
            "keras_sparse_vd_test_accuracy": keras_accuracy,
            "size_ratio_vs_dense": size_ratio,
            "speedup_vs_dense": speedup,
            "accuracy_within_budget": within,
            "tfpriors_accuracy_vs_dense_points": vs_dense,
            "accuracy_within_dense_budget": within_dense,
        }
        for label, ratio, target in (
            ("size", size_ratio, SIZE_GOAL),
            ("latency", speedup, SPEED_GOAL),
        ):
            goals.append(
                _common.goal_row(
                    f"{net}: dense export {label} / tfpriors {label}",
                    ratio,
                    "x",
                    "dense",
                    1.0,
                    ">=",
                    target,
                    condition=within and within_dense,
                    note=accuracy_note,
                )
            )
        print(
            f"[export_tflite] {net}: {size_ratio:.1f}x smaller, {speedup:.2f}x faster, "
            f"accuracy {ours['test_accuracy']:.2%} vs dense "
            f"{dense_file['test_accuracy']:.2%} ({vs_dense:+.2f} pt); TFMOT "
            f"{dense_file['size_bytes'] / files['tfmot']['size_bytes']:.1f}x smaller, "
            f"{dense_file['latency_ms'] / files['tfmot']['latency_ms']:.2f}x faster",
            flush=True,
        )

    payload = {
        **_common.result_header(
            "export_tflite",
            f"TFLite export: size and LiteRT latency ({compression.DATA[data]['title']})",
            __doc__,
            args.quick,
        ),
        "data": data,
        "keras2_worker_machine": reply["machine"],
        "repeats": rounds,
        "repeat_kind": f"interleaved latency rounds of {invokes} invokes",
        "settings": {
            "seed": SEED,
            "pretrain_epochs": settings.pretrain_epochs,
            "finetune_epochs": settings.finetune_epochs,
            "warmup_end": settings.warmup_end,
            "threads": 1,
            "batch": 1,
            "runtime": "ai_edge_litert with XNNPACK",
        },
        "nets": nets,
        "goals": goals,
        "seconds": time.perf_counter() - start,
    }
    _common.save_result("export_tflite", args.quick, payload)


if __name__ == "__main__":
    main()
