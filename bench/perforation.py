"""Perforated convolutions: PerforatedConv2D vs Conv2D per mask and rate, LiteRT, accuracy.

Forward time of one layer (3x3, stride 1, "same", bias, ReLU) at batch 1 and
32 on VGG-like shapes 56x56x128 -> 128 and 28x28x256 -> 256, against
`keras.layers.Conv2D` with the same weights (oneDNN), as medians of
interleaved repeats. Masks: "lattice" (every other row at rate 0.5, every
other row and column at 0.75; no lattice has rate 0.25), the pseudo-random
"grid", "uniform", and "impact-like" (the top positions of a smooth random
score map, the shape impact masks have). The layer runs with
implementation="auto" (what users get: the fastest exact implementation,
measured when the layer is built); a breakdown times each implementation
("strided", "fused", "reference", "dense") for the lattice and uniform masks.
Goals: lattice >= 1.6x at rate 0.5 and >= 2.4x (batch 1) / 3.0x (batch 32) at
0.75; irregular masks >= 1.4x at 0.5 and >= 2.2x at 0.75; no case below 1.0x
at rate >= 0.25; training step (forward + gradients of input and kernel,
batch 32) >= 1.3x at rate 0.5.

LiteRT, 1 thread, batch 1: the perforated layer exported by
`tfpriors.export.to_tflite` (every mask as GATHER + FULLY_CONNECTED + GATHER,
builtin ops only, verified against Keras; on LiteRT this beats a strided
CONV_2D with a GATHER fill) against the same layer exported as CONV_2D, at
rates 0.5 and 0.75 on the 28x28x256 -> 256 layer. Goals >= 1.6x at 0.5 and
>= 2.2x at 0.75.

Accuracy: a two-convolution digits net trained once, then both
convolutions perforated at rates 0.25 / 0.5 / 0.75 with each mask type
(uniform, grid, lattice, structure from its 3x3/2 max pooling, impact
measured on 300 held-out training images), no fine-tuning; test error with
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
from scipy import ndimage  # noqa: E402

import tfpriors  # noqa: E402
from tfpriors.io import atomic_path  # noqa: E402
from tfpriors.layers import PerforatedConv2D  # noqa: E402
from tfpriors.perforation import make_mask, mask_from_scores  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

LAYERS = {"56x56x128->128": (56, 128, 128), "28x28x256->256": (28, 256, 256)}
RATES = (0.25, 0.5, 0.75)
TIMED_MASKS = ("lattice", "grid", "uniform", "impact-like")
IRREGULAR = ("grid", "uniform", "impact-like")
BREAKDOWN_MASKS = ("lattice", "uniform")
BREAKDOWN_RATES = (0.5, 0.75)
IMPLEMENTATIONS = ("strided", "fused", "reference", "dense")
LITERT_GOALS = {0.5: 1.6, 0.75: 2.2}
TRAIN_GOAL = 1.3
MASKS = ("uniform", "grid", "lattice", "structure", "impact")
ACCURACY_RATES = (0.25, 0.5, 0.75)


def forward_goal(mask, rate, batch):
    """The speed-up goal of a forward case, or None."""
    if mask == "lattice":
        return {0.5: 1.6, 0.75: 2.4 if batch == 1 else 3.0}.get(rate)
    return {0.5: 1.4, 0.75: 2.2}.get(rate, 1.0)


def timing_mask(kind, output_shape, rate):
    """The mask of a timed layer; "impact-like" keeps the top of a smooth random map."""
    if kind == "impact-like":
        noise = np.random.default_rng(0).normal(size=output_shape)
        return mask_from_scores(ndimage.gaussian_filter(noise, 3.0), rate, seed=0)
    mask = make_mask(kind, output_shape, rate, seed=0)
    return None if mask.rate == 0.0 else mask  # no lattice has rate 0.25


def _runner(layer, x, training):
    if training:

        def step():
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(layer(x, training=True))
            return tape.gradient(loss, [x, layer.kernel])

        function = tf.function(step)
    else:
        function = tf.function(lambda: layer(x, training=False))

    def run():
        for tensor in tf.nest.flatten(function()):
            tensor.numpy()

    return run


def layer_candidates(size, cin, cout, batch, training):
    """Zero-argument callables: Conv2D, then PerforatedConv2D per mask, rate and
    implementation ("auto" everywhere, each implementation in the breakdown)."""
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(batch, size, size, cin)).astype("float32"))
    conv = keras.layers.Conv2D(cout, 3, padding="same", activation="relu")
    conv.build(x.shape)
    layers, chosen = {"Conv2D": conv}, {}
    rates = (0.5,) if training else RATES
    for kind in BREAKDOWN_MASKS if training else TIMED_MASKS:
        for rate in rates:
            mask = timing_mask(kind, (size, size), rate)
            if mask is None:
                continue
            names = ["auto"]
            if not training and kind in BREAKDOWN_MASKS and rate in BREAKDOWN_RATES:
                names += [n for n in IMPLEMENTATIONS if n != "fused" or tfpriors.ops.has_fused_op()]
            for implementation in names:
                if implementation == "strided" and kind != "lattice":
                    continue
                layer = PerforatedConv2D(
                    cout,
                    3,
                    padding="same",
                    mask=mask,
                    activation="relu",
                    implementation=implementation,
                )
                layer.build(x.shape)
                layer.set_weights(conv.get_weights())
                key = f"{kind}@{rate}:{implementation}"
                layers[key] = layer
                if implementation == "auto":
                    chosen[f"{kind}@{rate}"] = (
                        layer._training_implementation
                        if training
                        else layer._selection.for_batch(batch)
                    )
    candidates = {name: _runner(layer, x, training) for name, layer in layers.items()}
    if not training:
        candidates.update(bounds(x, conv))
    return candidates, chosen


def bounds(x, conv):
    """The pieces that bound the perforated layer, timed beside it: the strided
    convolutions a lattice runs, tf.matmul on the kept im2col rows (the GEMM of
    irregular masks, im2col not included), and one elementwise pass over an
    output-sized tensor (what the fill costs at least)."""
    kernel, filters = conv.kernel, conv.filters
    batch, size, _, cin = x.shape
    rng = np.random.default_rng(1)
    output = tf.constant(rng.normal(size=(batch, size, size, filters)).astype("float32"))
    pieces = {
        f"bound:strided{stride}": tf.function(
            lambda stride=stride: tf.nn.conv2d(x, kernel, stride, "SAME")
        )
        for stride in ((2, 1), (2, 2))
    }
    for rate in BREAKDOWN_RATES:
        rows = tf.constant(
            rng.normal(size=(int(batch * size * size * (1 - rate)), 9 * cin)).astype("float32")
        )
        matrix = tf.reshape(kernel, (9 * cin, filters))
        pieces[f"bound:matmul@{rate}"] = tf.function(lambda rows=rows: tf.matmul(rows, matrix))
    pieces["bound:output pass"] = tf.function(lambda: output * 2.0)

    def runner(function):
        def run():
            function().numpy()

        return run

    return {name: runner(f) for name, f in pieces.items()}


def time_layers(quick):
    rows = []
    batches = (1, 8) if quick else (1, 32)
    for label, (size, cin, cout) in LAYERS.items():
        if quick:
            size //= 2
        for batch in batches:
            for training in (False, True):
                if training and batch == 1:
                    continue
                repeats = 3 if quick else (41 if batch == 1 else 7)
                candidates, chosen = layer_candidates(size, cin, cout, batch, training)
                times = _common.time_interleaved(candidates, repeats)
                medians = {name: _common.median(t) * 1e3 for name, t in times.items()}
                rows.append(
                    {
                        "layer": label if not quick else f"{label} (half size)",
                        "batch": batch,
                        "kind": "train step" if training else "forward",
                        "repeats": repeats,
                        "ms": medians,
                        "auto_chose": chosen,
                        "all_ms": {n: [1e3 * s for s in t] for n, t in times.items()},
                    }
                )
                print(
                    f"[perforation] {label} batch {batch} "
                    f"{'train' if training else 'forward'}: Conv2D {medians['Conv2D']:.2f} "
                    "ms; "
                    + ", ".join(
                        f"{n} {medians['Conv2D'] / v:.2f}x"
                        for n, v in medians.items()
                        if n != "Conv2D"
                    ),
                    flush=True,
                )
    return rows


def litert(quick, tmp):
    from tfpriors_mobile import load_interpreter, median_latency_ms

    size, cin, cout = LAYERS["28x28x256->256"]
    if quick:
        size //= 2
    inputs = keras.Input((size, size, cin))
    conv_model = keras.Model(
        inputs, keras.layers.Conv2D(cout, 3, padding="same", name="conv")(inputs)
    )
    models = {"CONV_2D": conv_model}
    for kind in ("lattice", "uniform"):
        for rate in LITERT_GOALS:
            models[f"{kind}@{rate}"] = tfpriors.perforation.perforate(
                conv_model, {"conv": rate}, mask=kind
            )
    x = np.random.default_rng(0).normal(size=(4, size, size, cin)).astype("float32")
    reports = {
        name: tfpriors.export.to_tflite(
            model,
            os.path.join(tmp, f"{name.replace('@', '_')}.tflite"),
            verify_data=x,
            compare_dense=False,
            latency_repeats=3,
        )
        for name, model in models.items()
    }
    interpreters = {
        name: load_interpreter(model_path=r.path, num_threads=1)[0] for name, r in reports.items()
    }
    repeats = 10 if quick else 30
    times = {name: [] for name in interpreters}
    for _ in range(3):
        for name, interpreter in interpreters.items():
            times[name].append(median_latency_ms(interpreter, x[:1], repeats=repeats))
    return {
        "layer": f"{size}x{size}x{cin}->{cout}",
        "ms": {name: _common.median(t) for name, t in times.items()},
        "rounds_ms": times,
        "ops": {name: sorted(r.ops) for name, r in reports.items()},
        "max_abs_diff": {name: r.max_abs_diff for name, r in reports.items()},
        "size_bytes": {name: r.size_bytes for name, r in reports.items()},
    }


def cpu_flags():
    """The SIMD extensions of this CPU that matter to convolutions."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next(line for line in f if line.startswith("flags")).split(":")[1].split()
    except (OSError, StopIteration):
        return []
    wanted = (
        "avx",
        "avx2",
        "fma",
        "avx512f",
        "avx512bw",
        "avx512_vnni",
        "avx512_bf16",
        "avx512_fp16",
        "amx_tile",
    )
    return [flag for flag in wanted if flag in flags]


