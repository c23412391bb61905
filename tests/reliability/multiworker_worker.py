"""Trains small tfpriors models alone or as one worker of a MultiWorkerMirroredStrategy.

Run by test_multiworker.py and bench/multiworker.py, one process per worker:

    python multiworker_worker.py OUT.npz [--models sparse_vd pact_relaxed ...]
        [--cluster PORT0,PORT1 --index I] [--epochs E] [--per-replica-noise]
        [--perturb-init]

Without ``--cluster`` the process trains on its one CPU device: the
single-device reference. With it, TF_CONFIG names the workers on 127.0.0.1
and this process is worker ``--index``; every worker sees the same arrays and
``model.fit`` splits each global batch between them. ``--per-replica-noise``
makes every replica draw noise for its own slice only (the behaviour before
``tfpriors.distributed.batch_rows``), a control that must break the equality.
``--perturb-init`` moves every initial weight by one float32 ulp: against an
unperturbed single-device run it measures how much training amplifies
rounding differences, the floor any two differently summed runs reach.

For each model OUT.npz holds ``<model>/init_<i>`` and ``<model>/final_<i>``
(weights), ``<model>/step_loss`` (the running mean of the loss after each
batch, as ``fit`` logs it), ``<model>/epoch_loss``, ``<model>/regularizer``
(the KL or ponder term in the final loss, per example) and
``<model>/seconds`` (wall time of ``fit``).
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import time


def _configure(cluster, index):
    # All of this must happen before TensorFlow is imported.
    os.environ["KERAS_BACKEND"] = "tensorflow"
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.pop("TF_CONFIG", None)
    if cluster:
        workers = [f"127.0.0.1:{port}" for port in cluster.split(",")]
        os.environ["TF_CONFIG"] = json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        )


EXAMPLES, BATCH, EPOCHS = 256, 64, 2


def _optimizer(keras, learning_rate=0.05):
    # SGD, not Adam: Adam's first steps move every weight by about its learning
    # rate whatever the gradient's size, so a weight whose gradient is ~1e-9
    # (a unit the halting weights switch off) would jump by +-lr on the sign
    # of its floating-point rounding and hide what the comparison is about.
    return keras.optimizers.SGD(learning_rate, momentum=0.9)


def _sparse_vd(tfpriors, keras):
    model = keras.Sequential(
        [
            keras.Input((64,)),
            tfpriors.layers.SparseVDDense(32, activation="relu", seed=2),
            tfpriors.layers.SparseVDDense(10, seed=3),
        ]
    )
    tfpriors.set_dataset_size(model, EXAMPLES)
    return model, _optimizer(keras)


def _sparse_vd_conv(tfpriors, keras):
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            tfpriors.layers.SparseVDConv2D(4, 3, padding="same", activation="relu", seed=1),
            keras.layers.Flatten(),
            tfpriors.layers.SparseVDDense(10, seed=3),
        ]
    )
    tfpriors.set_dataset_size(model, EXAMPLES)
    return model, _optimizer(keras)


def _pact(mode):
    def build(tfpriors, keras):
        # Global batch statistics: per-replica ones would differ from the
        # single-device run by design.
        model = tfpriors.models.act_resnet(
            (8, 8, 1),
            10,
            blocks=(2,),
            widths=(4,),
            kind="pact",
            mode=mode,
            ponder_cost=0.1,
            synchronized_batch_norm=True,
        )
        return model, _optimizer(keras)

    return build


def _hyper(tfpriors, keras):
    model = tfpriors.hyper.LambdaHyperModel(
        layers=[
            tfpriors.layers.HyperVariationalDense(32, activation="relu", seed=5),
            tfpriors.layers.HyperVariationalDense(10, seed=6),
        ],
        lambda_range=(1e-3, 1.0),
        lambda_draws=2,
        prior_variance=0.1,
    )
    model.build((None, 64))
    tfpriors.set_dataset_size(model, EXAMPLES)
    return model, _optimizer(keras, 0.01)


# name -> (builder, flat inputs)
MODELS = {
    "sparse_vd": (_sparse_vd, True),
    "sparse_vd_conv": (_sparse_vd_conv, False),
    "pact_relaxed": (_pact("relaxed"), False),
    "pact_threshold": (_pact("threshold"), False),
    "hyper": (_hyper, True),
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=sorted(MODELS))
    parser.add_argument("--cluster", help="comma-separated ports of the workers on 127.0.0.1")
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--per-replica-noise", action="store_true")
    parser.add_argument("--perturb-init", action="store_true")
    args = parser.parse_args()
    _configure(args.cluster, args.index)

    import keras
    import numpy as np
    import tensorflow as tf

    import tfpriors

    # Two processes share two cores: one thread each keeps them from fighting.
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.experimental.enable_op_determinism()
    if args.per_replica_noise:
        tfpriors.distributed.batch_rows = lambda sample, shape: sample(shape)
        tfpriors.distributed.replica_offset = lambda size: 0
    if args.cluster:
        tfpriors.distributed.enable_multi_worker_fit()
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        strategy = tf.distribute.get_strategy()

    (x, y), _ = tfpriors.datasets.load_digits()
    x, y = x[:EXAMPLES], y[:EXAMPLES]

    class StepLosses(keras.callbacks.Callback):
        """The loss ``fit`` logs after every batch (the running mean of the epoch)."""

        def __init__(self):
            super().__init__()
            self.losses = []

        def on_train_batch_end(self, batch, logs=None):
            self.losses.append(float(logs["loss"]))

    arrays = {}
    for name in args.models:
        builder, flat = MODELS[name]
        inputs = x if flat else x.reshape(-1, 8, 8, 1)
        keras.utils.set_random_seed(0)
        with strategy.scope():
            model, optimizer = builder(tfpriors, keras)
            model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        if args.perturb_init:
            model.set_weights(
                [
                    np.nextafter(w, np.inf).astype(w.dtype) if w.dtype == np.float32 else w
                    for w in model.get_weights()
                ]
            )
        arrays.update({f"{name}/init_{i}": w for i, w in enumerate(model.get_weights())})
        steps = StepLosses()
        start = time.perf_counter()
        history = model.fit(
            inputs,
            y,
            batch_size=BATCH,
            epochs=args.epochs,
            shuffle=False,
            verbose=0,
            callbacks=[steps],
        )
        arrays[f"{name}/seconds"] = np.array(time.perf_counter() - start)
        arrays.update({f"{name}/final_{i}": w for i, w in enumerate(model.get_weights())})
        arrays[f"{name}/step_loss"] = np.array(steps.losses)
        arrays[f"{name}/epoch_loss"] = np.array(history.history["loss"])
        # The KL / ponder term of the trained model on the first batch: what
        # add_loss contributes per example (evaluation mode, deterministic).
        model(inputs[:BATCH], training=False)
        arrays[f"{name}/regularizer"] = np.array(
            sum(float(keras.ops.convert_to_numpy(loss)) for loss in model.losses)
        )
    np.savez(args.out, **arrays)


# -- driving the runs (imported by the test and the benchmark; no TensorFlow here) -----------


def free_ports(count):
    """``count`` distinct TCP ports on 127.0.0.1 that were free a moment ago."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def run_single(directory, models, epochs=EPOCHS, timeout=600, perturb_init=False):
    """Runs one single-device process; returns the path of its .npz file."""
    name = "perturbed" if perturb_init else "single"
    out = os.path.join(directory, f"{name}.npz")
    command = [
        sys.executable,
        os.path.abspath(__file__),
        out,
        "--models",
        *models,
        "--epochs",
        str(epochs),
    ] + (["--perturb-init"] if perturb_init else [])
    completed = subprocess.run(
        command, env=_child_env(), capture_output=True, text=True, timeout=timeout
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"{name} exited with status {completed.returncode}:\n"
            f"{(completed.stdout + completed.stderr)[-3000:]}"
        )
    return out


