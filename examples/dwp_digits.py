"""Deep Weight Prior on digits: learn a prior over 3x3 kernels on digits 0-4, use it on 5-9.

1. Source: a few small conv nets trained on the digits 0-4.
2. Their 3x3 kernel slices train a KernelVAE; ``kernels.png`` shows its samples
   beside real kernels.
3. Target: digits 5-9 with only ``--train-size`` training images. A variational
   conv net is trained with the standard normal prior and with the Deep Weight
   Prior on its convolutions; a plain conv net is trained from He and from DWP
   initialization. Test accuracies are printed side by side.

    python examples/dwp_digits.py [--train-size 100] [--sources 4]
        [--out examples_out/dwp_digits]
"""

import argparse
import math
import os
import time

from tfpriors_cli import add_output_folder, parse_args_with_output, start_tensorflow

start_tensorflow()  # imports TensorFlow without its start-up log lines

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfpriors  # noqa: E402

NUM_CLASSES = 5
WIDTH = 16  # conv1 has WIDTH filters, conv2 2 * WIDTH


def split_digits():
    """Source = digits 0-4, target = digits 5-9 (labels 0-4), both with the fixed test split."""
    (x, y), (x_test, y_test) = tfpriors.datasets.load_digits(flat=False)

    def part(low):
        train, test = (y >= low) & (y < low + 5), (y_test >= low) & (y_test < low + 5)
        return (x[train], y[train] - low), (x_test[test], y_test[test] - low)

    return part(0), part(5)


def subset(x, y, size, seed):
    """``size`` training examples drawn with every class present (stratified)."""
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.flatnonzero(y == c)) for c in range(NUM_CLASSES)]
    order = np.concatenate(
        [
            np.stack([idx[i] for idx in per_class if i < len(idx)])
            for i in range(max(len(idx) for idx in per_class))
        ]
    )
    chosen = rng.permutation(order[:size])
    return x[chosen], y[chosen]


def conv_net(kernel_initializer="he_normal", name=None):
    """The plain target / source net: two 3x3 convolutions, a max-pool and logits."""
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(
                WIDTH,
                3,
                padding="same",
                activation="relu",
                name="conv1",
                kernel_initializer=kernel_initializer,
            ),
            keras.layers.MaxPooling2D(name="pool"),
            keras.layers.Conv2D(
                2 * WIDTH,
                3,
                padding="same",
                activation="relu",
                name="conv2",
                kernel_initializer=kernel_initializer,
            ),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(NUM_CLASSES, name="logits"),
        ],
        name=name,
    )


def variational_net(prior, name=None):
    """The same architecture with variational layers; ``prior`` on the convolutions.

    The logits layer keeps the standard normal prior in every variant, so
    variants differ only in the prior over conv kernels.
    """
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            tfpriors.layers.VariationalConv2D(
                WIDTH, 3, prior=prior, padding="same", activation="relu", name="conv1"
            ),
            keras.layers.MaxPooling2D(name="pool"),
            tfpriors.layers.VariationalConv2D(
                2 * WIDTH, 3, prior=prior, padding="same", activation="relu", name="conv2"
            ),
            keras.layers.Flatten(name="flatten"),
            tfpriors.layers.VariationalDense(NUM_CLASSES, prior="normal", name="logits"),
        ],
        name=name,
    )


def compile_classifier(model, learning_rate=2e-3):
    # XLA compilation costs more than these tiny nets ever train.
    model.compile(
        keras.optimizers.Adam(learning_rate),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=False,
    )
    return model


def train_sources(x, y, count, epochs, seed=0):
    """``count`` plain conv nets trained on the source task (different seeds)."""
    models = []
    for index in range(count):
        keras.utils.set_random_seed(seed + index)
        model = compile_classifier(conv_net(name=f"source_{index}"))
        model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
        models.append(model)
    return models


def train_vae(kernels, epochs, seed=0, latent_dim=2):
    keras.utils.set_random_seed(seed)
    vae = tfpriors.priors.KernelVAE(
        kernel_size=3, latent_dim=latent_dim, hidden_units=64, seed=seed
    )
    vae.compile(keras.optimizers.Adam(3e-3))
    vae.fit(kernels, epochs=epochs, batch_size=128, verbose=0)
    return vae


def fit_steps(model, x, y, steps, batch_size=32, seed=0):
    """Trains for a fixed number of steps whatever the training-set size."""
    batch_size = min(batch_size, len(x))
    data = (
        tf.data.Dataset.from_tensor_slices((x, y))
        .shuffle(len(x), seed=seed)
        .repeat()
        .batch(batch_size)
    )
    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
    return model


def test_accuracy(model, x_test, y_test, batch_size=500):
    # Direct calls: predict() would trace a new function for every model.
    logits = np.concatenate(
        [
            keras.ops.convert_to_numpy(model(x_test[i : i + batch_size], training=False))
            for i in range(0, len(x_test), batch_size)
        ]
    )
    return float(np.mean(np.argmax(logits, -1) == y_test))


