"""Perforated convolutions on digits: fixed rates per mask type, greedy rates, TFLite.

    python examples/perforation_digits.py      # writes into examples_out/perforation_digits
    python examples/perforation_digits.py --epochs 5 --size 8 --target-speedup 1.5

Trains a two-convolution net on the digits (upsampled from 8x8 to --size,
default 16, so that the convolutions cost something), then
1. perforates both convolutions at 50% with each mask type (no fine-tuning)
   and prints the test error;
2. fine-tunes the grid-perforated model for a few epochs (the layer trains
   like Conv2D);
3. lets `greedy_perforation` choose per-layer rates for a target speedup
   on a validation split and prints its report;
4. draws conv2's mask (``OUT/perforation_mask.png``) and exports the
   perforated model to TFLite with builtin ops only (``OUT/perforated.tflite``),
   verified against Keras.

The images are small, so layer overheads blur the measured speed-ups; the
perforation benchmark (bench/perforation.py) times VGG-sized layers.
"""

import argparse
import os

from tfpriors_cli import add_output_folder, parse_args_with_output, start_tensorflow

start_tensorflow()  # imports TensorFlow without its start-up log lines

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfpriors  # noqa: E402


def digits_net(size):
    inputs = keras.Input((size, size, 1))
    h = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv1")(inputs)
    h = keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="conv2")(h)
    h = keras.layers.MaxPooling2D(3, 2)(h)
    h = keras.layers.Flatten()(h)
    return keras.Model(inputs, keras.layers.Dense(10, name="head")(h))


def compile_model(model):
    model.compile(
        keras.optimizers.Adam(3e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def test_error(model, x, y):
    return float(np.mean(model.predict(x, verbose=0).argmax(1) != y))


def load(size):
    (x, y), (x_test, y_test) = tfpriors.datasets.load_digits()

    def images(flat):
        small = flat.reshape(-1, 8, 8, 1)
        return small if size == 8 else tf.image.resize(small, (size, size)).numpy()

    return (images(x), y), (images(x_test), y_test)


def main(
    epochs=15,
    fine_tune_epochs=3,
    target_speedup=1.5,
    size=16,
    mask_png="perforation_mask.png",
    out=os.path.join("examples_out", "perforation_digits"),
):
    (x, y), (x_test, y_test) = load(size)
    x_train, y_train, x_val, y_val = x[:-300], y[:-300], x[-300:], y[-300:]
    keras.utils.set_random_seed(0)
    model = compile_model(digits_net(size))
    model.fit(x_train, y_train, epochs=epochs, batch_size=64, verbose=0)
    print(f"fused op loaded: {tfpriors.ops.has_fused_op()}")
    print(f"dense test error: {test_error(model, x_test, y_test):.2%}")

    rates = {"conv1": 0.5, "conv2": 0.5}
    for mask in tfpriors.perforation.MASK_KINDS:
        fast = tfpriors.perforation.perforate(model, rates, mask=mask, data=(x_val, y_val))
        print(
            f"  {mask:9s} masks, both convs at 50%: test error "
            f"{test_error(fast, x_test, y_test):.2%} (no fine-tuning)"
        )

    fast = compile_model(tfpriors.perforation.perforate(model, rates, mask="grid"))
    fast.fit(x_train, y_train, epochs=fine_tune_epochs, batch_size=64, verbose=0)
    print(
        f"grid masks after {fine_tune_epochs} fine-tuning epochs: test error "
        f"{test_error(fast, x_test, y_test):.2%}"
    )

    greedy = tfpriors.perforation.greedy_perforation(
        model, (x_val, y_val), target_speedup=target_speedup
    )
    print(greedy.perforation_report)

    mask_png = os.path.join(out, mask_png)
    tfpriors.perforation.plot_mask(fast.get_layer("conv2"), mask_png)
    print(f"wrote {mask_png}")
    report = tfpriors.export.to_tflite(
        fast,
        os.path.join(out, "perforated.tflite"),
        verify_data=x_test[:100],
        compare_dense=False,
    )
    print(report)
    return greedy.perforation_report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--size", type=int, default=16, help="image side after upsampling")
    parser.add_argument("--fine-tune-epochs", type=int, default=3)
    parser.add_argument("--target-speedup", type=float, default=1.5)
    parser.add_argument(
        "--mask-png",
        default="perforation_mask.png",
        help="file name of conv2's mask picture in --out (default: %(default)s)",
    )
    add_output_folder(parser, "perforation_digits")
    args = parse_args_with_output(parser)  # checks --out before training
    main(
        args.epochs, args.fine_tune_epochs, args.target_speedup, args.size, args.mask_png, args.out
    )
