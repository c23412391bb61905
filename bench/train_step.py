"""Train step cost of the Sparse VD layers against Keras' own layers.

Each case times compiled train steps (``model.fit`` on one repeated
in-memory batch of random data, Adam) after a warm-up call that traces the
step, and reports milliseconds per step. A callback clocks a fixed number of
steps inside each ``fit`` call, after 5 untimed ones; ``fit``'s set-up and
teardown are left out. The models of a case alternate within every repeat;
figures are medians of the repeats and each ratio is taken against a
baseline measured in the same run:

- MLP 784-300-100-10, batch 128: ``SparseVDDense`` vs ``keras.layers.Dense``
  (goal: ratio <= 2.0);
- one conv layer, input 32x32x32 -> 64 filters 3x3 ``same``, batch 32, MSE
  loss: ``SparseVDConv2D`` vs ``keras.layers.Conv2D`` (goal: ratio <= 1.8);
- peer figure without a goal: TFP's ``DenseLocalReparameterization`` on the
  same MLP against a tf.keras Dense MLP, both in one Keras 2 subprocess.

Each Keras 3 case also times a bare local-reparameterization layer defined
here (two matmuls or convolutions and Gaussian noise; no KL, no log_alpha):
the floor of any layer that samples pre-activations. It tells how much of
Sparse VD's extra cost is the sampling itself and how much its per-weight
terms (log_alpha, KL and their gradients). The draw of one step's Gaussian
noise (``keras.random.normal``) is also timed alone.

    python bench/train_step.py [--quick]
"""

import argparse
import dataclasses
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import ops  # noqa: E402

import tfpriors  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

# Any positive size gives the same cost; this one is MNIST's.
DATASET_SIZE = 60000
MLP_INPUT, MLP_UNITS, MLP_BATCH = 784, (300, 100, 10), 128
CONV_INPUT, CONV_FILTERS, CONV_BATCH = (32, 32, 32), 64, 32


@dataclasses.dataclass(frozen=True)
class Settings:
    repeats: int
    # Timed steps per repeat, about 0.5-2 s of work, so that per-step jitter
    # averages out within a repeat.
    mlp_steps: int
    conv_steps: int


FULL = Settings(repeats=9, mlp_steps=200, conv_steps=20)
QUICK = Settings(repeats=2, mlp_steps=20, conv_steps=3)


