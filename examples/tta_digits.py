"""Test-time augmentation for a small CNN and a 3-member ensemble on digits.

    python examples/tta_digits.py [--epochs 15] [--members 3] [--out examples_out/tta_digits]

Trains each member with random shifts and small rotations (digits are not
mirror-symmetric, so no flips), uses the same policy at test time, and prints
accuracy, NLL, calibrated NLL, ECE and Brier for single model / ensemble x no
TTA / TTA. Writes the ensemble's reliability diagram with TTA to
``OUT/reliability.png``.
"""

import argparse
import os

from tfpriors_cli import add_output_folder, parse_args_with_output, start_tensorflow

start_tensorflow()  # imports TensorFlow without its start-up log lines

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfpriors  # noqa: E402
from tfpriors import calibration, tta  # noqa: E402

DIGITS_POLICY = tta.Policy([[("crop", 10), ("rotate", 5)]])


def train_member(x, y, seed, epochs):
    keras.utils.set_random_seed(seed)
    model = tfpriors.models.small_cnn((8, 8, 1), 10)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    policy = DIGITS_POLICY
    for epoch in range(epochs):
        augmented = policy.augment(x, draw=epoch, seed=seed * 1000 + epoch)
        model.fit(augmented, y, epochs=1, batch_size=64, verbose=0)
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15, help="epochs per member (default 15)")
    parser.add_argument("--members", type=int, default=3, help="ensemble size (default 3)")
    add_output_folder(parser, "tta_digits")
    args = parse_args_with_output(parser, argv)  # checks --out before training

    (x, y), (x_test, y_test) = tfpriors.datasets.load_digits(flat=False)
    ensemble = [train_member(x, y, seed, args.epochs) for seed in range(args.members)]
    rows = {}
    for label, models in (("single", ensemble[:1]), ("ensemble", ensemble)):
        for policy_name, policy, samples in (
            ("no TTA", None, 1),
            ("shift+rotate", DIGITS_POLICY, 10),
        ):
            predictor = tta.TTAPredictor(models, policy, num_samples=samples)
            rows[(label, policy_name)] = predictor.evaluate(x_test, y_test)
    print(f"{'':22s} {'accuracy':>9s} {'NLL':>7s} {'cNLL':>7s} {'ECE':>7s} {'Brier':>7s}")
    for (label, policy_name), m in rows.items():
        print(
            f"{label + ', ' + policy_name:22s} {m['accuracy']:9.2%} {m['nll']:7.4f} "
            f"{m['calibrated_nll']:7.4f} {m['ece']:7.4f} {m['brier']:7.4f}"
        )
    probs = tta.TTAPredictor(ensemble, DIGITS_POLICY, 10).predict(x_test)
    path = os.path.join(args.out, "reliability.png")
    calibration.reliability_diagram(
        probs, y_test, path, title=f"{args.members}-member ensemble + TTA on digits"
    )
    print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