@keras.saving.register_keras_serializable(package="tfpriors_bench")
class ZeroFillConv2D(keras.layers.Layer):
    """Bench-only baseline: the convolution with perforated positions set to zero."""

    def __init__(self, kept_image, filters, activation=None, **kwargs):
        super().__init__(**kwargs)
        self.kept_image = np.asarray(kept_image, "float32")
        self.filters = filters
        self.activation = keras.activations.get(activation)

    def build(self, input_shape):
        self.kernel = self.add_weight(name="kernel", shape=(3, 3, input_shape[-1], self.filters))
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
        new = ZeroFillConv2D(
            fast.get_layer(layer.name).mask.kept_image(),
            layer.filters,
            activation=layer.activation,
            name=layer.name,
        )
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
    model.compile(
        keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    model.fit(x_train, y_train, epochs=8 if quick else 30, batch_size=64, verbose=0)
    base = error(model, x_test, y_test)
    rows = []
    for mask in MASKS:
        for rate in ACCURACY_RATES:
            fast = tfpriors.perforation.perforate(
                model, {"conv1": rate, "conv2": rate}, mask=mask, data=(x_held, y_held), seed=0
            )
            rows.append(
                {
                    "mask": mask,
                    "rate": rate,
                    "error_nearest": error(fast, x_test, y_test),
                    "error_zero": error(zero_fill_model(model, fast), x_test, y_test),
                }
            )
            print(
                f"[perforation] digits {mask} rate {rate}: nearest "
                f"{rows[-1]['error_nearest']:.2%}, zero {rows[-1]['error_zero']:.2%}",
                flush=True,
            )
    return {"baseline_error": base, "rows": rows}


def plot(accuracy, path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.5, 4), dpi=100)
    FigureCanvasAgg(figure)
    axis = figure.add_subplot()
    colours = dict(zip(MASKS, ("#1f77b4", "#ff7f0e", "#9467bd", "#2ca02c", "#d62728")))
    for mask in MASKS:
        rows = [r for r in accuracy["rows"] if r["mask"] == mask]
        rates = [0.0] + [r["rate"] for r in rows]
        for key, style, label in (
            ("error_nearest", "-", "nearest fill"),
            ("error_zero", "--", "zero fill"),
        ):
            errors = [accuracy["baseline_error"]] + [r[key] for r in rows]
            axis.plot(
                rates,
                [100 * e for e in errors],
                style,
                marker="o",
                color=colours[mask],
                label=f"{mask}, {label}",
            )
    axis.set_xlabel("perforation rate of both convolutions")
    axis.set_ylabel("test error (%)")
    axis.set_title("Digits conv net, perforated without fine-tuning")
    axis.set_yscale("log")
    axis.legend(fontsize=7, ncol=2)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png")