class BareLocalReparameterization(keras.layers.Layer):
    """Reference only: ``x @ mu + sqrt(x^2 @ exp(log_sigma2)) * eps`` and nothing else.

    A dense layer, or with ``conv=True`` a 3x3 ``same`` convolution.
    """

    def __init__(self, units, activation=None, conv=False, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.activation = keras.activations.get(activation)
        self.conv = conv
        self.seed_generator = keras.random.SeedGenerator(0)

    def build(self, input_shape):
        shape = (3, 3, input_shape[-1], self.units) if self.conv else (input_shape[-1], self.units)
        self.kernel = self.add_weight(shape=shape, initializer="glorot_uniform", name="kernel")
        self.log_sigma2 = self.add_weight(
            shape=shape, initializer=keras.initializers.Constant(-10.0), name="log_sigma2"
        )
        self.bias = self.add_weight(shape=(self.units,), initializer="zeros", name="bias")

    def _linear(self, x, kernel):
        return ops.conv(x, kernel, padding="same") if self.conv else ops.matmul(x, kernel)

    def call(self, x, training=False):
        outputs = self._linear(x, self.kernel)
        if training:
            variance = self._linear(ops.square(x), ops.exp(self.log_sigma2))
            noise = keras.random.normal(ops.shape(outputs), seed=self.seed_generator)
            outputs = outputs + ops.sqrt(variance + 1e-8) * noise
        return self.activation(outputs + self.bias)


def compiled(model, loss):
    # Required before training Sparse VD models; a no-op for the others.
    tfpriors.set_dataset_size(model, DATASET_SIZE)
    model.compile(keras.optimizers.Adam(1e-3), loss)
    return model


def mlp(dense_type):
    keras.utils.set_random_seed(0)
    layers = [keras.Input((MLP_INPUT,))]
    layers += [dense_type(n, activation="relu") for n in MLP_UNITS[:-1]]
    layers.append(dense_type(MLP_UNITS[-1]))
    return compiled(
        keras.Sequential(layers), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )


def conv(layer):
    keras.utils.set_random_seed(0)
    return compiled(
        keras.Sequential([keras.Input(CONV_INPUT), layer]), keras.losses.MeanSquaredError()
    )


def time_models(label, models, dataset, steps, repeats):
    """Milliseconds per step of each model, per repeat: ``{name: [ms, ...]}``."""
    print(f"[train_step] {label}: {repeats} repeats of {steps} steps", flush=True)
    seconds = _common.time_interleaved(
        {
            name: _common.fit_runner(model, dataset, steps, keras.callbacks.Callback)
            for name, model in models.items()
        },
        repeats,
    )
    return {name: _common.ms_per_step(s, steps) for name, s in seconds.items()}


def noise_ms(shapes, repeats, calls=20):
    """Milliseconds to draw the Gaussian noise of one train step, per repeat.

    Local reparameterization needs one ``keras.random.normal`` number per
    pre-activation; this times that draw alone.
    """
    seed = keras.random.SeedGenerator(0)

    @tf.function
    def draw():
        return [keras.random.normal(shape, seed=seed) for shape in shapes]

    def run():
        for _ in range(calls):
            draw()

    return _common.ms_per_step(_common.time_interleaved({"noise": run}, repeats)["noise"], calls)


def missed_reason(medians, noise):
    """Splits Sparse VD's extra time over the baseline with the reference measurements."""
    extra = medians["sparse_vd"] - medians["dense"]
    if extra <= 0:
        return ""
    bare = medians["bare_local_reparameterization"]
    share = min(max((bare - medians["dense"]) / extra, 0.0), 1.0)
    return (
        f"A bare local-reparameterization layer (two matmuls/convolutions and noise, no "
        f"KL or log_alpha) costs {bare / medians['dense']:.2f}x the baseline here, i.e. "
        f"{share:.0%} of Sparse VD's extra {extra:.2f} ms; the other {1 - share:.0%} is its "
        f"per-weight terms (log_alpha, KL, their gradients). Drawing the step's Gaussian "
        f"noise alone takes {noise:.2f} ms ({noise / medians['dense']:.0%} of the baseline "
        "step)."
    )


def case(description, ms, candidate, goal_op=None, goal_value=None, name=None, noise=None, **extra):
    medians = {key: _common.median(values) for key, values in ms.items()}
    ratio = medians[candidate] / medians["dense"]
    row = None
    if goal_op is not None:
        row = _common.goal_row(
            name, medians[candidate], "ms/step", "dense", medians["dense"], goal_op, goal_value
        )
        if not row["met"]:
            row["note"] = missed_reason(medians, _common.median(noise))
    return dict(
        description=description,
        ms_per_step=ms,
        median_ms_per_step=medians,
        min_ms_per_step={key: min(values) for key, values in ms.items()},
        ratio=ratio,
        ratios={key: value / medians["dense"] for key, value in medians.items()},
        per_repeat_ratio=[c / b for c, b in zip(ms[candidate], ms["dense"])],
        noise_ms_per_step=noise,
        goal=row,
        **extra,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="2 short repeats: a smoke check, written to results/quick/",
    )
    args = parser.parse_args()
    settings = QUICK if args.quick else FULL
    start = time.perf_counter()
    load_before = os.getloadavg()
    rng = np.random.default_rng(0)
    cases = {}

    x = rng.normal(size=(MLP_BATCH, MLP_INPUT)).astype("float32")
    y = rng.integers(0, MLP_UNITS[-1], size=(MLP_BATCH,)).astype("int64")
    ms = time_models(
        "MLP 784-300-100-10",
        {
            "dense": mlp(keras.layers.Dense),
            "sparse_vd": mlp(tfpriors.layers.SparseVDDense),
            "bare_local_reparameterization": mlp(BareLocalReparameterization),
        },
        tf.data.Dataset.from_tensors((x, y)).repeat(),
        settings.mlp_steps,
        settings.repeats,
    )
    cases["mlp"] = case(
        "MLP 784-300-100-10, batch 128: SparseVDDense vs keras.layers.Dense",
        ms,
        "sparse_vd",
        "<=",
        2.0,
        "SparseVDDense MLP 784-300-100-10 train step (batch 128)",
        noise=noise_ms([(MLP_BATCH, n) for n in MLP_UNITS], settings.repeats),
        batch_size=MLP_BATCH,
        steps_per_repeat=settings.mlp_steps,
    )

    x = rng.normal(size=(CONV_BATCH, *CONV_INPUT)).astype("float32")
    y = rng.normal(size=(CONV_BATCH, *CONV_INPUT[:2], CONV_FILTERS)).astype("float32")
    ms = time_models(
        "Conv 32x32x32 -> 64, 3x3",
        {
            "dense": conv(keras.layers.Conv2D(CONV_FILTERS, 3, padding="same")),
            "sparse_vd": conv(tfpriors.layers.SparseVDConv2D(CONV_FILTERS, 3, padding="same")),
            "bare_local_reparameterization": conv(
                BareLocalReparameterization(CONV_FILTERS, conv=True)
            ),
        },
        tf.data.Dataset.from_tensors((x, y)).repeat(),
        settings.conv_steps,
        settings.repeats,
    )
    cases["conv"] = case(
        "Conv2D 32x32x32 -> 64 filters 3x3 same, batch 32, MSE: SparseVDConv2D vs "
        "keras.layers.Conv2D",
        ms,
        "sparse_vd",
        "<=",
        1.8,
        "SparseVDConv2D 32x32x32->64 3x3 train step (batch 32)",
        noise=noise_ms([(CONV_BATCH, *CONV_INPUT[:2], CONV_FILTERS)], settings.repeats),
        batch_size=CONV_BATCH,
        steps_per_repeat=settings.conv_steps,
    )

    job = {
        "batch_size": MLP_BATCH,
        "input_dim": MLP_INPUT,
        "units": list(MLP_UNITS),
        "dataset_size": DATASET_SIZE,
        "steps": settings.mlp_steps,
        "repeats": settings.repeats,
    }
    reply = _common.run_keras2_worker("_tfp_worker.py", job, "train_step")
    cases["tfp_peer"] = case(
        "Peer (Keras 2): tfp.layers.DenseLocalReparameterization MLP 784-300-100-10, "
        "batch 128, vs a tf.keras Dense MLP timed in the same subprocess",
        reply["ms_per_step"],
        "tfp_local_reparameterization",
        batch_size=MLP_BATCH,
        steps_per_repeat=settings.mlp_steps,
    )

    for key, result in cases.items():
        verdict = (
            "peer, no goal"
            if result["goal"] is None
            else "met"
            if result["goal"]["met"]
            else "MISSED"
        )
        print(
            f"[train_step] {key}: "
            + ", ".join(f"{k} {v:.2f} ms" for k, v in result["median_ms_per_step"].items())
            + f"; ratio {result['ratio']:.2f} ({verdict})",
            flush=True,
        )

    payload = {
        **_common.result_header("train_step", "Train step cost", __doc__, args.quick),
        "keras2_worker_machine": reply["machine"],
        # The machine may be shared; the load tells whether timings were contended.
        "load_average_before_after": [list(load_before), list(os.getloadavg())],
        "repeats": settings.repeats,
        "repeat_kind": "timed repeats",
        "settings": dataclasses.asdict(settings),
        "cases": cases,
        "goals": [c["goal"] for c in cases.values() if c["goal"] is not None],
        "seconds": time.perf_counter() - start,
    }
    _common.save_result("train_step", args.quick, payload)


if __name__ == "__main__":
    main()
