"""Keras 2 side of bench/train_step.py: TFP's DenseLocalReparameterization as a peer.

TFP's Keras layers need Keras 2, so bench/train_step.py starts this script with
TF_USE_LEGACY_KERAS=1. It times the TFP MLP against a tf.keras Dense MLP in the
same process, so the ratio compares like with like (same Keras, same fit loop).

    python bench/_tfp_worker.py JOB.json REPLY.json
"""

import os
import sys
import warnings

if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
    sys.exit("bench/_tfp_worker.py must run with TF_USE_LEGACY_KERAS=1 (TFP layers need Keras 2).")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

keras = tf.keras
# TFP's Keras 2 layers warn about deprecated tf_keras calls they make themselves.
warnings.filterwarnings("ignore", category=UserWarning, module=r"(tf_keras|tensorflow_probability)")


def mlp(layer, units, input_dim):
    return keras.Sequential(
        [keras.Input((input_dim,))]
        + [layer(n, activation="relu") for n in units[:-1]]
        + [layer(units[-1])]
    )


def main(job_path, reply_path):
    job = _common.read_json(job_path)
    rng = np.random.default_rng(0)
    batch, input_dim, units = job["batch_size"], job["input_dim"], job["units"]
    x = rng.normal(size=(batch, input_dim)).astype("float32")
    y = rng.integers(0, units[-1], size=(batch,)).astype("int64")
    dataset = tf.data.Dataset.from_tensors((x, y)).repeat()

    # The KL per example, as tfpriors scales it, so both objectives match.
    def scaled_kl(q, p, _):
        return tfp.distributions.kl_divergence(q, p) / job["dataset_size"]

    def tfp_layer(n, activation=None):
        return tfp.layers.DenseLocalReparameterization(
            n, activation=activation, kernel_divergence_fn=scaled_kl
        )

    models = {
        "dense": mlp(keras.layers.Dense, units, input_dim),
        "tfp_local_reparameterization": mlp(tfp_layer, units, input_dim),
    }
    for model in models.values():
        model.compile(
            keras.optimizers.Adam(1e-3),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
    steps = job["steps"]
    seconds = _common.time_interleaved(
        {
            name: _common.fit_runner(model, dataset, steps, keras.callbacks.Callback)
            for name, model in models.items()
        },
        job["repeats"],
    )
    _common.write_json(
        reply_path,
        {
            "machine": _common.machine_info(),
            "tf_keras_is": keras.__name__,
            "ms_per_step": {name: _common.ms_per_step(s, steps) for name, s in seconds.items()},
        },
    )


if __name__ == "__main__":
    main(*sys.argv[1:3])
