"""Bayesian dark knowledge: SGLD ensembles distilled into one network (digits, diabetes).

Digits (64-100-10 MLP, Gaussian prior): a single model trained with SGD
(momentum, the same prior as an L2 penalty: the MAP estimate); an SGLD
ensemble of k thinned posterior samples (log-mean-prob); a student of the
same size distilled offline from that ensemble on noisy copies of the
training images (no labels); and a student trained online by
BayesianDarkKnowledge. Accuracy, NLL and ECE on the 450 test images, and
the inference time of each model relative to the ensemble (medians of
interleaved repeats over the test set; the CPU is shared with other jobs,
interleaving keeps the ratios fair).

Diabetes regression (scikit-learn's bundled data, 80/20 split, 10-50-2
MLP predicting mean and log variance): RMSE (in the target's units) and
Gaussian NLL for the teacher (the last SGLD sample), the online BDK
student, the SGLD ensemble (moment-matched mixture) and a single SGD model.

Goals: the digits BDK student's NLL within 10% of the ensemble's, at 1/k of
its inference time, and better than the single SGD model's.

    python bench/distill.py [--quick]
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


def sgld_run(model, x, y, loss, settings, n):
    steps = -(-n // settings["batch_size"])
    burn_in = settings["burn_in_epochs"]
    thin = max(1, (settings["epochs"] - burn_in) * steps // settings["samples"])
    sampler = distill.PosteriorSampler(
        burn_in_epochs=burn_in,
        thin=thin,
        max_samples=settings["samples"],
        directory=None,
        in_memory=settings["samples"],
    )
    model.compile(
        distill.SGLD(settings["lr"], dataset_size=n, temperature=settings["temperature"], seed=0),
        loss,
    )
    model.fit(
        x,
        y,
        batch_size=settings["batch_size"],
        epochs=settings["epochs"],
        verbose=0,
        callbacks=[sampler, tfpriors.callbacks.EpochProgressBar("SGLD", ["loss"])],
    )
    return sampler


def digits(quick):
    s = {
        "hidden": 100,
        "prior_variance": 1.0,
        "batch_size": 64,
        "epochs": 15 if quick else 60,
        "sgd_lr": 0.05,
        "lr": 1e-3,
        "temperature": 0.03,
        "burn_in_epochs": 5 if quick else 20,
        "samples": 5 if quick else 20,
        "distill_epochs": 3 if quick else 30,
        "distill_copies": 5,
        "input_noise": 0.1,
        "distill_temperature": 2.0,
        "bdk_burn_in_epochs": 2 if quick else 10,
        "timing_repeats": 5 if quick else 30,
    }
    (x, y), (xt, yt) = tfpriors.datasets.load_digits()
    n = len(x)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    make = lambda: mlp(64, 10, s["hidden"], n, s["prior_variance"])  # noqa: E731
    models, rows = {}, {}

    keras.utils.set_random_seed(0)
    start = time.perf_counter()
    single = make()
    single.compile(keras.optimizers.SGD(s["sgd_lr"], momentum=0.9), loss)
    single.fit(x, y, batch_size=s["batch_size"], epochs=s["epochs"], verbose=0)
    models["single SGD model"] = (single, time.perf_counter() - start)

    keras.utils.set_random_seed(0)
    start = time.perf_counter()
    sampler = sgld_run(make(), x, y, loss, s, n)
    ensemble = sampler.ensemble()
    k = sampler.num_samples
    models[f"SGLD ensemble (k={k})"] = (ensemble, time.perf_counter() - start)

    keras.utils.set_random_seed(0)
    start = time.perf_counter()
    student = make()
    distiller = distill.Distiller(
        student,
        ensemble,
        temperature=s["distill_temperature"],
        alpha=0.0,
        teacher_output="log_probs",
    )
    distiller.compile(keras.optimizers.Adam(1e-3))
    distiller.fit(
        noisy_copies(x, s["distill_copies"], s["input_noise"]),
        batch_size=s["batch_size"],
        epochs=s["distill_epochs"],
        verbose=0,
        callbacks=[tfpriors.callbacks.EpochProgressBar("distil", ["loss"])],
    )
    models["offline-distilled student"] = (student, time.perf_counter() - start)

    keras.utils.set_random_seed(0)
    start = time.perf_counter()
    steps = -(-n // s["batch_size"])
    bdk = distill.BayesianDarkKnowledge(
        make(),
        make(),
        dataset_size=n,
        teacher_optimizer=distill.SGLD(
            s["lr"], dataset_size=n, temperature=s["temperature"], seed=0
        ),
        input_noise=s["input_noise"],
        burn_in_steps=s["bdk_burn_in_epochs"] * steps,
    )
    bdk.compile(keras.optimizers.Adam(1e-3))
    bdk.fit(
        x,
        y,
        batch_size=s["batch_size"],
        epochs=s["epochs"],
        verbose=0,
        callbacks=[tfpriors.callbacks.EpochProgressBar("online BDK", ["loss"])],
    )
    models["online BDK student"] = (bdk.student, time.perf_counter() - start)

    predictors = {name: predictor(model) for name, (model, _) in models.items()}
    for name, (model, seconds) in models.items():
        rows[name] = classification_row(predictors[name](xt), yt, seconds)

    def timed(fn):
        def run():  # returns None: time_interleaved then takes the wall time
            fn(xt)

        return run

    times = _common.time_interleaved(
        {name: timed(f) for name, f in predictors.items()}, s["timing_repeats"], warmup=2
    )
    ensemble_name = f"SGLD ensemble (k={k})"
    ensemble_ms = 1000 * _common.median(times[ensemble_name])
    for name in rows:
        rows[name]["inference_ms"] = 1000 * _common.median(times[name])
        rows[name]["inference_ratio_vs_ensemble"] = rows[name]["inference_ms"] / ensemble_ms
        rows[name]["parameters"] = int(models[name][0].count_params())
    for name in rows:
        rows[name]["cost_ratio_vs_ensemble"] = (
            rows[name]["parameters"] / rows[ensemble_name]["parameters"]
        )
    return {"settings": s, "k": k, "rows": rows, "ensemble": ensemble_name}


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

    keras.utils.set_random_seed(0)
    single = make()
    single.compile(keras.optimizers.SGD(s["sgd_lr"], momentum=0.9), loss)
    single.fit(x_train, y_train, batch_size=s["batch_size"], epochs=s["epochs"], verbose=0)
    rows["single SGD model"] = gaussian_scores(single.predict(x_test, verbose=0), y_test, y_scale)

    keras.utils.set_random_seed(0)
    teacher = make()
    sampler = sgld_run(teacher, x_train, y_train, loss, s, n)
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
    steps = -(-n // s["batch_size"])
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
        callbacks=[tfpriors.callbacks.EpochProgressBar("online BDK", ["loss"])],
    )
    rows["online BDK student"] = gaussian_scores(
        bdk.student.predict(x_test, verbose=0), y_test, y_scale
    )
    return {"settings": s, "rows": rows, "k": sampler.num_samples}


def goals(result):
    rows, ensemble = result["digits"]["rows"], result["digits"]["ensemble"]
    k = result["digits"]["k"]
    out = []
    for name in ("online BDK student", "offline-distilled student"):
        row = rows[name]
        # Cost = multiply-adds, which for these MLPs is the parameter count.
        cheap = row["cost_ratio_vs_ensemble"] <= 1.0 / k + 1e-9
        beats_single = row["nll"] < rows["single SGD model"]["nll"]
        out.append(
            _common.goal_row(
                f"distill: {name} NLL vs SGLD ensemble (digits)",
                row["nll"],
                "nats",
                ensemble,
                rows[ensemble]["nll"],
                "<=",
                1.1,
                condition=cheap and beats_single,
                note=(
                    f"cost (multiply-adds) {row['cost_ratio_vs_ensemble']:.3f} of the "
                    f"ensemble's (1/k = {1 / k:.3f}), measured time "
                    f"{row['inference_ratio_vs_ensemble']:.3f}; NLL {row['nll']:.4f} vs single "
                    f"SGD model {rows['single SGD model']['nll']:.4f}"
                    + ("" if beats_single else ": not better than the single SGD model")
                    + f" (the ensemble itself: {rows[ensemble]['nll']:.4f})"
                ),
            )
        )
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run with tiny settings")
    args = parser.parse_args()
    start = time.perf_counter()
    payload = _common.result_header(
        "distill", "Bayesian dark knowledge (SGLD + distillation)", __doc__, args.quick
    )
    payload["digits"] = digits(args.quick)
    payload["diabetes"] = diabetes(args.quick)
    payload["repeats"] = payload["digits"]["settings"]["timing_repeats"]
    payload["repeat_kind"] = "interleaved inference repeats (metrics: one run, seed 0)"
    payload["goals"] = goals(payload)
    payload["seconds"] = time.perf_counter() - start
    _common.save_result("distill", args.quick, payload)


if __name__ == "__main__":
    main()
