"""Keras 2 side of bench/compression.py: TFMOT magnitude pruning sweeps.

TFMOT rejects Keras 3 models, so bench/compression.py starts this script with
TF_USE_LEGACY_KERAS=1 (tf.keras is then tf_keras). It receives the data and the
dense weights that the Keras 3 side pretrained, so both methods start from the
very same dense network and are held to the same error budget.

    python bench/_tfmot_worker.py JOB.json REPLY.json
"""

import os
import sys
import time

if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
    sys.exit("bench/_tfmot_worker.py must run with TF_USE_LEGACY_KERAS=1 (TFMOT needs Keras 2).")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
from tqdm import tqdm  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

keras = tf.keras


def build(net, input_shape, num_classes):
    """The architectures of tfpriors.models in tf.keras, layer for layer.

    The weight lists must line up with the Keras 3 models' ``get_weights()``;
    ``set_weights`` checks every shape, and the dense test error is checked
    against the Keras 3 one.
    """
    layers = keras.layers
    if net == "lenet_300_100":
        return keras.Sequential(
            [
                keras.Input(input_shape),
                layers.Dense(300, activation="relu"),
                layers.Dense(100, activation="relu"),
                layers.Dense(num_classes),
            ]
        )
    if net == "lenet5":
        # Same padding, as tfpriors.models.lenet5 picks for 8x8 inputs.
        return keras.Sequential(
            [
                keras.Input(input_shape),
                layers.Conv2D(20, 5, padding="same"),
                layers.MaxPooling2D(2),
                layers.Conv2D(50, 5, padding="same"),
                layers.MaxPooling2D(2),
                layers.Flatten(),
                layers.Dense(500, activation="relu"),
                layers.Dense(num_classes),
            ]
        )
    raise ValueError(f"unknown net {net!r}")


def error_rate(model, x, y):
    logits = model.predict(x, batch_size=512, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) != y))


def kernel_counts(model):
    # Same counting as tfpriors.compression_report: Dense/Conv kernels only.
    total = nonzero = 0
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D)):
            kernel = layer.kernel.numpy()
            total += kernel.size
            nonzero += int(np.count_nonzero(kernel))
    return total, nonzero


def prune(net, weights, data, sparsity, recipe, seed):
    """Prunes the pretrained net to ``sparsity`` while fine-tuning; returns the stripped model."""
    (x_train, y_train), _ = data
    tf.keras.utils.set_random_seed(seed)
    model = build(net, x_train.shape[1:], recipe["num_classes"])
    model.set_weights(weights)
    steps_per_epoch = int(np.ceil(len(x_train) / recipe["batch_size"]))
    total_steps = steps_per_epoch * recipe["epochs"]
    # Reach the target after 2/3 of fine-tuning and spend the rest recovering
    # accuracy at that sparsity (TFMOT's documented usage pattern).
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0,
        final_sparsity=sparsity,
        begin_step=0,
        end_step=max(1, (2 * total_steps) // 3),
        frequency=max(1, steps_per_epoch // 2),
    )
    pruned = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
    pruned.compile(
        keras.optimizers.Adam(recipe["learning_rate"]),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    pruned.fit(
        x_train,
        y_train,
        epochs=recipe["epochs"],
        batch_size=recipe["batch_size"],
        verbose=0,
        callbacks=[tfmot.sparsity.keras.UpdatePruningStep()],
    )
    return tfmot.sparsity.keras.strip_pruning(pruned)


def main(job_path, reply_path):
    job = _common.read_json(job_path)
    arrays = np.load(job["arrays"])
    recipe = job["recipe"]
    runs = [
        (net, seed, sparsity)
        for net in job["nets"]
        for seed in job["seeds"]
        for sparsity in job["sparsities"]
    ]
    reply = {"machine": _common.machine_info(), "tf_keras_is": keras.__name__, "nets": {}}
    bar = tqdm(runs, desc="tfmot sweep", unit="run", file=sys.stderr)
    for net, seed, sparsity in bar:
        bar.set_postfix(net=net, seed=seed, sparsity=sparsity, refresh=False)
        data = (
            (arrays[f"{net}/x_train"], arrays[f"{net}/y_train"]),
            (arrays[f"{net}/x_test"], arrays[f"{net}/y_test"]),
        )
        count = int(arrays[f"{net}/seed{seed}/count"])
        weights = [arrays[f"{net}/seed{seed}/w{i}"] for i in range(count)]
        per_seed = reply["nets"].setdefault(net, {}).setdefault(str(seed), {"sweep": []})
        if "dense_error" not in per_seed:
            dense = build(net, data[0][0].shape[1:], recipe["num_classes"])
            dense.set_weights(weights)
            per_seed["dense_error"] = error_rate(dense, *data[1])
        start = time.perf_counter()
        model = prune(net, weights, data, sparsity, recipe, seed)
        total, nonzero = kernel_counts(model)
        per_seed["sweep"].append(
            {
                "target_sparsity": sparsity,
                "test_error": error_rate(model, *data[1]),
                "kernel_weights": total,
                "nonzero": nonzero,
                "sparsity": 1.0 - nonzero / total,
                "compression": total / max(nonzero, 1),
                "seconds": time.perf_counter() - start,
            }
        )
    _common.write_json(reply_path, reply)


if __name__ == "__main__":
    main(*sys.argv[1:3])
