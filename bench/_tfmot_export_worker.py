"""Keras 2 side of bench/export_tflite.py: TFMOT's own TFLite path.

Prunes the dense net by magnitude (as bench/compression.py does), strips the
pruning wrappers and converts with TFLite's EXPERIMENTAL_SPARSITY, the
export TFMOT documents for pruned models. Writes the .tflite bytes to the
path in the job; the Keras 3 side measures them.

    python bench/_tfmot_export_worker.py JOB.json REPLY.json
"""

import os
import sys

if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
    sys.exit("bench/_tfmot_export_worker.py must run with TF_USE_LEGACY_KERAS=1.")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402
from _tfmot_worker import error_rate, kernel_counts, prune  # noqa: E402


def main(job_path, reply_path):
    job = _common.read_json(job_path)
    arrays = np.load(job["arrays"])
    reply = {"machine": _common.machine_info(), "nets": {}}
    for net, spec in job["nets"].items():
        data = (
            (arrays[f"{net}/x_train"], arrays[f"{net}/y_train"]),
            (arrays[f"{net}/x_test"], arrays[f"{net}/y_test"]),
        )
        weights = [arrays[f"{net}/w{i}"] for i in range(int(arrays[f"{net}/count"]))]
        model = prune(net, weights, data, spec["sparsity"], job["recipe"], job["seed"])
        total, nonzero = kernel_counts(model)
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
        _common.write_bytes(spec["path"], converter.convert())
        reply["nets"][net] = {
            "sparsity": spec["sparsity"],
            "keras_test_error": error_rate(model, *data[1]),
            "compression": total / max(nonzero, 1),
        }
    _common.write_json(reply_path, reply)


if __name__ == "__main__":
    main(*sys.argv[1:3])
