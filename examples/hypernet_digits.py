"""Lambda-hypernetwork on digits: one training run, a model for every complexity level.

A 64-100-10 net whose variational posterior is a function of the KL weight
lambda (Grebenkova et al.): trained once with lambda drawn log-uniformly in
[1e-3, 10] (5 draws per batch), then evaluated at several lambdas, pruned by
the relative density mu^2 / sigma^2 and exported to TFLite.

    python examples/hypernet_digits.py                          # linear, 50 epochs
    python examples/hypernet_digits.py --kind lowrank --plot lowrank.png

Writes the trade-off plot and the pruned model's ``hypernet.tflite`` into
``--out`` (default ``examples_out/hypernet_digits``).
"""

import argparse
import os

from tfpriors_cli import add_output_folder, parse_args_with_output, start_tensorflow

start_tensorflow()  # imports TensorFlow without its start-up log lines

import keras  # noqa: E402

import tfpriors  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", default="linear", choices=["linear", "lowrank"])
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--lambda-draws", type=int, default=5)
    parser.add_argument(
        "--plot",
        default="hypernet_tradeoff.png",
        help="file name of the trade-off plot (PNG) in --out (default: %(default)s)",
    )
    parser.add_argument("--export-lambda", type=float, default=1.0)
    parser.add_argument("--prune-fraction", type=float, default=0.8)
    add_output_folder(parser, "hypernet_digits")
    args = parse_args_with_output(parser, argv)  # checks --out before training

    (x, y), (x_test, y_test) = tfpriors.datasets.load_digits()
    model = tfpriors.hyper.LambdaHyperModel(
        layers=[
            tfpriors.layers.HyperVariationalDense(100, activation="relu", kind=args.kind),
            tfpriors.layers.HyperVariationalDense(10, kind=args.kind),
        ],
        lambda_range=(1e-3, 10.0),
        lambda_draws=args.lambda_draws,
        prior_variance=0.1,
    )
    tfpriors.set_dataset_size(model, len(x))
    model.compile(
        keras.optimizers.SGD(0.05, momentum=0.9),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(
        x,
        y,
        epochs=args.epochs,
        batch_size=32,
        verbose=0,
        callbacks=[tfpriors.callbacks.EpochProgressBar(f"{args.kind} hypernetwork")],
    )

    curve = tfpriors.hyper.tradeoff_curve(
        model,
        (x_test, y_test),
        lambdas=[1e-3, 1e-2, 0.1, 1.0, 10.0],
        path=os.path.join(args.out, args.plot),
        fractions=[0.0, 0.5, 0.7, 0.8, 0.9, 0.95],
    )
    print(curve)
    print(f"trade-off plot: {curve.path}")

    pruned = model.at(args.export_lambda, prune_fraction=args.prune_fraction)
    report = tfpriors.export.to_tflite(
        pruned, os.path.join(args.out, "hypernet.tflite"), verify_data=x_test[:200]
    )
    print(f"lambda = {args.export_lambda:g}, {args.prune_fraction:.0%} of the weights removed:")
    print(report)


if __name__ == "__main__":
    main()