def _child_env():
    # The children import the tfpriors beside this file, not an installed one.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))]
        + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    return env


def run_all(directory, models, epochs=EPOCHS, timeout=600, per_replica_noise=False):
    """Runs the single-device reference and two workers at once; returns their .npz paths.

    Every process is killed when ``timeout`` seconds have passed, so a worker
    waiting forever for its peer cannot hang the caller. Raises
    ``RuntimeError`` with the tail of the failing process's output.
    """
    ports = ",".join(map(str, free_ports(2)))
    env = _child_env()
    base = [sys.executable, os.path.abspath(__file__)]
    options = ["--models", *models, "--epochs", str(epochs)]
    if per_replica_noise:
        options.append("--per-replica-noise")
    jobs = {
        "single": [],
        "worker0": ["--cluster", ports, "--index", "0"],
        "worker1": ["--cluster", ports, "--index", "1"],
    }
    outputs, processes = {}, {}
    try:
        for name, extra in jobs.items():
            outputs[name] = os.path.join(directory, f"{name}.npz")
            log = open(os.path.join(directory, f"{name}.log"), "w")
            processes[name] = (
                subprocess.Popen(
                    base + [outputs[name]] + options + extra,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                ),
                log,
            )
        deadline = time.monotonic() + timeout
        for name, (process, _) in processes.items():
            try:
                process.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"{name} did not finish within {timeout} s") from None
    finally:
        for process, log in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
            log.close()
    for name, (process, _) in processes.items():
        if process.returncode != 0:
            with open(os.path.join(directory, f"{name}.log")) as f:
                tail = f.read()[-3000:]
            raise RuntimeError(f"{name} exited with status {process.returncode}:\n{tail}")
    return outputs


