"""Bayesian dark knowledge on real images: SGLD ensembles distilled into one network.

On the offline MNIST sample (``tfpriors.datasets.load_mnist_sample``: 4,000
training and 1,000 test images, flattened to 784 pixels), with 784-400-10
MLPs throughout: a single model trained with SGD (momentum; its Gaussian
prior as an L2 penalty: the MAP estimate); an SGLD ensemble of k posterior
samples (``tfpriors.distill.SGLD`` with a cyclical cosine step size, one
sample at the end of each cycle after a one-cycle burn-in, kept by
``PosteriorSampler``; the ensemble averages their probabilities); a student
of the same size distilled offline from that ensemble
(``tfpriors.distill.Distiller``) on randomly shifted, noisy copies of the
training images, a fresh set every epoch, without labels; and a student
trained online by ``BayesianDarkKnowledge`` against the same SGLD chain.
Accuracy, NLL and ECE on the 1,000 test images, and the inference time of
each model relative to the ensemble (medians of interleaved repeats over the
test set; the CPU may be shared, interleaving keeps the ratios fair).

Hyperparameters were chosen before the run on a validation split: 100
images per class held out of the 4,000 training images, models trained on
the other 3,000 (``python bench/distill.py --tune`` reruns that search and
writes ``results/tuning/distill.json``), never on the test set. The single
model got its own search (learning rate, prior variance, epochs), so it is
the best single model the validation split could pick, not one sharing the
sampler's settings. Metrics come from one training run per model (seed 0);
a paired bootstrap over the test images (1,000 resamples) gives each goal
ratio a 90% interval, recorded beside it.

Goals: the SGLD ensemble's NLL at most the single SGD model's; the offline
student's NLL within 10% of the ensemble's (at 1/k of its multiply-adds)
and at most the single model's. Reported besides: the online BDK student
against the ensemble (within 10%, cheaper by k, better than the single
model). The paper's anchor (Balan et al., NeurIPS 2015, full MNIST, 60,000
images, 784-400-400-10 nets): the distilled student came close to the SGLD
ensemble's test log-likelihood at 1/k of its cost, and both beat SGD.

Diabetes regression (scikit-learn's bundled data, 80/20 split, 10-50-2 MLP
predicting mean and log variance; under a minute): RMSE (in the target's
units) and Gaussian NLL for the teacher (the last SGLD sample), the online
BDK student, the SGLD ensemble (moment-matched mixture), the offline student
and a single SGD model. No goal.

The ``--quick`` smoke run uses scikit-learn's 8x8 digits (64-100-10 MLPs)
and tiny settings.

    python bench/distill.py [--quick] [--tune]
"""

import argparse
import math
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfpriors  # noqa: E402
from tfpriors import calibration, distill  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

