"""Greedy Policy Search on digits: find a TTA policy on a held-out split, test it.

    python examples/gps_digits.py [--epochs 15] [--pool-size 60] [--out examples_out/gps_digits]

The search split is the last 300 training images (held out from training);
the policy is scored on the test set against the shift+rotate policy used in
training and written to ``OUT/policy.json``.
"""

import argparse
import os
import sys

from tfpriors_cli import add_output_folder, parse_args_with_output, start_tensorflow

start_tensorflow()  # imports TensorFlow without its start-up log lines

import tfpriors  # noqa: E402
from tfpriors import tta  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tta_digits import DIGITS_POLICY, train_member  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15, help="training epochs (default 15)")
    parser.add_argument(
        "--pool-size", type=int, default=60, help="candidate sub-policies (default 60)"
    )
    parser.add_argument(
        "--policy-length", type=int, default=5, help="sub-policies chosen (default 5)"
    )
    add_output_folder(parser, "gps_digits")
    args = parse_args_with_output(parser, argv)  # checks --out before training

    (x, y), (x_test, y_test) = tfpriors.datasets.load_digits(flat=False)
    x_train, y_train, x_search, y_search = x[:-300], y[:-300], x[-300:], y[-300:]
    model = train_member(x_train, y_train, seed=0, epochs=args.epochs)
    search = tta.GreedyPolicySearch(
        pool_size=args.pool_size,
        policy_length=args.policy_length,
        ops_per_subpolicy=(2, 3),
        magnitude_bound=6,
    )
    policy = search.fit([model], x_search, y_search)
    path = os.path.join(args.out, "policy.json")
    policy.to_json(path)
    print(policy)
    print(f"wrote {path}")
    for name, candidate in (("shift+rotate", DIGITS_POLICY), ("GPS", policy)):
        metrics = tta.TTAPredictor(model, candidate, num_samples=len(candidate) * 2).evaluate(
            x_test, y_test
        )
        print(
            f"{name:12s} accuracy {metrics['accuracy']:.2%}  calibrated NLL "
            f"{metrics['calibrated_nll']:.4f}"
        )


if __name__ == "__main__":
    main()
