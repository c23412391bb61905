"""Train a Sparse VD LeNet-300-100 on digits, export it to TFLite and check it on LiteRT.

    python examples/export_tflite.py                   # float32
    python examples/export_tflite.py --quantize dynamic
    python mobile/run_tflite.py examples_out/export_tflite/digits.tflite \
        --input examples_out/export_tflite/digits_test.npy

The report shows the file size and latency beside the dense export of the
same architecture, the ops in the file, and how closely LiteRT agrees with
Keras on the test set. Writes ``OUT/digits.tflite`` and 16 test images,
``OUT/digits_test.npy``, for ``mobile/run_tflite.py``.
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
    parser.add_argument("--quantize", choices=["none", "dynamic", "int8"], default="none")
    parser.add_argument("--epochs", type=int, default=60)
    add_output_folder(parser, "export_tflite")
    args = parse_args_with_output(parser, argv)  # checks --out before training

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
            tfpriors.callbacks.KLWarmup(0, max(1, args.epochs // 3)),
            tfpriors.callbacks.EpochProgressBar("sparse vd"),
        ],
    )
    print(tfpriors.compression_report(model))

    quantize = None if args.quantize == "none" else args.quantize
    report = tfpriors.export.to_tflite(
        model,
        os.path.join(args.out, "digits.tflite"),
        quantize=quantize,
        representative_data=x_train[:200],
        verify_data=x_test,
    )
    print(report)
    images = os.path.join(args.out, "digits_test.npy")
    with tfpriors.io.atomic_path(images) as temporary:
        np.save(temporary, x_test[:16])
    print(f"wrote {report.path} and {images}")


if __name__ == "__main__":
    main()
