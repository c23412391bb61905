"""Train step cost of the Sparse VD layers against Keras' own layers.

Each case times compiled train steps (``model.fit`` on one repeated
in-memory batch of random data, Adam) after a warm-up call that traces the
step, and reports milliseconds per step. A callback clocks a fixed number of
steps inside each ``fit`` call, after 5 untimed ones; ``fit``'s set-up and
teardown are left out. The models of a case alternate within every repeat;
figures are medians of the repeats and each ratio is taken against a
baseline measured in the same run:

- MLP 784-300-100-10, batch 128: ``SparseVDDense`` vs ``keras.layers.Dense``
  (goal: ratio <= 2.05);
- one conv layer, input 32x32x32 -> 64 filters 3x3 ``same``, batch 32, MSE
  loss: ``SparseVDConv2D`` vs ``keras.layers.Conv2D`` (goal: ratio <= 2.15);
- peer figure without a goal: TFP's ``DenseLocalReparameterization`` on the
  same MLP against a tf.keras Dense MLP, both in one Keras 2 subprocess;
- the noise alone, on the conv case's 2,097,152 pre-activations: the fused
  ``tfpriors.ops.lrt_sample`` against ``tf.random.stateless_normal`` followed
  by the square root and multiply-add (goal: >= 5x faster), forward and with
  the backward pass; the op also with its AVX2 and scalar code where the CPU
  runs AVX-512, for the CPUs that have only those.

Each Keras 3 case also times, to say where the time goes:
``sparse_vd_tensorflow_noise``, the same Sparse VD layer with the pure-TF noise
(the path before the fused op); a bare local-reparameterization layer defined
here (two matmuls or convolutions and the fused noise; no KL, no log_alpha),
the floor of any layer that samples pre-activations; and the two matmuls or
convolutions alone (``two_gemm``), the floor of the trick itself. Sparse VD's
step = two_gemm + the noise + its per-weight terms (log_alpha, KL and their
gradients).

    python bench/train_step.py [--quick] [--skip-peer]
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
    noise_calls: int


FULL = Settings(repeats=9, mlp_steps=200, conv_steps=20, noise_calls=20)
QUICK = Settings(repeats=2, mlp_steps=20, conv_steps=3, noise_calls=3)


class BareLocalReparameterization(keras.layers.Layer):
    """Reference only: ``x @ mu + sqrt(x^2 @ exp(log_sigma2)) * eps`` and nothing else.

    A dense layer, or with ``conv=True`` a 3x3 ``same`` convolution. The noise
    is the fused ``tfpriors.ops.lrt_sample``; with ``noise=False`` the two
    products are only added (``x @ mu + 1e-3 * x^2 @ exp(log_sigma2)``): the
    two-GEMM floor.
    """

    def __init__(self, units, activation=None, conv=False, noise=True, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.activation = keras.activations.get(activation)
        self.conv = conv
        self.noise = noise
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
            if self.noise:
                seed = tf.cast(self.seed_generator.next(), tf.int32)
                outputs = tfpriors.ops.lrt_sample(outputs, variance, seed, variance_floor=1e-8)
            else:
                outputs = outputs + 1e-3 * variance
        return self.activation(outputs + self.bias)


def with_tensorflow_noise(layer_type):
    """``layer_type`` whose local reparameterization draws its noise in pure TensorFlow."""

    class TensorFlowNoise(layer_type):
        def call(self, inputs, training=False):
            with tfpriors.ops.noise_implementation("tensorflow"):
                return super().call(inputs, training=training)

    return TensorFlowNoise


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


NOISE_SHAPE = (CONV_BATCH, *CONV_INPUT[:2], CONV_FILTERS)  # 2,097,152 elements
NOISE_GOAL = 5.0


def noise_candidates(shape):
    """Functions drawing ``mean + sqrt(variance + 1e-8) * eps`` over ``shape``, each way.

    ``*_backward`` variants also take the gradient with respect to both inputs.
    """
    rng = np.random.default_rng(1)
    mean = tf.constant(rng.normal(size=shape).astype("float32"))
    variance = tf.constant(rng.uniform(size=shape).astype("float32"))
    seed = tf.constant([3, 4], tf.int32)

    def sampler(implementation):
        return lambda m, v: tfpriors.ops.lrt_sample(
            m, v, seed, variance_floor=1e-8, implementation=implementation
        )

    def tensorflow_sample(m, v):
        return m + tf.sqrt(v + 1e-8) * tf.random.stateless_normal(tf.shape(m), seed)

    def timed(sample, backward):
        @tf.function
        def step():
            if not backward:
                return sample(mean, variance)
            with tf.GradientTape() as tape:
                tape.watch([mean, variance])
                out = sample(mean, variance)
            return tape.gradient(out, [mean, variance], output_gradients=out)

        # A tf.function call on the CPU returns when its work is done.
        return step

    candidates = {}
    for backward in (False, True):
        suffix = "_backward" if backward else ""
        candidates["tensorflow" + suffix] = timed(tensorflow_sample, backward)
        if tfpriors.ops.has_fused_op():
            candidates["fused" + suffix] = timed(sampler("fused"), backward)
    return candidates


def time_noise(repeats, calls):
    """Milliseconds per draw of each noise implementation (and of the op per ISA)."""
    print(f"[train_step] noise on {NOISE_SHAPE}: {repeats} repeats of {calls} calls", flush=True)
    candidates = noise_candidates(NOISE_SHAPE)

    def looped(run):
        def loop():
            for _ in range(calls):
                run()

        return loop

    seconds = _common.time_interleaved(
        {name: looped(run) for name, run in candidates.items()}, repeats
    )
    ms = {name: _common.ms_per_step(s, calls) for name, s in seconds.items()}
    library = tfpriors.ops.library
    widest = library.noise_isa()
    per_isa = {}
    if widest is not None:
        for isa in library.NOISE_ISAS:
            try:
                library.select_noise_isa(isa)
            except ValueError:
                continue  # this CPU does not run it
            try:
                run = looped(candidates["fused"])
                per_isa[isa] = _common.ms_per_step(
                    _common.time_interleaved({isa: run}, repeats)[isa], calls
                )
            finally:
                library.select_noise_isa("auto")
    return ms, per_isa, widest


def noise_case(repeats, calls):
    ms, per_isa, widest = time_noise(repeats, calls)
    medians = {name: _common.median(values) for name, values in ms.items()}
    result = dict(
        description=(
            f"mean + sqrt(variance + 1e-8) * eps on {NOISE_SHAPE} float32 "
            f"({int(np.prod(NOISE_SHAPE)):,} elements): tfpriors.ops.lrt_sample vs "
            "tf.random.stateless_normal + sqrt + multiply-add"
        ),
        ms_per_call=ms,
        median_ms_per_call=medians,
        noise_isa=widest,
        fused_ms_per_isa=per_isa,
        median_fused_ms_per_isa={k: _common.median(v) for k, v in per_isa.items()},
        goal=None,
    )
    if "fused" in medians:
        speedup = medians["tensorflow"] / medians["fused"]
        result["speedup"] = speedup
        result["speedup_backward"] = medians["tensorflow_backward"] / medians["fused_backward"]
        result["goal"] = _common.goal_row(
            f"Fused noise op, {int(np.prod(NOISE_SHAPE)) / 1e6:.1f}M elements: speed-up "
            "over tf.random.normal + multiply-add",
            speedup,
            "x",
            "tf.random.stateless_normal + sqrt + FMA",
            1.0,
            ">=",
            NOISE_GOAL,
        )
    return result


def where_time_goes(medians):
    """Splits Sparse VD's step over the reference measurements of the same run."""
    dense = medians["dense"]
    floor = medians["two_gemm"]
    noise = medians["bare_local_reparameterization"] - floor
    terms = medians["sparse_vd"] - medians["bare_local_reparameterization"]
    return (
        f"Sparse VD's step is {medians['sparse_vd'] / dense:.2f}x the baseline: the two "
        f"matmuls/convolutions alone (two_gemm) are {floor / dense:.2f}x; the fused noise "
        f"adds {noise / dense:+.2f}x and the per-weight terms (log_alpha, KL, their "
        f"gradients) {terms / dense:+.2f}x. With the pure-TF noise the layer takes "
        f"{medians['sparse_vd_tensorflow_noise'] / dense:.2f}x."
    )


