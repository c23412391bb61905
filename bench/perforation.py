"""Perforated convolutions: fused op vs Conv2D, LiteRT export, accuracy vs rate on digits.

Forward time of one layer (3x3, stride 1, "same"), batch 1 and 32, on
VGG-like shapes 56x56x128 -> 128 and 28x28x256 -> 256 at perforation rates
0.5 and 0.75 (grid masks): the fused custom op (`make ops`), the pure-TF
path (gathers + one matmul) and `keras.layers.Conv2D` (oneDNN), as medians
of interleaved repeats so that load from other processes on this shared
machine hits all candidates alike. Goals: fused op >= 1.6x (rate 0.5) and
>= 3.0x (rate 0.75) faster than Conv2D (theory 2x / 4x). A training step
(forward + backward of the layer, gradients of input and kernel) is
reported as the ratio Conv2D / perforated (no goal).

LiteRT, 1 thread, batch 1: the perforated layer exported by
`tfpriors.export.to_tflite` (GATHER + FULLY_CONNECTED + GATHER, builtin ops
only, verified against Keras) against the same layer exported as CONV_2D,
at rate 0.5 on the 28x28x256 -> 256 layer. Goal >= 1.4x.

Accuracy: a two-convolution digits net trained once, then both
convolutions perforated at rates 0.25 / 0.5 / 0.75 with each mask type
(uniform, grid, structure from its 3x3/2 max pooling, impact measured on
300 held-out training images), no fine-tuning; test error with
nearest-neighbour fill (the method) and with zero fill (perforated
positions set to zero before bias and activation). Plot:
bench/results/perforation_digits.png.

    python bench/perforation.py [--quick]
"""

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfpriors  # noqa: E402
from tfpriors.io import atomic_path  # noqa: E402
from tfpriors.layers import PerforatedConv2D  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

LAYERS = {"56x56x128->128": (56, 128, 128), "28x28x256->256": (28, 256, 256)}
RATES = (0.5, 0.75)
GOALS = {0.5: 1.6, 0.75: 3.0}
LITERT_GOAL = 1.4
MASKS = ("uniform", "grid", "structure", "impact")
ACCURACY_RATES = (0.25, 0.5, 0.75)


def layer_candidates(size, cin, cout, batch, training):
    """Zero-argument callables: Conv2D, then fused and pure-TF perforated per rate."""
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(batch, size, size, cin)).astype("float32"))
    conv = keras.layers.Conv2D(cout, 3, padding="same")
    conv.build(x.shape)
    layers = {"Conv2D": conv}
    for rate in RATES:
        for implementation in ("fused", "reference"):
            layer = PerforatedConv2D(cout, 3, padding="same", rate=rate, mask="grid", seed=0,
                                     implementation=implementation)
            layer.build(x.shape)
            layer.set_weights(conv.get_weights())
            layers[f"{implementation}@{rate}"] = layer
    candidates = {}
    for name, layer in layers.items():
        if training:
            def step(layer=layer):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    loss = tf.reduce_sum(layer(x))
                return tape.gradient(loss, [x, layer.kernel])

            fn = tf.function(step)
        else:
            fn = tf.function(lambda layer=layer: layer(x))
        def run(fn=fn):
            for tensor in tf.nest.flatten(fn()):
                tensor.numpy()

        candidates[name] = run
    return candidates


def time_layers(quick):
    rows = []
    batches = (1, 8) if quick else (1, 32)
    for label, (size, cin, cout) in LAYERS.items():
        if quick:
            size //= 2
        for batch in batches:
            for training in (False, True):
                repeats = 3 if quick else (15 if batch == 1 else 5)
                if training and batch == 1:
                    continue
                times = _common.time_interleaved(
                    layer_candidates(size, cin, cout, batch, training), repeats)
                medians = {name: _common.median(t) * 1e3 for name, t in times.items()}
                rows.append({"layer": label if not quick else f"{label} (half size)",
                             "batch": batch, "kind": "train step" if training else "forward",
                             "repeats": repeats, "ms": medians, "all_ms": {
                                 n: [1e3 * s for s in t] for n, t in times.items()}})
                print(f"[perforation] {label} batch {batch} "
                      f"{'train' if training else 'forward'}: "
                      + ", ".join(f"{n} {v:.2f} ms" for n, v in medians.items()), flush=True)
    return rows


