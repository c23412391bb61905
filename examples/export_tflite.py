"""Train a Sparse VD LeNet-300-100 on digits, export it to TFLite and check it on LiteRT.

    python examples/export_tflite.py                   # float32
    python examples/export_tflite.py --quantize dynamic
    python mobile/run_tflite.py digits.tflite --input digits_test.npy

The report shows the file size and latency beside the dense export of the
same architecture, the ops in the file, and how closely LiteRT agrees with
Keras on the test set.
"""

import argparse

import keras
import numpy as np

import tfpriors


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quantize", choices=["none", "dynamic", "int8"], default="none")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--out", default="digits.tflite")
    args = parser.parse_args()

    (x_train, y_train), (x_test, y_test) = tfpriors.datasets.load_digits()
    model = tfpriors.models.lenet_300_100((64,), 10, kind="sparse_vd")
    tfpriors.set_dataset_size(model, len(x_train))
    model.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    model.fit(
        x_train,
        y_train,
        epochs=args.epochs,
        batch_size=64,
        verbose=0,
        callbacks=[
            tfpriors.callbacks.KLWarmup(0, args.epochs // 3),
            tfpriors.callbacks.EpochProgressBar("sparse vd"),
        ],
    )
    print(tfpriors.compression_report(model))

    quantize = None if args.quantize == "none" else args.quantize
    report = tfpriors.export.to_tflite(
        model, args.out, quantize=quantize, representative_data=x_train[:200], verify_data=x_test
    )
    print(report)
    np.save("digits_test.npy", x_test[:16])


if __name__ == "__main__":
    main()
