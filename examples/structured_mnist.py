"""Structured Bayesian Pruning of LeNet-5 on real MNIST digits (Neklyudov et al., 2017).

Pretrain a dense LeNet-5, insert a StructuredBayesianPruning gate after every
hidden Conv2D / Dense layer (``tfpriors.structured``), fine-tune with the KL
weight warmed up, then export: pruned filters and neurons are removed, so the
.tflite file is a smaller *dense* network that any runtime runs faster.

    python examples/structured_mnist.py                 # a few minutes on a laptop CPU
    python examples/structured_mnist.py --epochs 120 --out runs/structured

The data are the 5,000 MNIST images bundled offline
(``tfpriors.datasets.load_mnist_sample``). Outputs go to ``--out`` (default
``examples_out/structured_mnist``): ``structured.tflite`` and
``structured_sparsity.png``.
"""

import argparse
import os

from tfpriors_cli import add_output_folder, parse_args_with_output, start_tensorflow

start_tensorflow()  # imports TensorFlow without its start-up log lines

import keras  # noqa: E402

import tfpriors  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrain-epochs", type=int, default=15)
    # LeNet-5's filters are pruned only as fast as the weights learn to do without
    # them: 40 epochs leave ~3x fewer FLOPs on this sample, 80 about 5x
    # (bench/structured.py).
    parser.add_argument("--epochs", type=int, default=80, help="fine-tuning epochs")
    parser.add_argument(
        "--warmup", type=int, default=3, help="epochs over which the KL weight rises to 1"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    add_output_folder(parser, "structured_mnist")
    args = parse_args_with_output(parser, argv)  # checks --out before training

    (x_train, y_train), (x_test, y_test) = tfpriors.datasets.load_mnist_sample()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    dense = tfpriors.models.lenet5(x_train.shape[1:], 10, kind="dense")
    dense.compile("adam", loss, metrics=["accuracy"])
    dense.fit(x_train, y_train, epochs=args.pretrain_epochs, batch_size=args.batch_size, verbose=0)
    _, dense_accuracy = dense.evaluate(x_test, y_test, verbose=0)

    gated = tfpriors.structured(dense)
    tfpriors.set_dataset_size(gated, len(x_train))
    # The weights fine-tune at Adam's usual 1e-3; the gates' mu and log_sigma at
    # 30x that (their default learning_rate_multiplier): they start at
    # log_sigma = -5 and must travel ~5 before a unit can be pruned. Dense units
    # go within a few epochs, filters over tens (the weights must first learn to
    # do without them).
    gated.compile(keras.optimizers.Adam(1e-3), loss, metrics=["accuracy"])
    gated.fit(
        x_train,
        y_train,
        epochs=args.epochs,
        batch_size=args.batch_size,
        verbose=0,
        callbacks=[
            tfpriors.callbacks.KLWarmup(0, max(1, min(args.warmup, args.epochs))),
            tfpriors.callbacks.EpochProgressBar("structured"),
        ],
    )
    _, accuracy = gated.evaluate(x_test, y_test, verbose=0)

    os.makedirs(args.out, exist_ok=True)
    print(tfpriors.compression_report(gated))
    print(f"test error: dense {1 - dense_accuracy:.2%}, structured {1 - accuracy:.2%}")
    report = tfpriors.export.to_tflite(
        gated, os.path.join(args.out, "structured.tflite"), verify_data=x_test[:256]
    )
    print(report)
    print(
        "units kept:",
        {name: f"{kept}/{total}" for name, (kept, total) in report.units_kept.items()},
    )
    tfpriors.plotting.plot_sparsity(gated, os.path.join(args.out, "structured_sparsity.png"))


if __name__ == "__main__":
    main()
