"""Greedy Policy Search on digits: find a TTA policy on a held-out split, test it.

    python examples/gps_digits.py              # writes policy.json

The search split is the last 300 training images (held out from training);
the policy is scored on the test set against the shift+rotate policy used in
training.
"""

import sys

import tfpriors
from tfpriors import tta

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from tta_digits import DIGITS_POLICY, train_member  # noqa: E402


def main(epochs=15, pool_size=60, policy_length=5):
    (x, y), (x_test, y_test) = tfpriors.datasets.load_digits(flat=False)
    x_train, y_train, x_search, y_search = x[:-300], y[:-300], x[-300:], y[-300:]
    model = train_member(x_train, y_train, seed=0, epochs=epochs)
    search = tta.GreedyPolicySearch(
        pool_size=pool_size,
        policy_length=policy_length,
        ops_per_subpolicy=(2, 3),
        magnitude_bound=6,
    )
    policy = search.fit([model], x_search, y_search)
    policy.to_json("policy.json")
    print(policy)
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
