"""Keras 2 side of bench/compression.py: TFMOT magnitude pruning sweeps.

TFMOT rejects Keras 3 models, so bench/compression.py starts this script with
TF_USE_LEGACY_KERAS=1 (tf.keras is then tf_keras). It receives the data and the
dense weights that the Keras 3 side pretrained, so both methods start from the
very same dense network and are held to the same error budget.

Two sweeps per net and seed: ``global`` prunes the whole model with
``prune_low_magnitude`` at one target sparsity (every layer alike);
``per_layer`` wraps each layer with its own target sparsity. Within a sweep
the runs go from low to high compression; with ``stop_after_misses`` set,
the rest of a sweep is skipped once that many runs in a row missed the error
``budget`` (magnitude pruning only gets worse with more sparsity).

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
        # The padding tfpriors.models.lenet5 picks: valid (Caffe) from 16 pixels a side.
        padding = "valid" if min(input_shape[:2]) >= 16 else "same"
        return keras.Sequential(
            [
                keras.Input(input_shape),
                layers.Conv2D(20, 5, padding=padding),
                layers.MaxPooling2D(2),
                layers.Conv2D(50, 5, padding=padding),
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


def _prunable(layer):
    return isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D))


def prune(net, weights, data, sparsity, recipe, seed):
    """Prunes the pretrained net while fine-tuning; returns the stripped model.

    ``sparsity`` is one target for the whole model (a float: TFMOT's
    ``prune_low_magnitude`` of the model) or a list with one target per
    Dense/Conv2D layer, in order (each layer wrapped with its own schedule).
    """
    (x_train, y_train), _ = data
    tf.keras.utils.set_random_seed(seed)
    model = build(net, x_train.shape[1:], recipe["num_classes"])
    model.set_weights(weights)
    steps_per_epoch = int(np.ceil(len(x_train) / recipe["batch_size"]))
    total_steps = steps_per_epoch * recipe["epochs"]

    def schedule(target):
        # Reach the target after 2/3 of fine-tuning and spend the rest recovering
        # accuracy at that sparsity (TFMOT's documented usage pattern).
        return tfmot.sparsity.keras.PolynomialDecay(
            initial_sparsity=0.0,
            final_sparsity=float(target),
            begin_step=0,
            end_step=max(1, (2 * total_steps) // 3),
            frequency=max(1, steps_per_epoch // 2),
        )

    if isinstance(sparsity, (list, tuple)):
        targets = iter(sparsity)

        def wrap(layer):
            if _prunable(layer):
                return tfmot.sparsity.keras.prune_low_magnitude(
                    layer, pruning_schedule=schedule(next(targets))
                )
            return layer

        # The wrappers hold the model's own (pretrained) layers: no weights are re-initialized.
        pruned = keras.models.clone_model(model, clone_function=wrap)
    else:
        pruned = tfmot.sparsity.keras.prune_low_magnitude(
            model, pruning_schedule=schedule(sparsity)
        )
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


def run_sweep(net, weights, data, recipe, seed, runs, budget, stop_after_misses):
    """Fine-tunes one pruned copy per run, in order; returns one record per run."""
    records, misses = [], 0
    for run in runs:
        if stop_after_misses and misses >= stop_after_misses:
            records.append({**run, "skipped": f"{misses} runs in a row over the budget before it"})
            continue
        start = time.perf_counter()
        model = prune(net, weights, data, run["sparsity"], recipe, seed)
        total, nonzero = kernel_counts(model)
        record = {
            **run,
            "test_error": error_rate(model, *data[1]),
            "kernel_weights": total,
            "nonzero": nonzero,
            "sparsity_reached": 1.0 - nonzero / total,
            "compression": total / max(nonzero, 1),
            "seconds": time.perf_counter() - start,
        }
        records.append(record)
        over = budget is not None and record["test_error"] > budget + 1e-9
        misses = misses + 1 if over else 0
    return records


def main(job_path, reply_path):
    job = _common.read_json(job_path)
    arrays = np.load(job["arrays"])
    recipe = job["recipe"]
    reply = {"machine": _common.machine_info(), "tf_keras_is": keras.__name__, "nets": {}}
    tasks = [
        (net, seed, sweep)
        for net in job["nets"]
        for seed in job["seeds"]
        for sweep in job["sweeps"][net][str(seed)]
    ]
    bar = tqdm(tasks, desc="tfmot sweeps", unit="sweep", file=sys.stderr)
    for net, seed, sweep in bar:
        bar.set_postfix(net=net, seed=seed, sweep=sweep["scheme"], refresh=False)
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
        runs = [{"scheme": sweep["scheme"], **run} for run in sweep["runs"]]
        per_seed["sweep"] += run_sweep(
            net,
            weights,
            data,
            recipe,
            seed,
            runs,
            sweep.get("budget"),
            job.get("stop_after_misses"),
        )
    _common.write_json(reply_path, reply)


if __name__ == "__main__":
    main(*sys.argv[1:3])