def litert(quick, tmp):
    from tfpriors_mobile import load_interpreter, median_latency_ms

    size, cin, cout = LAYERS["28x28x256->256"]
    if quick:
        size //= 2
    inputs = keras.Input((size, size, cin))
    conv_model = keras.Model(inputs, keras.layers.Conv2D(cout, 3, padding="same",
                                                         name="conv")(inputs))
    fast = tfpriors.perforation.perforate(conv_model, {"conv": 0.5}, mask="grid")
    x = np.random.default_rng(0).normal(size=(4, size, size, cin)).astype("float32")
    reports = {}
    for name, model in (("perforated", fast), ("CONV_2D", conv_model)):
        reports[name] = tfpriors.export.to_tflite(
            model, os.path.join(tmp, f"{name}.tflite"), verify_data=x, compare_dense=False,
            latency_repeats=3)
    interpreters = {name: load_interpreter(model_path=r.path, num_threads=1)[0]
                    for name, r in reports.items()}
    repeats = 10 if quick else 30
    times = {name: [] for name in interpreters}
    for _ in range(3):
        for name, interpreter in interpreters.items():
            times[name].append(median_latency_ms(interpreter, x[:1], repeats=repeats))
    return {"layer": f"{size}x{size}x{cin}->{cout}", "rate": 0.5,
            "ms": {name: _common.median(t) for name, t in times.items()},
            "rounds_ms": times,
            "ops": {name: sorted(r.ops) for name, r in reports.items()},
            "max_abs_diff": {name: r.max_abs_diff for name, r in reports.items()},
            "size_bytes": {name: r.size_bytes for name, r in reports.items()}}


@keras.saving.register_keras_serializable(package="tfpriors_bench")
class ZeroFillConv2D(keras.layers.Layer):
    """Bench-only baseline: the convolution with perforated positions set to zero."""

    def __init__(self, kept_image, filters, activation=None, **kwargs):
        super().__init__(**kwargs)
        self.kept_image = np.asarray(kept_image, "float32")
        self.filters = filters
        self.activation = keras.activations.get(activation)

    def build(self, input_shape):
        self.kernel = self.add_weight(name="kernel", shape=(3, 3, input_shape[-1],
                                                            self.filters))
        self.bias = self.add_weight(name="bias", shape=(self.filters,))

    def call(self, x):
        y = keras.ops.conv(x, self.kernel, padding="same") * self.kept_image[None, :, :, None]
        return self.activation(y + self.bias)


def digits_net():
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv1")(inputs)
    h = keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="conv2")(h)
    h = keras.layers.MaxPooling2D(3, 2, name="pool")(h)
    h = keras.layers.Flatten()(h)
    return keras.Model(inputs, keras.layers.Dense(10, name="head")(h))


def zero_fill_model(model, fast):
    def replace(layer):
        if layer.name not in ("conv1", "conv2"):
            return None
        new = ZeroFillConv2D(fast.get_layer(layer.name).mask.kept_image(), layer.filters,
                             activation=layer.activation, name=layer.name)
        return new, lambda target, source=layer: target.set_weights(source.get_weights())

    from tfpriors._rewrite import rewrite_model

    return rewrite_model(model, replace)


def error(model, x, y):
    return float(np.mean(model.predict(x, verbose=0, batch_size=256).argmax(1) != y))