def case(description, ms, candidate, goal_op=None, goal_value=None, name=None, **extra):
    medians = {key: _common.median(values) for key, values in ms.items()}
    ratio = medians[candidate] / medians["dense"]
    row = None
    if goal_op is not None:
        row = _common.goal_row(
            name, medians[candidate], "ms/step", "dense", medians["dense"], goal_op, goal_value
        )
        row["note"] = where_time_goes(medians)
    return dict(
        description=description,
        ms_per_step=ms,
        median_ms_per_step=medians,
        min_ms_per_step={key: min(values) for key, values in ms.items()},
        ratio=ratio,
        ratios={key: value / medians["dense"] for key, value in medians.items()},
        per_repeat_ratio=[c / b for c, b in zip(ms[candidate], ms["dense"])],
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
    parser.add_argument(
        "--skip-peer",
        action="store_true",
        help="leave out the Keras 2 peer (TFP), e.g. where tf_keras is not installed",
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
            "sparse_vd_tensorflow_noise": mlp(with_tensorflow_noise(tfpriors.layers.SparseVDDense)),
            "bare_local_reparameterization": mlp(BareLocalReparameterization),
            "two_gemm": mlp(lambda n, **kw: BareLocalReparameterization(n, noise=False, **kw)),
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
        2.05,
        "SparseVDDense MLP 784-300-100-10 train step (batch 128)",
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
            "sparse_vd_tensorflow_noise": conv(
                with_tensorflow_noise(tfpriors.layers.SparseVDConv2D)(
                    CONV_FILTERS, 3, padding="same"
                )
            ),
            "bare_local_reparameterization": conv(
                BareLocalReparameterization(CONV_FILTERS, conv=True)
            ),
            "two_gemm": conv(BareLocalReparameterization(CONV_FILTERS, conv=True, noise=False)),
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
        2.15,
        "SparseVDConv2D 32x32x32->64 3x3 train step (batch 32)",
        batch_size=CONV_BATCH,
        steps_per_repeat=settings.conv_steps,
    )

    noise = noise_case(settings.repeats, settings.noise_calls)

    job = {
        "batch_size": MLP_BATCH,
        "input_dim": MLP_INPUT,
        "units": list(MLP_UNITS),
        "dataset_size": DATASET_SIZE,
        "steps": settings.mlp_steps,
        "repeats": settings.repeats,
    }
    reply = {"machine": None}
    if not args.skip_peer:
        reply = _common.run_keras2_worker("_tfp_worker.py", job, "train_step")
        cases["tfp_peer"] = case(
            "Peer (Keras 2): tfp.layers.DenseLocalReparameterization MLP 784-300-100-10, "
            "batch 128, vs a tf.keras Dense MLP timed in the same subprocess",
            reply["ms_per_step"],
            "tfp_local_reparameterization",
            batch_size=MLP_BATCH,
            steps_per_repeat=settings.mlp_steps,
        )

    if "speedup" in noise:
        print(
            f"[train_step] noise: tensorflow {noise['median_ms_per_call']['tensorflow']:.2f} ms, "
            f"fused {noise['median_ms_per_call']['fused']:.2f} ms ({noise['noise_isa']}); "
            f"speed-up {noise['speedup']:.1f}x, {noise['speedup_backward']:.1f}x with backward",
            flush=True,
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
        "noise": noise,
        "goals": [noise["goal"]] * (noise["goal"] is not None)
        + [c["goal"] for c in cases.values() if c["goal"] is not None],
        "seconds": time.perf_counter() - start,
    }
    _common.save_result("train_step", args.quick, payload)


if __name__ == "__main__":
    main()