# The full run: chosen on the validation split (module docstring, --tune).
FULL_SETTINGS = {
    "data": "MNIST sample",
    "hidden": 400,
    "batch_size": 64,
    # The single SGD model (its own validation search).
    "sgd_lr": 0.1,
    "sgd_prior_variance": 1.0,
    "sgd_epochs": 60,
    # The SGLD chain: cyclical cosine step size, one sample per cycle end.
    "prior_variance": 0.1,
    "lr": 5e-4,
    "temperature": 0.03,
    "cycle_epochs": 4,
    "cycles": 15,
    "burn_in_cycles": 1,
    # The offline student: fresh shifted, noisy copies every epoch, no labels.
    "distill_epochs": 12,
    "distill_copies": 4,
    "distill_batch_size": 256,
    "input_noise": 0.1,
    "max_shift": 2,
    "distill_temperature": 2.0,
    # The online BDK student (same chain settings as the sampler).
    "bdk_input_noise": 0.1,
    "bdk_burn_in_cycles": 1,
    "timing_repeats": 30,
    "bootstrap": 1000,
}
# The smoke path: 8x8 digits, a few epochs (seconds).
QUICK_SETTINGS = dict(
    FULL_SETTINGS,
    data="digits",
    hidden=100,
    sgd_lr=0.05,
    sgd_epochs=4,
    prior_variance=1.0,
    lr=1e-3,
    temperature=0.03,
    cycle_epochs=1,
    cycles=4,
    distill_epochs=2,
    distill_copies=2,
    max_shift=0,
    timing_repeats=3,
    bootstrap=100,
)
# The validation search (--tune): each entry overrides FULL_SETTINGS.
SGD_GRID = [{"sgd_lr": lr, "sgd_prior_variance": pv} for lr in (0.05, 0.1) for pv in (0.1, 1.0)]
SGD_EPOCH_CHOICES = (20, 30, 40, 50, 60)
SGLD_GRID = [
    {"temperature": t, "prior_variance": pv} for t in (0.03, 0.1, 0.3) for pv in (0.1, 1.0)
]
DISTILL_GRID = [
    {"input_noise": 0.1, "max_shift": 0, "distill_temperature": 1.0},
    {"input_noise": 0.1, "max_shift": 2, "distill_temperature": 1.0},
    {"input_noise": 0.1, "max_shift": 2, "distill_temperature": 2.0},
    {"input_noise": 0.2, "max_shift": 2, "distill_temperature": 1.0},
]


def load_data(name):
    """``(x, y), (x_test, y_test)`` flattened: the MNIST sample or the 8x8 digits."""
    if name == "MNIST sample":
        return tfpriors.datasets.load_mnist_sample(flat=True)
    if name == "digits":
        return tfpriors.datasets.load_digits(flat=True)
    raise ValueError(f"`data` must be 'MNIST sample' or 'digits'; received {name!r}.")


def validation_split(x, y, per_class, seed=0):
    """A stratified hold-out: ``per_class`` images of every class for validation.

    Args:
        x: the inputs, one row per example.
        y: integer labels.
        per_class: how many examples of each class (> 0) go to validation;
            every class must have more than that.
        seed: the NumPy seed of the draw.

    Returns:
        ``(x_train, y_train), (x_val, y_val)``, each in the original order.

    Raises:
        ValueError: when a class has no more than ``per_class`` examples.
    """
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        if len(members) <= per_class:
            raise ValueError(
                f"`per_class` ({per_class}) must be below the size of every class; "
                f"class {c} has {len(members)} examples."
            )
        held.append(rng.choice(members, per_class, replace=False))
    mask = np.zeros(len(y), bool)
    mask[np.concatenate(held)] = True
    return (x[~mask], y[~mask]), (x[mask], y[mask])


def augmented_copies(x, copies, noise, max_shift, seed):
    """``copies`` versions of the flat square images ``x``: shifted, plus Gaussian noise.

    Each copy moves every image by a random whole-pixel offset in
    ``[-max_shift, max_shift]`` along each axis (the pixels that leave on one
    side come back on the other: MNIST's borders are blank) and adds noise of
    standard deviation ``noise``. Inputs for distillation: no labels needed.
    """
    rng = np.random.default_rng(seed)
    side = math.isqrt(x.shape[1])
    if side * side != x.shape[1]:
        raise ValueError(f"`x` must hold flat square images; received width {x.shape[1]}.")
    out = []
    for _ in range(copies):
        images = x.reshape(-1, side, side).copy()
        if max_shift:
            shifts = rng.integers(-max_shift, max_shift + 1, size=(len(x), 2))
            for dy, dx in {tuple(s) for s in shifts.tolist()}:
                rows = np.all(shifts == (dy, dx), axis=1)
                images[rows] = np.roll(images[rows], (dy, dx), axis=(1, 2))
        images = images.reshape(len(x), -1)
        out.append(images + noise * rng.normal(size=images.shape).astype("float32"))
    return np.concatenate(out).astype("float32")


