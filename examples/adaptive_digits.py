"""Spatially adaptive computation on 8x8 digits: train, switch modes, count FLOPs, draw.

Trains a small CIFAR-style ResNet whose residual stages are SACT blocks
(or probabilistic ACT blocks with ``--kind pact``), prints accuracy and the
FLOPs actually spent vs the plain ResNet, exports the threshold /
inference graph to TFLite, and writes a ponder map: the number of residual
units evaluated at each position of a few test digits.

    python examples/adaptive_digits.py [--kind sact|act|pact] [--epochs 15]
        [--out examples_out/adaptive_digits]
"""

import argparse
import os

from tfpriors_cli import add_output_folder, parse_args_with_output, start_tensorflow

start_tensorflow()  # imports TensorFlow without its start-up log lines

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfpriors  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", default="sact", choices=["act", "sact", "pact"])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--ponder-cost", type=float, default=0.1)
    add_output_folder(parser, "adaptive_digits")
    args = parse_args_with_output(parser, argv)  # checks --out before training

    keras.utils.set_random_seed(0)
    (x, y), (xt, yt) = tfpriors.datasets.load_digits(flat=False)
    model = tfpriors.models.act_resnet(
        x.shape[1:],
        10,
        blocks=(3, 3, 3),
        widths=(8, 16, 32),
        kind=args.kind,
        ponder_cost=args.ponder_cost,
    )
    model.compile(
        keras.optimizers.Adam(3e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=False,
    )
    callbacks = [tfpriors.callbacks.EpochProgressBar(args.kind)]
    if args.kind == "pact":
        callbacks.append(tfpriors.callbacks.TemperatureSchedule(1.0, 0.3, end_epoch=args.epochs))
    model.fit(x, y, epochs=args.epochs, batch_size=64, verbose=0, callbacks=callbacks)
    if args.kind == "pact":
        for mode in ("relaxed", "discrete", "threshold"):
            tfpriors.adaptive.set_mode(model, mode)
            accuracy = np.mean(np.argmax(model.predict(xt, verbose=0), 1) == yt)
            ratio = tfpriors.adaptive.flops_report(model, xt).ratio
            print(f"{mode:>9}: accuracy {accuracy:.2%}, FLOPs {ratio:.0%} of the plain ResNet")
    else:
        accuracy = np.mean(np.argmax(model.predict(xt, verbose=0), 1) == yt)
        print(f"accuracy {accuracy:.2%}")
    print(tfpriors.adaptive.flops_report(model, xt))
    report = tfpriors.export.to_tflite(
        model,
        os.path.join(args.out, f"{args.kind}.tflite"),
        verify_data=xt[:64],
        compare_dense=False,
    )
    print(report)
    path = os.path.join(args.out, "ponder.png")
    tfpriors.adaptive.ponder_map(model, xt[:6], path)
    print(f"ponder map: {path}")


if __name__ == "__main__":
    main()