def train_variational(prior, x, y, x_test, y_test, steps, seed, model=None):
    """Test accuracy of a variational net trained on ``(x, y)`` with ``prior`` on its convs.

    ``model``: a compiled variational net whose dataset size is ``len(x)`` to
    restart from a fresh initialization instead of building a new one; its
    traced train step is reused, which saves most of the time of short runs.
    """
    keras.utils.set_random_seed(seed)
    fresh = variational_net(prior)
    if model is None:
        model = compile_classifier(fresh)
        tfpriors.set_dataset_size(model, len(x))
    else:
        restart(model, fresh)
    fit_steps(model, x, y, steps, seed=seed)
    return test_accuracy(model, x_test, y_test)


def restart(model, fresh):
    """Gives a compiled ``model`` the weights of ``fresh`` and a new optimizer state."""
    model.set_weights(fresh.get_weights())
    optimizer = model.optimizer
    # Zero the step count and the moment estimates; the learning rate is an
    # optimizer variable too and must survive.
    learning_rate = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
    for variable in optimizer.variables:
        variable.assign(keras.ops.zeros_like(variable))
    optimizer.learning_rate = learning_rate
    return model


def copy_source_filters(model, source):
    """Source-filter copy initialization: the conv kernels and biases of a trained source net."""
    for name in ("conv1", "conv2"):
        model.get_layer(name).set_weights(source.get_layer(name).get_weights())
    return model


class _AccuracyAt(keras.callbacks.Callback):
    def __init__(self, epochs, x_test, y_test):
        super().__init__()
        self.epochs, self.x_test, self.y_test, self.accuracy = set(epochs), x_test, y_test, {}

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 in self.epochs:
            self.accuracy[epoch + 1] = test_accuracy(self.model, self.x_test, self.y_test)


def accuracy_curve(model, x, y, x_test, y_test, checkpoints, seed, compiled=None):
    """Test accuracy of a plain net after each of ``checkpoints`` epochs (batch 32).

    ``compiled``: a compiled net of the same architecture to restart from
    ``model``'s weights (reusing its traced train step).
    """
    keras.utils.set_random_seed(seed)
    if compiled is None:
        compile_classifier(model)
    else:
        model = restart(compiled, model)
    callback = _AccuracyAt(checkpoints, x_test, y_test)
    model.fit(x, y, epochs=max(checkpoints), batch_size=32, verbose=0, callbacks=[callback])
    return callback.accuracy


def init_variants(vae, sources):
    """Initializations compared on the plain target net: name -> model factory(seed)."""
    return {
        "He": lambda seed: conv_net("he_normal"),
        "source filters": lambda seed: copy_source_filters(
            conv_net(), sources[seed % len(sources)]
        ),
        "DWP": lambda seed: conv_net(tfpriors.initializers.DWPInitializer(vae, seed=seed)),
        "DWP + decoder noise": lambda seed: conv_net(
            tfpriors.initializers.DWPInitializer(vae, seed=seed, noise=True)
        ),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--train-size", type=int, default=100, help="target training images (of ~680), default 100"
    )
    parser.add_argument("--sources", type=int, default=4, help="source nets, default 4")
    parser.add_argument("--source-epochs", type=int, default=15)
    parser.add_argument("--vae-epochs", type=int, default=60)
    parser.add_argument("--steps", type=int, default=400, help="target training steps")
    add_output_folder(parser, "dwp_digits")
    parser.add_argument("--seed", type=int, default=0)
    args = parse_args_with_output(parser, argv)  # checks --out before training
    start = time.perf_counter()

    ((xs, ys), (xs_test, ys_test)), ((xt, yt), (xt_test, yt_test)) = split_digits()
    sources = train_sources(xs, ys, args.sources, args.source_epochs, seed=args.seed)
    source_accuracy = np.mean([test_accuracy(m, xs_test, ys_test) for m in sources])
    print(
        f"source nets on digits 0-4: test accuracy {source_accuracy:.1%} (mean of {args.sources})"
    )

    kernels = tfpriors.priors.collect_kernels(sources, kernel_size=3)
    vae = train_vae(kernels, args.vae_epochs, seed=args.seed)
    print(
        f"KernelVAE on {len(kernels)} kernel slices: negative ELBO per slice "
        f"{vae.evaluate(kernels, verbose=0):.2f}"
    )
    picture = os.path.join(args.out, "kernels.png")
    tfpriors.priors.plot_kernels(vae, kernels, picture)
    with tfpriors.io.atomic_path(os.path.join(args.out, "kernel_vae.keras")) as temporary:
        vae.save(temporary)
    print(f"wrote {picture}")

    x, y = subset(xt, yt, args.train_size, args.seed)
    print(f"\ntarget digits 5-9, {len(x)} training images, {args.steps} steps:")
    for name, prior in (
        ("standard normal prior", "normal"),
        ("Deep Weight Prior", tfpriors.priors.DeepWeightPrior(vae, seed=args.seed)),
    ):
        accuracy = train_variational(prior, x, y, xt_test, yt_test, args.steps, args.seed)
        print(f"  variational net, {name:<26} test accuracy {accuracy:.1%}")
    epochs = max(1, math.ceil(args.steps / math.ceil(len(x) / 32)))
    for name, make in init_variants(vae, sources).items():
        curve = accuracy_curve(make(args.seed), x, y, xt_test, yt_test, (epochs,), args.seed)
        print(
            f"  plain net, {name + ' init':<26} test accuracy {curve[epochs]:.1%} "
            f"after {epochs} epochs"
        )
    print(f"done in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
