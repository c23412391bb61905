"""Keras 2 side of bench/compression.py: TFMOT magnitude pruning sweeps.

TFMOT rejects Keras 3 models, so bench/compression.py starts this script with
TF_USE_LEGACY_KERAS=1 (tf.keras is then tf_keras). It receives the data and the
dense weights that the Keras 3 side pretrained, so both methods start from the
very same dense network and are held to the same error budget.

Two sweeps per net and seed: ``global`` prunes the whole model with
``prune_low_magnitude`` at one target sparsity (every layer alike);
``per_layer`` wraps each layer with its own target sparsity. The caller only
wants TFMOT's highest compression within each error level of ``levels`` (the
budget, Sparse VD's own error): the sweeps run in the order given, each from
high to low compression, and a run is skipped when its target compression
cannot beat what an earlier run of either sweep already reached within every
level. The picks are those of running every point (up to the small gap
between a run's target and the compression it reaches); only the time
differs. A net's ``recipe_by_net`` entry overrides the shared ``recipe``
(epochs); ``"lr_schedule": "linear"`` decays the learning rate linearly to 0
over fine-tuning, as the Sparse VD side does; ``"decay_epochs": k`` keeps it
constant and decays it linearly to 0 over the last k epochs (bench/structured.py).

A job with ``"kind": "export"`` (bench/structured.py) instead prunes each
run's net to one global target sparsity, strips the pruning wrappers and
converts the result with the TFLite converter (float32, batch 1), writing the
file where the job says, so that the Keras 3 side times it on LiteRT beside
its own exports.

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
        # Images (bench/structured.py) are flattened first, as tfpriors.models does;
        # vectors (bench/compression.py) go straight in.
        flatten = [layers.Flatten()] if len(input_shape) > 1 else []
        return keras.Sequential(
            [
                keras.Input(input_shape),
                *flatten,
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
    learning_rate = recipe["learning_rate"]
    if recipe.get("lr_schedule") == "linear":
        learning_rate = keras.optimizers.schedules.PolynomialDecay(
            learning_rate, total_steps, end_learning_rate=0.0
        )
    elif recipe.get("decay_epochs"):
        schedule = _common.hold_then_decay_class(keras.optimizers.schedules.LearningRateSchedule)
        learning_rate = schedule(
            learning_rate,
            total_steps,
            steps_per_epoch * recipe["decay_epochs"],
        )
    pruned.compile(
        keras.optimizers.Adam(learning_rate),
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


def run_sweeps(net, weights, data, recipe, seed, sweeps, levels):
    """Fine-tunes one pruned copy per needed run; returns one record per run.

    ``sweeps`` run in order, each from its highest target compression down. A
    run whose target compression is below the best compression already
    reached within each error level of ``levels`` cannot change any pick and
    is recorded as skipped.
    """
    records = []
    best = {level: 0.0 for level in levels}
    for sweep in sweeps:
        for run in sorted(sweep["runs"], key=lambda run: -run["target_compression"]):
            run = {"scheme": sweep["scheme"], **run}
            if levels and all(run["target_compression"] < best[level] for level in levels):
                records.append(
                    {**run, "skipped": "cannot beat what was already reached within every level"}
                )
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
            for level in levels:
                if record["test_error"] <= level + 1e-9:
                    best[level] = max(best[level], record["compression"])
    return records


def to_tflite(model, path):
    """TFMOT's export path: the stripped model through the TFLite converter (batch 1).

    Default converter settings, as TFMOT's pruning guide uses them: the zeros
    stay in dense float32 kernels. Written through a temporary file.
    """
    spec = tf.TensorSpec((1, *model.input_shape[1:]), tf.float32)
    function = tf.function(lambda x: model(x, training=False))
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [function.get_concrete_function(spec)], model
    )
    content = converter.convert()
    temporary = f"{path}.tmp"
    with open(temporary, "wb") as f:
        f.write(content)
    os.replace(temporary, path)
    return len(content)


def export_runs(job, arrays):
    """The ``export`` job: one pruned, stripped and converted net per run."""
    recipe = job["recipe"]
    records = []
    for run in tqdm(job["runs"], desc="tfmot exports", unit="net", file=sys.stderr):
        net, seed = run["net"], run["seed"]
        data = _common.net_data(arrays, net)
        weights = _common.net_weights(arrays, net, seed)
        dense = build(net, data[0][0].shape[1:], recipe["num_classes"])
        dense.set_weights(weights)
        start = time.perf_counter()
        model = prune(
            net,
            weights,
            data,
            run["sparsity"],
            {**recipe, "epochs": run["epochs"], "decay_epochs": run.get("decay_epochs", 0)},
            seed,
        )
        seconds = time.perf_counter() - start
        total, nonzero = kernel_counts(model)
        records.append(
            {
                **run,
                "dense_error": error_rate(dense, *data[1]),
                "test_error": error_rate(model, *data[1]),
                "train_error": error_rate(model, *data[0]),
                "sparsity_reached": 1.0 - nonzero / total,
                "compression": total / max(nonzero, 1),
                "seconds": seconds,
                "size_bytes": to_tflite(model, run["path"]),
            }
        )
    return records


def main(job_path, reply_path):
    job = _common.read_json(job_path)
    arrays = np.load(job["arrays"])
    recipe = job["recipe"]
    reply = {"machine": _common.machine_info(), "tf_keras_is": keras.__name__, "nets": {}}
    if job.get("kind") == "export":
        reply["runs"] = export_runs(job, arrays)
        _common.write_json(reply_path, reply)
        return
    tasks = [(net, seed) for net in job["nets"] for seed in job["seeds"]]
    bar = tqdm(tasks, desc="tfmot sweeps", unit="seed", file=sys.stderr)
    for net, seed in bar:
        bar.set_postfix(net=net, seed=seed, refresh=False)
        net_recipe = {**recipe, **job.get("recipe_by_net", {}).get(net, {})}
        data = _common.net_data(arrays, net)
        weights = _common.net_weights(arrays, net, seed)
        dense = build(net, data[0][0].shape[1:], net_recipe["num_classes"])
        dense.set_weights(weights)
        plan = job["sweeps"][net][str(seed)]
        reply["nets"].setdefault(net, {})[str(seed)] = {
            "dense_error": error_rate(dense, *data[1]),
            "sweep": run_sweeps(
                net, weights, data, net_recipe, seed, plan["sweeps"], plan["levels"]
            ),
        }
    _common.write_json(reply_path, reply)


if __name__ == "__main__":
    main(*sys.argv[1:3])