def mlp(inputs, outputs, hidden, n, prior_variance):
    prior = distill.gaussian_prior(prior_variance, n)
    return keras.Sequential(
        [
            keras.Input((inputs,)),
            keras.layers.Dense(hidden, "relu", kernel_regularizer=prior, bias_regularizer=prior),
            keras.layers.Dense(outputs, kernel_regularizer=prior, bias_regularizer=prior),
        ]
    )


def noisy_copies(x, copies, stddev, seed=0):
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [x + stddev * rng.normal(size=x.shape).astype("float32") for _ in range(copies)]
    )


def predictor(model):
    """The model's forward pass as one compiled function (what inference costs)."""
    fn = tf.function(lambda x: model(x, training=False))
    return lambda x: fn(x).numpy()


def classification_row(out, labels, seconds):
    return {
        "accuracy": calibration.accuracy(out, labels),
        "nll": calibration.nll(out, labels),
        "ece": calibration.ece(out, labels),
        "seconds_train": seconds,
    }


def steps_per_epoch(n, s):
    return -(-n // s["batch_size"])


def cyclical_lr(s, n):
    """The SGLD step size: cosine from ``lr`` to 0 over every cycle, restarting."""
    cycle_steps = s["cycle_epochs"] * steps_per_epoch(n, s)
    return keras.optimizers.schedules.CosineDecayRestarts(
        s["lr"], cycle_steps, t_mul=1.0, m_mul=1.0, alpha=0.0
    )


def sgld_optimizer(s, n):
    return distill.SGLD(cyclical_lr(s, n), dataset_size=n, temperature=s["temperature"], seed=0)


def train_single(x, y, s, epochs=None, callbacks=()):
    n = len(x)
    model = mlp(x.shape[1], 10, s["hidden"], n, s["sgd_prior_variance"])
    model.compile(
        keras.optimizers.SGD(s["sgd_lr"], momentum=0.9),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(
        x,
        y,
        batch_size=s["batch_size"],
        epochs=epochs or s["sgd_epochs"],
        verbose=0,
        callbacks=[*callbacks, tfpriors.callbacks.EpochProgressBar("single SGD", ["loss"])],
    )
    return model


def train_sgld(x, y, s):
    """Runs the chain; returns its ``PosteriorSampler`` (one sample per cycle end)."""
    n = len(x)
    cycle_steps = s["cycle_epochs"] * steps_per_epoch(n, s)
    samples = s["cycles"] - s["burn_in_cycles"]
    # One sample after the last step of every cycle (the step size is ~0 there).
    sampler = distill.PosteriorSampler(
        burn_in_epochs=s["burn_in_cycles"] * s["cycle_epochs"],
        thin=cycle_steps,
        max_samples=samples,
        directory=None,
        in_memory=samples,
    )
    model = mlp(x.shape[1], 10, s["hidden"], n, s["prior_variance"])
    model.compile(
        sgld_optimizer(s, n), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    model.fit(
        x,
        y,
        batch_size=s["batch_size"],
        epochs=s["cycles"] * s["cycle_epochs"],
        verbose=0,
        callbacks=[sampler, tfpriors.callbacks.EpochProgressBar("SGLD", ["loss"])],
    )
    return sampler


def distil_offline(x, ensemble, s):
    """A student fitted to ``ensemble`` on fresh augmented copies of ``x`` every epoch."""
    keras.utils.set_random_seed(0)
    student = mlp(x.shape[1], 10, s["hidden"], len(x), s["prior_variance"])
    distiller = distill.Distiller(
        student,
        ensemble,
        temperature=s["distill_temperature"],
        alpha=0.0,
        teacher_output="log_probs",
    )
    distiller.compile(keras.optimizers.Adam(1e-3))
    bar = tfpriors.callbacks.EpochProgressBar("offline student", ["loss"])
    for epoch in range(s["distill_epochs"]):
        inputs = augmented_copies(
            x, s["distill_copies"], s["input_noise"], s["max_shift"], seed=epoch
        )
        distiller.fit(
            inputs,
            batch_size=s["distill_batch_size"],
            initial_epoch=epoch,
            epochs=epoch + 1,
            verbose=0,
            callbacks=[bar],
        )
    return student


def train_bdk(x, y, s):
    n = len(x)
    make = lambda: mlp(x.shape[1], 10, s["hidden"], n, s["prior_variance"])  # noqa: E731
    cycle_steps = s["cycle_epochs"] * steps_per_epoch(n, s)
    bdk = distill.BayesianDarkKnowledge(
        make(),
        make(),
        dataset_size=n,
        teacher_optimizer=sgld_optimizer(s, n),
        input_noise=s["bdk_input_noise"],
        burn_in_steps=s["bdk_burn_in_cycles"] * cycle_steps,
    )
    bdk.compile(keras.optimizers.Adam(1e-3))
    bdk.fit(
        x,
        y,
        batch_size=s["batch_size"],
        epochs=s["cycles"] * s["cycle_epochs"],
        verbose=0,
        callbacks=[tfpriors.callbacks.EpochProgressBar("online BDK", ["loss"])],
    )
    return bdk.student


def bootstrap_ratio(numerator, denominator, resamples, seed=0):
    """5th and 95th percentiles of ``mean(numerator) / mean(denominator)`` over resamples.

    Paired: every resample draws the same test images for both per-example
    arrays (e.g. per-image NLLs of two models).
    """
    numerator, denominator = np.asarray(numerator), np.asarray(denominator)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(numerator), size=(resamples, len(numerator)))
    ratios = numerator[idx].mean(axis=1) / denominator[idx].mean(axis=1)
    return [float(np.percentile(ratios, 5)), float(np.percentile(ratios, 95))]


def per_example_nll(out, labels):
    """Each example's negative log-likelihood from logits or log-probabilities."""
    out = np.asarray(out, "float64")
    top = out.max(axis=-1, keepdims=True)
    log_probs = out - top - np.log(np.sum(np.exp(out - top), axis=-1, keepdims=True))
    return -log_probs[np.arange(len(labels)), labels]


def classification(s):
    """Trains the four models on all training images; test metrics and inference times."""
    (x, y), (xt, yt) = load_data(s["data"])
    n = len(x)
    models = {}

    keras.utils.set_random_seed(0)
    start = time.perf_counter()
    models["single SGD model"] = (train_single(x, y, s), time.perf_counter() - start)

    keras.utils.set_random_seed(0)
    start = time.perf_counter()
    sampler = train_sgld(x, y, s)
    ensemble = sampler.ensemble(output="logits")
    k = sampler.num_samples
    ensemble_name = f"SGLD ensemble (k={k})"
    models[ensemble_name] = (ensemble, time.perf_counter() - start)

    start = time.perf_counter()
    student = distil_offline(x, ensemble, s)
    models["offline-distilled student"] = (student, time.perf_counter() - start)

    keras.utils.set_random_seed(0)
    start = time.perf_counter()
    models["online BDK student"] = (train_bdk(x, y, s), time.perf_counter() - start)

    predictors = {name: predictor(model) for name, (model, _) in models.items()}
    rows, per_image = {}, {}
    for name, (model, seconds) in models.items():
        out = predictors[name](xt)
        rows[name] = classification_row(out, yt, seconds)
        per_image[name] = per_example_nll(out, yt)

    def timed(fn):
        def run():  # returns None: time_interleaved then takes the wall time
            fn(xt)

        return run

    print(f"[distill] timing inference ({s['timing_repeats']} interleaved repeats)", flush=True)
    times = _common.time_interleaved(
        {name: timed(f) for name, f in predictors.items()}, s["timing_repeats"], warmup=2
    )
    ensemble_ms = 1000 * _common.median(times[ensemble_name])
    for name in rows:
        rows[name]["inference_ms"] = 1000 * _common.median(times[name])
        rows[name]["inference_ratio_vs_ensemble"] = rows[name]["inference_ms"] / ensemble_ms
        rows[name]["parameters"] = int(models[name][0].count_params())
    for name in rows:
        rows[name]["cost_ratio_vs_ensemble"] = (
            rows[name]["parameters"] / rows[ensemble_name]["parameters"]
        )
    pairs = {
        "ensemble/single": (ensemble_name, "single SGD model"),
        "offline/ensemble": ("offline-distilled student", ensemble_name),
        "offline/single": ("offline-distilled student", "single SGD model"),
        "online/ensemble": ("online BDK student", ensemble_name),
    }
    intervals = {
        key: bootstrap_ratio(per_image[a], per_image[b], s["bootstrap"])
        for key, (a, b) in pairs.items()
    }
    return {
        "settings": s,
        "data": {"name": s["data"], "train": int(n), "test": int(len(xt))},
        "k": k,
        "rows": rows,
        "ensemble": ensemble_name,
        "nll_ratio_intervals": intervals,
    }


# -- the validation search (--tune) ------------------------------------------


class _ValidationNLL(keras.callbacks.Callback):
    """Validation NLL of the model after the listed epochs."""

    def __init__(self, x, y, epochs):
        super().__init__()
        self.x, self.y, self.epochs, self.nll = x, y, set(epochs), {}

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 in self.epochs:
            out = self.model.predict(self.x, batch_size=1000, verbose=0)
            self.nll[str(epoch + 1)] = calibration.nll(out, self.y)


def tune():
    """The grid searches on the validation split; returns their table (JSON-ready)."""
    (x, y), _ = load_data("MNIST sample")
    (xs, ys), (xv, yv) = validation_split(x, y, per_class=100, seed=0)
    s = dict(FULL_SETTINGS)
    out = {"validation": {"train": int(len(xs)), "val": int(len(xv))}, "single": []}
    for i, point in enumerate(SGD_GRID):
        print(f"[tune] single SGD {i + 1}/{len(SGD_GRID)}: {point}", flush=True)
        keras.utils.set_random_seed(0)
        cb = _ValidationNLL(xv, yv, SGD_EPOCH_CHOICES)
        train_single(xs, ys, dict(s, **point), epochs=max(SGD_EPOCH_CHOICES), callbacks=[cb])
        out["single"].append(dict(point, nll=cb.nll))
    out["sgld"] = []
    ensembles = []
    for i, point in enumerate(SGLD_GRID):
        print(f"[tune] SGLD {i + 1}/{len(SGLD_GRID)}: {point}", flush=True)
        keras.utils.set_random_seed(0)
        ensemble = train_sgld(xs, ys, dict(s, **point)).ensemble(output="logits")
        nll = calibration.nll(ensemble.predict(xv, batch_size=1000, verbose=0), yv)
        out["sgld"].append(dict(point, nll=nll))
        ensembles.append((nll, point, ensemble))
    best_nll, best_point, ensemble = min(ensembles, key=lambda e: e[0])
    out["distill"] = []
    for i, point in enumerate(DISTILL_GRID):
        print(f"[tune] offline student {i + 1}/{len(DISTILL_GRID)}: {point}", flush=True)
        student = distil_offline(xs, ensemble, dict(s, **best_point, **point))
        nll = calibration.nll(student.predict(xv, batch_size=1000, verbose=0), yv)
        out["distill"].append(dict(point, nll=nll, ensemble_nll=best_nll))
    return out


# -- diabetes (regression, no goal) ------------------------------------------


def gaussian_scores(out, y, scale):
    """RMSE and mean Gaussian NLL in the target's original units."""
    mean, log_var = out[:, 0], np.clip(out[:, 1], -20, 20)
    mean, var = mean * scale[1] + scale[0], np.exp(log_var) * scale[1] ** 2
    y = y * scale[1] + scale[0]
    nll = 0.5 * (np.log(2 * math.pi * var) + (y - mean) ** 2 / var)
    return {"rmse": float(np.sqrt(np.mean((y - mean) ** 2))), "nll": float(np.mean(nll))}


def diabetes(quick):
    from sklearn.datasets import load_diabetes
    from sklearn.model_selection import train_test_split

    s = {
        "hidden": 50,
        "prior_variance": 1.0,
        "batch_size": 32,
        "epochs": 40 if quick else 150,
        "sgd_lr": 1e-3,
        "lr": 1e-4,
        "temperature": 1.0,
        "burn_in_epochs": 10 if quick else 50,
        "samples": 10 if quick else 30,
        "distill_epochs": 5 if quick else 20,
        "input_noise": 0.05,
    }
    data = load_diabetes()
    x_train, x_test, y_train, y_test = train_test_split(
        data.data.astype("float32"), data.target.astype("float32"), test_size=0.2, random_state=0
    )
    x_mean, x_std = x_train.mean(0), x_train.std(0)
    y_scale = (float(y_train.mean()), float(y_train.std()))
    x_train, x_test = (x_train - x_mean) / x_std, (x_test - x_mean) / x_std
    y_train, y_test = (y_train - y_scale[0]) / y_scale[1], (y_test - y_scale[0]) / y_scale[1]
    n = len(x_train)
    loss = distill.GaussianNLL()
    make = lambda: mlp(10, 2, s["hidden"], n, s["prior_variance"])  # noqa: E731
    rows = {}
    steps = -(-n // s["batch_size"])

    keras.utils.set_random_seed(0)
    single = make()
    single.compile(keras.optimizers.SGD(s["sgd_lr"], momentum=0.9), loss)
    single.fit(x_train, y_train, batch_size=s["batch_size"], epochs=s["epochs"], verbose=0)
    rows["single SGD model"] = gaussian_scores(single.predict(x_test, verbose=0), y_test, y_scale)

    keras.utils.set_random_seed(0)
    teacher = make()
    thin = max(1, (s["epochs"] - s["burn_in_epochs"]) * steps // s["samples"])
    sampler = distill.PosteriorSampler(
        burn_in_epochs=s["burn_in_epochs"],
        thin=thin,
        max_samples=s["samples"],
        directory=None,
        in_memory=s["samples"],
    )
    teacher.compile(distill.SGLD(s["lr"], dataset_size=n, seed=0), loss)
    teacher.fit(
        x_train,
        y_train,
        batch_size=s["batch_size"],
        epochs=s["epochs"],
        verbose=0,
        callbacks=[sampler, tfpriors.callbacks.EpochProgressBar("diabetes SGLD", ["loss"])],
    )
    rows["teacher (last SGLD sample)"] = gaussian_scores(
        teacher.predict(x_test, verbose=0), y_test, y_scale
    )
    ensemble = sampler.ensemble(task="regression")
    rows[f"SGLD ensemble (k={sampler.num_samples})"] = gaussian_scores(
        ensemble.predict(x_test, verbose=0), y_test, y_scale
    )

    keras.utils.set_random_seed(0)
    student = make()
    distiller = distill.Distiller(student, ensemble, task="regression", alpha=0.0)
    distiller.compile(keras.optimizers.Adam(1e-3))
    distiller.fit(
        noisy_copies(x_train, 5, s["input_noise"]),
        batch_size=s["batch_size"],
        epochs=s["distill_epochs"],
        verbose=0,
    )
    rows["offline-distilled student"] = gaussian_scores(
        student.predict(x_test, verbose=0), y_test, y_scale
    )

    keras.utils.set_random_seed(0)
    bdk = distill.BayesianDarkKnowledge(
        make(),
        make(),
        dataset_size=n,
        task="regression",
        teacher_optimizer=distill.SGLD(s["lr"], dataset_size=n, seed=0),
        input_noise=s["input_noise"],
        burn_in_steps=s["burn_in_epochs"] * steps,
    )
    bdk.compile(keras.optimizers.Adam(1e-3))
    bdk.fit(
        x_train,
        y_train,
        batch_size=s["batch_size"],
        epochs=s["epochs"],
        verbose=0,
        callbacks=[tfpriors.callbacks.EpochProgressBar("diabetes online BDK", ["loss"])],
    )
    rows["online BDK student"] = gaussian_scores(
        bdk.student.predict(x_test, verbose=0), y_test, y_scale
    )
    return {"settings": s, "rows": rows, "k": sampler.num_samples}


# -- goals -------------------------------------------------------------------


def _interval(result, key):
    low, high = result["nll_ratio_intervals"][key]
    return f"90% bootstrap interval of the ratio {low:.3f}-{high:.3f}"


def goals(result):
    """The goal rows of a ``classification`` result (NLL ratios; see the module docstring)."""
    rows, ensemble, k = result["rows"], result["ensemble"], result["k"]
    data = result["data"]["name"]
    single, offline, online = (
        rows["single SGD model"],
        rows["offline-distilled student"],
        rows["online BDK student"],
    )
    out = [
        _common.goal_row(
            f"distill: SGLD ensemble NLL vs single SGD model ({data})",
            rows[ensemble]["nll"],
            "nats",
            "single SGD model",
            single["nll"],
            "<=",
            1.0,
            note=f"{ensemble}; {_interval(result, 'ensemble/single')}",
        )
    ]
    for name, row, key, beat_single in (
        ("offline-distilled student", offline, "offline/ensemble", False),
        ("online BDK student", online, "online/ensemble", True),
    ):
        # Cost = multiply-adds, which for these MLPs is the parameter count.
        cheap = row["cost_ratio_vs_ensemble"] <= 1.0 / k + 1e-9
        beats_single = row["nll"] <= single["nll"]
        note = (
            f"cost (multiply-adds) {row['cost_ratio_vs_ensemble']:.3f} of the ensemble's "
            f"(1/k = {1 / k:.3f}), measured time {row['inference_ratio_vs_ensemble']:.3f}; "
            f"{_interval(result, key)}"
        )
        if beat_single:
            note += f"; NLL {row['nll']:.4f} vs single SGD model {single['nll']:.4f}" + (
                "" if beats_single else ": not better than the single SGD model"
            )
        out.append(
            _common.goal_row(
                f"distill: {name} NLL vs SGLD ensemble ({data})",
                row["nll"],
                "nats",
                ensemble,
                rows[ensemble]["nll"],
                "<=",
                1.1,
                condition=cheap and (beats_single if beat_single else True),
                note=note,
            )
        )
        if name == "offline-distilled student":
            out.append(
                _common.goal_row(
                    f"distill: offline-distilled student NLL vs single SGD model ({data})",
                    row["nll"],
                    "nats",
                    "single SGD model",
                    single["nll"],
                    "<=",
                    1.0,
                    note=_interval(result, "offline/single"),
                )
            )
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run on 8x8 digits")
    parser.add_argument(
        "--tune",
        action="store_true",
        help="rerun the validation search (results/tuning/distill.json), no test figures",
    )
    args = parser.parse_args()
    start = time.perf_counter()
    if args.tune:
        table = tune()
        table["seconds"] = time.perf_counter() - start
        path = os.path.join(_common.RESULTS_DIR, "tuning", "distill.json")
        _common.write_json(path, table)
        print(f"[distill] wrote {path}", flush=True)
        return
    payload = _common.result_header(
        "distill", "Bayesian dark knowledge (SGLD + distillation)", __doc__, args.quick
    )
    settings = QUICK_SETTINGS if args.quick else FULL_SETTINGS
    payload["classification"] = classification(dict(settings))
    payload["diabetes"] = diabetes(args.quick)
    payload["repeats"] = settings["timing_repeats"]
    payload["repeat_kind"] = (
        "interleaved inference repeats (metrics: one run, seed 0; "
        "bootstrap intervals over the test images)"
    )
    payload["goals"] = goals(payload["classification"])
    payload["seconds"] = time.perf_counter() - start
    _common.save_result("distill", args.quick, payload)


if __name__ == "__main__":
    main()