def _miss_reason(row, kind, rate):
    """Why a forward case missed its goal, from the figures timed beside it."""
    ms = row["ms"]
    base = ms["Conv2D"]
    auto = ms[f"{kind}@{rate}:auto"]
    parts = [f"auto ran {row['auto_chose'][f'{kind}@{rate}']}"]
    for implementation in IMPLEMENTATIONS:
        key = f"{kind}@{rate}:{implementation}"
        if key in ms:
            parts.append(f"{implementation} {base / ms[key]:.2f}x")
    if kind == "lattice":
        stride = "(2, 1)" if rate == 0.5 else "(2, 2)"
        conv = ms[f"bound:strided{stride}"]
        parts.append(
            f"the strided convolution alone {base / conv:.2f}x ({conv:.2f} ms); "
            f"fill, bias and ReLU add {auto - conv:.2f} ms, one pass over the "
            f"output takes {ms['bound:output pass']:.2f} ms"
        )
    elif f"bound:matmul@{rate}" in ms:
        gemm = ms[f"bound:matmul@{rate}"]
        parts.append(
            f"tf.matmul on the kept im2col rows alone {base / gemm:.2f}x "
            f"({gemm:.2f} ms, oneDNN); the im2col, fill, bias and ReLU add "
            f"{auto - gemm:.2f} ms"
        )
    return "; ".join(parts)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, few repeats")
    args = parser.parse_args()
    start = time.perf_counter()
    fused = tfpriors.ops.has_fused_op()
    rows = time_layers(args.quick)
    goals = []
    for row in rows:
        where = f"{row['layer']}, batch {row['batch']}"
        for key, value in row["ms"].items():
            if not key.endswith(":auto"):
                continue
            kind, rate = key[: -len(":auto")].split("@")
            rate = float(rate)
            ratio = row["ms"]["Conv2D"] / value
            if row["kind"] == "train step":
                goal = TRAIN_GOAL
                name = f"{where}, {kind} @ {rate:g}: train step speed-up"
            else:
                goal = forward_goal(kind, rate, row["batch"])
                name = f"{where}, {kind} @ {rate:g}: forward speed-up"
            note = ""
            if ratio < goal:
                note = (
                    _miss_reason(row, kind, rate)
                    if row["kind"] == "forward"
                    else f"ran {row['auto_chose'][f'{kind}@{rate}']}"
                )
                note += f"; load average {os.getloadavg()[0]:.1f}"
            goals.append(
                _common.goal_row(name, ratio, "x", "Conv2D (oneDNN)", 1.0, ">=", goal, note=note)
            )
    with tempfile.TemporaryDirectory() as tmp:
        lite = litert(args.quick, tmp)
    for kind in ("lattice", "uniform"):
        for rate, goal in LITERT_GOALS.items():
            goals.append(
                _common.goal_row(
                    f"LiteRT 1 thread, {lite['layer']}, {kind} @ {rate:g}: export speed-up",
                    lite["ms"]["CONV_2D"] / lite["ms"][f"{kind}@{rate}"],
                    "x",
                    "CONV_2D export",
                    1.0,
                    ">=",
                    goal,
                )
            )
    accuracy = accuracy_vs_rate(args.quick)
    picture = os.path.join(_common.results_dir(args.quick), "perforation_digits.png")
    plot(accuracy, picture)
    payload = {
        **_common.result_header("perforation", "Perforated convolutions", __doc__, args.quick),
        "repeats": 7 if not args.quick else 3,
        "repeat_kind": "interleaved timing repeats at batch 32 (41 at batch 1; LiteRT: 3 "
        "rounds of 30 invokes; accuracy: one run, seed 0)",
        "fused_op": fused,
        "gemm": tfpriors.ops.gemm_backend(),
        "cpu_flags": cpu_flags(),
        "layers": rows,
        "litert": lite,
        "accuracy": accuracy,
        "picture": os.path.relpath(picture, _common.BENCH_DIR),
        "goals": goals,
        "seconds": time.perf_counter() - start,
    }
    _common.save_result("perforation", args.quick, payload)


if __name__ == "__main__":
    main()