def compare(single, worker, model):
    """Differences between two runs of ``model`` (loaded .npz files), as plain floats.

    ``max_abs_weight_diff`` is over every weight; ``max_rel_weight_diff``
    divides each tensor's largest difference by that tensor's largest
    magnitude (elementwise ratios are meaningless for weights near zero);
    ``max_weight_change`` is how far training moved the weights, the scale
    the differences should be judged against. Loss differences are over the
    per-batch losses ``fit`` logged.
    """
    count = len([key for key in single.files if key.startswith(f"{model}/final_")])
    abs_diff, rel_diff, init_diff, change = 0.0, 0.0, 0.0, 0.0
    for i in range(count):
        a, b = single[f"{model}/final_{i}"], worker[f"{model}/final_{i}"]
        start = single[f"{model}/init_{i}"]
        init_diff = max(init_diff, float(abs(start - worker[f"{model}/init_{i}"]).max()))
        difference = float(abs(a - b).max()) if a.size else 0.0
        abs_diff = max(abs_diff, difference)
        if a.size and abs(a).max() > 0:
            rel_diff = max(rel_diff, difference / float(abs(a).max()))
        change = max(change, float(abs(a - start).max()) if a.size else 0.0)
    loss_a, loss_b = single[f"{model}/step_loss"], worker[f"{model}/step_loss"]
    return {
        "weights": count,
        "max_abs_init_diff": init_diff,
        "max_abs_weight_diff": abs_diff,
        "max_rel_weight_diff": rel_diff,
        "max_weight_change": change,
        "max_abs_loss_diff": float(abs(loss_a - loss_b).max()),
        "max_rel_loss_diff": float((abs(loss_a - loss_b) / abs(loss_a)).max()),
        "steps": int(len(loss_a)),
        "single_loss": [float(v) for v in loss_a],
        "multiworker_loss": [float(v) for v in loss_b],
        "regularizer_single": float(single[f"{model}/regularizer"]),
        "regularizer_multiworker": float(worker[f"{model}/regularizer"]),
        "seconds_single": float(single[f"{model}/seconds"]),
        "seconds_multiworker": float(worker[f"{model}/seconds"]),
    }


if __name__ == "__main__":
    sys.exit(main())
