"""Lambda-hypernetwork on digits: one training run, a model for every complexity level.

A 64-100-10 net whose variational posterior is a function of the KL weight
lambda (Grebenkova et al.): trained once with lambda drawn log-uniformly in
[1e-3, 10] (5 draws per batch), then evaluated at several lambdas, pruned by
the relative density mu^2 / sigma^2 and exported to TFLite.

    python examples/hypernet_digits.py                          # linear, 50 epochs
    python examples/hypernet_digits.py --kind lowrank --plot lowrank.png
"""

import argparse
import os
import tempfile

import keras

import tfpriors


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", default="linear", choices=["linear", "lowrank"])
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--lambda-draws", type=int, default=5)
    parser.add_argument(
        "--plot", default="hypernet_tradeoff.png", help="where to write the trade-off plot (PNG)"
    )
    parser.add_argument("--export-lambda", type=float, default=1.0)
    parser.add_argument("--prune-fraction", type=float, default=0.8)
    args = parser.parse_args()

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
        path=args.plot,
        fractions=[0.0, 0.5, 0.7, 0.8, 0.9, 0.95],
    )
    print(curve)
    print(f"trade-off plot: {curve.path}")

    pruned = model.at(args.export_lambda, prune_fraction=args.prune_fraction)
    with tempfile.TemporaryDirectory() as tmp:
        report = tfpriors.export.to_tflite(
            pruned, os.path.join(tmp, "hypernet.tflite"), verify_data=x_test[:200]
        )
    print(f"lambda = {args.export_lambda:g}, {args.prune_fraction:.0%} of the weights removed:")
    print(report)


if __name__ == "__main__":
    main()
