"""Bayesian dark knowledge for regression: SGLD teacher, its mixture, a mean+variance student.

    python examples/distill_regression.py                  # scikit-learn's diabetes data
    python examples/distill_regression.py --data boston    # Boston housing (keras.datasets)

A one-hidden-layer MLP (50 units) outputs a mean and a log variance (the
Gaussian likelihood with learned noise, `tfpriors.distill.GaussianNLL`).
SGLD samples its posterior; `PosteriorSampler.ensemble(task="regression")`
is the moment-matched predictive mixture; `BayesianDarkKnowledge` trains a
student of the same size online to match it. Prints RMSE and Gaussian NLL
(in the target's units) for the last SGLD sample (the teacher), the
student and the ensemble, beside the seed result on Boston housing
(teacher 3.642, student 3.201, ensemble 3.057 RMSE). Boston housing needs
the file in the Keras cache: offline, the loader says where to put it.
"""

import argparse
import math

from tfpriors_cli import start_tensorflow

start_tensorflow()  # imports TensorFlow without its start-up log lines

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfpriors  # noqa: E402
from tfpriors import distill  # noqa: E402

SEED_RMSE = {"teacher": 3.642, "student": 3.201, "ensemble": 3.057}


def load(name):
    if name == "boston":
        return tfpriors.datasets.load_boston_housing()
    from sklearn.datasets import load_diabetes
    from sklearn.model_selection import train_test_split

    data = load_diabetes()
    x, xt, y, yt = train_test_split(
        data.data.astype("float32"), data.target.astype("float32"), test_size=0.2, random_state=0
    )
    return (x, y), (xt, yt)


def mlp(inputs, n, hidden=50, prior_variance=1.0):
    prior = distill.gaussian_prior(prior_variance, n)
    return keras.Sequential(
        [
            keras.Input((inputs,)),
            keras.layers.Dense(hidden, "relu", kernel_regularizer=prior, bias_regularizer=prior),
            keras.layers.Dense(2, kernel_regularizer=prior, bias_regularizer=prior),
        ]
    )


def scores(out, y, mean, std):
    """RMSE and Gaussian NLL in the original units of the target."""
    mu, var = out[:, 0] * std + mean, np.exp(np.clip(out[:, 1], -20, 20)) * std**2
    y = y * std + mean
    nll = 0.5 * (np.log(2 * math.pi * var) + (y - mu) ** 2 / var)
    return float(np.sqrt(np.mean((y - mu) ** 2))), float(np.mean(nll))


def main(data="diabetes", epochs=150, samples=30, lr=1e-4, batch_size=32):
    (x, y), (xt, yt) = load(data)
    x_mean, x_std = x.mean(0), x.std(0) + 1e-8
    y_mean, y_std = float(y.mean()), float(y.std())
    x, xt = (x - x_mean) / x_std, (xt - x_mean) / x_std
    y, yt = (y - y_mean) / y_std, (yt - y_mean) / y_std
    n, steps = len(x), -(-len(x) // batch_size)
    burn_in = epochs // 4
    keras.utils.set_random_seed(0)

    teacher = mlp(x.shape[1], n)
    teacher.compile(distill.SGLD(lr, dataset_size=n), distill.GaussianNLL())
    sampler = distill.PosteriorSampler(
        burn_in_epochs=burn_in,
        thin=max(1, (epochs - burn_in) * steps // samples),
        max_samples=samples,
        directory=None,
        in_memory=samples,
    )
    teacher.fit(
        x,
        y,
        batch_size=batch_size,
        epochs=epochs,
        verbose=0,
        callbacks=[sampler, tfpriors.callbacks.EpochProgressBar("SGLD")],
    )
    ensemble = sampler.ensemble(task="regression")

    bdk = distill.BayesianDarkKnowledge(
        mlp(x.shape[1], n),
        mlp(x.shape[1], n),
        dataset_size=n,
        task="regression",
        teacher_learning_rate=lr,
        input_noise=0.05,
        burn_in_steps=burn_in * steps,
    )
    bdk.compile(keras.optimizers.Adam(1e-3))
    bdk.fit(
        x,
        y,
        batch_size=batch_size,
        epochs=epochs,
        verbose=0,
        callbacks=[tfpriors.callbacks.EpochProgressBar("online BDK")],
    )

    rows = {"teacher": teacher, "student": bdk.student, "ensemble": ensemble}
    print(f"{data}: {'':10s} {'RMSE':>8s} {'NLL':>8s}   seed RMSE (Boston housing)")
    results = {}
    for name, model in rows.items():
        results[name] = scores(model.predict(xt, verbose=0), yt, y_mean, y_std)
        print(
            f"{'':10s}{name:10s} {results[name][0]:8.3f} {results[name][1]:8.3f}   "
            f"{SEED_RMSE[name]:.3f}"
        )
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=["diabetes", "boston"], default="diabetes")
    parser.add_argument("--epochs", type=int, default=150, help="SGLD epochs (a quarter burn-in)")
    parser.add_argument("--samples", type=int, default=30, help="posterior samples kept")
    parser.add_argument("--lr", type=float, default=1e-4, help="SGLD learning rate")
    args = parser.parse_args()
    main(args.data, args.epochs, args.samples, args.lr)
