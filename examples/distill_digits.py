"""Bayesian dark knowledge on digits: SGLD samples, their ensemble, and one distilled student.

    python examples/distill_digits.py [--epochs 60] [--samples 20] [--temperature 0.03]

1. Samples a 64-100-10 MLP's posterior with SGLD (Gaussian prior, the
   loss convention of tfpriors.distill.SGLD) and keeps thinned samples.
2. Distils their log-mean-prob ensemble into one MLP of the same size
   (offline, on noisy copies of the training images, no labels).
3. Trains another student online with BayesianDarkKnowledge (one SGLD
   teacher step, one student step on a perturbed batch).

Prints accuracy, NLL and ECE on the test images: the students cost one
network's inference, the ensemble `--samples` networks'.
"""

import argparse
import tempfile

from tfpriors_cli import start_tensorflow

start_tensorflow()  # imports TensorFlow without its start-up log lines

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfpriors  # noqa: E402
from tfpriors import calibration, distill  # noqa: E402


def mlp(n, prior_variance=1.0, hidden=100):
    prior = distill.gaussian_prior(prior_variance, n)
    return keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(hidden, "relu", kernel_regularizer=prior, bias_regularizer=prior),
            keras.layers.Dense(10, kernel_regularizer=prior, bias_regularizer=prior),
        ]
    )


def noisy_copies(x, copies, stddev, seed=0):
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [x + stddev * rng.normal(size=x.shape).astype("float32") for _ in range(copies)]
    )


def main(epochs=60, samples=20, lr=1e-3, temperature=0.03, batch_size=64, distill_epochs=20):
    # The samples beyond the 5 kept in memory go to disk for the run only.
    with tempfile.TemporaryDirectory(prefix="sgld-") as directory:
        return run(epochs, samples, lr, temperature, batch_size, distill_epochs, directory)


def run(epochs, samples, lr, temperature, batch_size, distill_epochs, directory):
    (x, y), (x_test, y_test) = tfpriors.datasets.load_digits()
    n = len(x)
    keras.utils.set_random_seed(0)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    steps_per_epoch = -(-n // batch_size)
    burn_in = epochs // 3
    thin = max(1, (epochs - burn_in) * steps_per_epoch // samples)
    sampler = distill.PosteriorSampler(
        burn_in_epochs=burn_in,
        thin=thin,
        max_samples=samples,
        directory=directory,
        in_memory=5,
    )
    model = mlp(n)
    # A cold posterior (temperature < 1) predicts better than the Bayesian one
    # for this small net with a plain N(0, 1) prior (see bench/distill.py).
    model.compile(distill.SGLD(lr, dataset_size=n, temperature=temperature), loss)
    model.fit(
        x,
        y,
        batch_size=batch_size,
        epochs=epochs,
        verbose=0,
        callbacks=[sampler, tfpriors.callbacks.EpochProgressBar("SGLD")],
    )
    teacher = sampler.ensemble()

    student = mlp(n)
    distiller = distill.Distiller(
        student, teacher, temperature=2.0, alpha=0.0, teacher_output="log_probs"
    )
    distiller.compile(keras.optimizers.Adam(1e-3))
    distiller.fit(
        noisy_copies(x, 5, 0.1),
        batch_size=batch_size,
        epochs=distill_epochs,
        verbose=0,
        callbacks=[tfpriors.callbacks.EpochProgressBar("distil")],
    )

    online = distill.BayesianDarkKnowledge(
        mlp(n),
        mlp(n),
        dataset_size=n,
        teacher_optimizer=distill.SGLD(lr, dataset_size=n, temperature=temperature),
        input_noise=0.1,
        burn_in_steps=(epochs // 6) * steps_per_epoch,
    )
    online.compile(keras.optimizers.Adam(1e-3))
    online.fit(
        x,
        y,
        batch_size=batch_size,
        epochs=epochs,
        verbose=0,
        callbacks=[tfpriors.callbacks.EpochProgressBar("online BDK")],
    )

    rows = {
        "last SGLD sample": model,
        f"SGLD ensemble ({sampler.num_samples})": teacher,
        "distilled student": student,
        "online BDK student": online.student,
    }
    print(f"{'':26s} {'accuracy':>9s} {'NLL':>7s} {'ECE':>7s}")
    results = {}
    for name, net in rows.items():
        out = net.predict(x_test, verbose=0)
        results[name] = (
            calibration.accuracy(out, y_test),
            calibration.nll(out, y_test),
            calibration.ece(out, y_test),
        )
        print(f"{name:26s} {results[name][0]:9.2%} {results[name][1]:7.4f} {results[name][2]:7.4f}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=60, help="SGLD epochs (a third burn-in)")
    parser.add_argument("--samples", type=int, default=20, help="posterior samples kept")
    parser.add_argument("--lr", type=float, default=1e-3, help="SGLD learning rate")
    parser.add_argument(
        "--temperature", type=float, default=0.03, help="SGLD posterior temperature (1 = Bayesian)"
    )
    parser.add_argument(
        "--distill-epochs",
        type=int,
        default=20,
        help="epochs of offline distillation over 5 noisy copies",
    )
    args = parser.parse_args()
    main(args.epochs, args.samples, args.lr, args.temperature, distill_epochs=args.distill_epochs)