def accuracy_vs_rate(quick):
    (x, y), (x_test, y_test) = tfpriors.datasets.load_digits()
    x, x_test = x.reshape(-1, 8, 8, 1), x_test.reshape(-1, 8, 8, 1)
    x_train, y_train, x_held, y_held = x[:-300], y[:-300], x[-300:], y[-300:]
    keras.utils.set_random_seed(0)
    model = digits_net()
    model.compile(keras.optimizers.Adam(3e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_train, y_train, epochs=8 if quick else 30, batch_size=64, verbose=0)
    base = error(model, x_test, y_test)
    rows = []
    for mask in MASKS:
        for rate in ACCURACY_RATES:
            fast = tfpriors.perforation.perforate(model, {"conv1": rate, "conv2": rate},
                                                  mask=mask, data=(x_held, y_held), seed=0)
            rows.append({"mask": mask, "rate": rate,
                         "error_nearest": error(fast, x_test, y_test),
                         "error_zero": error(zero_fill_model(model, fast), x_test, y_test)})
            print(f"[perforation] digits {mask} rate {rate}: nearest "
                  f"{rows[-1]['error_nearest']:.2%}, zero {rows[-1]['error_zero']:.2%}",
                  flush=True)
    return {"baseline_error": base, "rows": rows}


def plot(accuracy, path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.5, 4), dpi=100)
    FigureCanvasAgg(figure)
    axis = figure.add_subplot()
    colours = dict(zip(MASKS, ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728")))
    for mask in MASKS:
        rows = [r for r in accuracy["rows"] if r["mask"] == mask]
        rates = [0.0] + [r["rate"] for r in rows]
        for key, style, label in (("error_nearest", "-", "nearest fill"),
                                  ("error_zero", "--", "zero fill")):
            errors = [accuracy["baseline_error"]] + [r[key] for r in rows]
            axis.plot(rates, [100 * e for e in errors], style, marker="o",
                      color=colours[mask], label=f"{mask}, {label}")
    axis.set_xlabel("perforation rate of both convolutions")
    axis.set_ylabel("test error (%)")
    axis.set_title("Digits conv net, perforated without fine-tuning")
    axis.set_yscale("log")
    axis.legend(fontsize=7, ncol=2)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, few repeats")
    args = parser.parse_args()
    start = time.perf_counter()
    fused = tfpriors.ops.has_fused_op()
    rows = time_layers(args.quick)
    goals = []
    for row in rows:
        if row["kind"] != "forward":
            continue
        for rate in RATES:
            note = "" if fused else "fused op not built: this is the pure-TF path"
            ratio = row["ms"]["Conv2D"] / row["ms"][f"fused@{rate}"]
            if fused and ratio < GOALS[rate]:
                note = (f"missed: {ratio:.2f}x vs theory {1 / (1 - rate):.0f}x; the op's "
                        "GEMM is an Eigen contraction on TF's thread pool while Conv2D runs "
                        "oneDNN's tuned convolution, and the im2col copy and fill pass are "
                        "extra memory traffic; pure TF (oneDNN matmul) "
                        f"{row['ms']['Conv2D'] / row['ms'][f'reference@{rate}']:.2f}x; "
                        f"load average {os.getloadavg()[0]:.1f} on "
                        f"{_common.usable_cores()} cores")
            goals.append(_common.goal_row(
                f"{row['layer']}, batch {row['batch']}, rate {rate}: fused op speed-up",
                row["ms"]["Conv2D"] / row["ms"][f"fused@{rate}"], "x", "Conv2D (oneDNN)",
                1.0, ">=", GOALS[rate], note=note))
    with tempfile.TemporaryDirectory() as tmp:
        lite = litert(args.quick, tmp)
    goals.append(_common.goal_row(
        f"LiteRT 1 thread, {lite['layer']}, rate 0.5: perforated export speed-up",
        lite["ms"]["CONV_2D"] / lite["ms"]["perforated"], "x", "CONV_2D export", 1.0, ">=",
        LITERT_GOAL))
    accuracy = accuracy_vs_rate(args.quick)
    picture = os.path.join(_common.results_dir(args.quick), "perforation_digits.png")
    plot(accuracy, picture)
    payload = {
        **_common.result_header("perforation", "Perforated convolutions", __doc__,
                                args.quick),
        "repeats": 5 if not args.quick else 3,
        "repeat_kind": "interleaved timing repeats at batch 32 (15 at batch 1; LiteRT: 3 "
                       "rounds of 30 invokes; accuracy: one run, seed 0)",
        "fused_op": fused,
        "layers": rows, "litert": lite, "accuracy": accuracy,
        "picture": os.path.relpath(picture, _common.BENCH_DIR),
        "goals": goals, "seconds": time.perf_counter() - start,
    }
    _common.save_result("perforation", args.quick, payload)


if __name__ == "__main__":
    main()
