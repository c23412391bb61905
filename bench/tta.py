"""Test-time augmentation on digits: policies x ensembles, calibrated, with DEE.

Five small CNNs are trained on the digits training images minus the last
300 (the search split), each with random shifts and small rotations. On
the test set, single model and 5-member ensemble are scored with no TTA,
the training policy (shift+rotate), RandAugment (n=2, M picked by grid
search on the search split) and the Greedy Policy Search policy (searched
on the search split with the single model), for 5, 10 and 20 samples.
DEE: ensemble size without TTA that reaches the same calibrated NLL (deep
ensembles of 1..5 members give the curve).

Goals: GPS has the lowest calibrated NLL in every row (the GPS paper's
claim); TTAPredictor is at least 5x faster per image than a Python loop
calling the model on each augmentation of each image. MeTTA: linear-probe
accuracy of mean vs central embeddings (reported, no goal).

    python bench/tta.py [--quick]
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfpriors  # noqa: E402
from tfpriors import calibration, tta  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

TRAIN_POLICY = tta.Policy([[("crop", 10), ("rotate", 5)]])
SEARCH_SPLIT = 300


def train_member(x, y, seed, epochs):
    keras.utils.set_random_seed(seed)
    model = tfpriors.models.small_cnn((8, 8, 1), 10)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    for epoch in range(epochs):
        augmented = TRAIN_POLICY.augment(x, draw=epoch, seed=seed * 1000 + epoch)
        model.fit(augmented, y, epochs=1, batch_size=64, verbose=0)
    return model


def python_loop_probs(model, policy, x, samples, seed):
    """The hand-written baseline: one model call per augmentation of each image."""
    generator = keras.random.SeedGenerator(seed)
    out = []
    for image in x:
        probs = [keras.ops.convert_to_numpy(keras.ops.softmax(
            model(policy.augment(image[None], draw=s, seed=generator), training=False)))
            for s in range(samples)]
        out.append(np.mean(probs, axis=0)[0])
    return np.array(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    epochs, pool_size, length = (2, 8, 2) if args.quick else (15, 100, 5)
    sample_counts = (5,) if args.quick else (5, 10, 20)
    start = time.perf_counter()

    (x, y), (x_test, y_test) = tfpriors.datasets.load_digits(flat=False)
    x_train, y_train = x[:-SEARCH_SPLIT], y[:-SEARCH_SPLIT]
    x_search, y_search = x[-SEARCH_SPLIT:], y[-SEARCH_SPLIT:]
    members = [train_member(x_train, y_train, seed, epochs) for seed in range(5)]
    print("[tta] trained 5 members", flush=True)

    # Deep-ensemble curve without TTA, for the DEE.
    curve = {k: tta.TTAPredictor(members[:k], num_samples=1).evaluate(x_test, y_test)
             ["calibrated_nll"] for k in range(1, 6)}

    grid = {}
    for m in (3, 6, 9, 12):
        grid[m] = tta.TTAPredictor(members[0], tta.Policy.randaugment(2, m), num_samples=5) \
            .evaluate(x_search, y_search)["calibrated_nll"]
    best_m = min(grid, key=grid.get)
    search = tta.GreedyPolicySearch(pool_size=pool_size, policy_length=length,
                                    ops_per_subpolicy=(2, 3), magnitude_bound=6)
    gps = search.fit([members[0]], x_search, y_search, verbose=0)
    print(f"[tta] RandAugment M={best_m}; GPS policy {gps}", flush=True)

    policies = {"no TTA": None, "shift+rotate": TRAIN_POLICY,
                f"randaugment(2, {best_m})": tta.Policy.randaugment(2, best_m), "GPS": gps}
    rows, goals = [], []
    for label, models in (("single", members[:1]), ("ensemble of 5", members)):
        for samples in sample_counts:
            row = {"models": label, "samples": samples, "policies": {}}
            for name, policy in policies.items():
                metrics = tta.TTAPredictor(models, policy, num_samples=1 if policy is None
                                           else samples).evaluate(x_test, y_test)
                metrics["dee"] = calibration.deep_ensemble_equivalent(
                    metrics["calibrated_nll"], curve)
                row["policies"][name] = metrics
            best = min(row["policies"], key=lambda n: row["policies"][n]["calibrated_nll"])
            row["best"] = best
            rows.append(row)
            gps_value = row["policies"]["GPS"]["calibrated_nll"]
            runner_up = min(v["calibrated_nll"] for n, v in row["policies"].items()
                            if n != "GPS")
            goals.append(_common.goal_row(
                f"{label}, {samples} samples: GPS calibrated NLL / best other", gps_value,
                "nats", "best other policy", runner_up, "<=", 1.0,
                note=f"lowest here: {best}"))
            print(f"[tta] {label}, {samples} samples: best {best}", flush=True)

    # Speed: batched predictor against a Python loop over images and augmentations.
    timing_images, samples = (x_test[:20], 5) if args.quick else (x_test[:100], 10)
    predictor = tta.TTAPredictor(members[0], TRAIN_POLICY, num_samples=samples)
    predictor.predict(timing_images[:4])
    python_loop_probs(members[0], TRAIN_POLICY, timing_images[:2], samples, 0)
    batched, looped = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        predictor.predict(timing_images)
        batched.append((time.perf_counter() - t0) / len(timing_images) * 1e3)
        t0 = time.perf_counter()
        python_loop_probs(members[0], TRAIN_POLICY, timing_images, samples, 0)
        looped.append((time.perf_counter() - t0) / len(timing_images) * 1e3)
    speed = {"ms_per_image_batched": batched, "ms_per_image_python_loop": looped,
             "median_batched": _common.median(batched),
             "median_python_loop": _common.median(looped), "samples": samples}
    goals.append(_common.goal_row(
        f"TTAPredictor speed-up over a Python loop ({samples} samples)",
        speed["median_python_loop"] / speed["median_batched"], "x", "Python loop", 1.0,
        ">=", 5.0))

    # MeTTA: linear probe on central vs mean embeddings of the "features" layer.
    central_train = tta.mean_embeddings(members[0], "features", x_train, tta.Policy.identity(), 1)
    central_test = tta.mean_embeddings(members[0], "features", x_test, tta.Policy.identity(), 1)
    mean_train = tta.mean_embeddings(members[0], "features", x_train, TRAIN_POLICY, 16)
    mean_test = tta.mean_embeddings(members[0], "features", x_test, TRAIN_POLICY, 16)
    metta = {"central": tta.linear_probe(central_train, y_train, central_test, y_test),
             "mean": tta.linear_probe(mean_train, y_train, mean_test, y_test)}

    payload = {
        **_common.result_header("tta", "Test-time augmentation on digits", __doc__,
                                args.quick),
        "repeats": 3,
        "repeat_kind": "timing repeats (metrics: one run, seed 0)",
        "settings": {"epochs": epochs, "pool_size": pool_size, "policy_length": length,
                     "randaugment_grid": grid, "randaugment_best_m": best_m,
                     "gps_policy": gps.to_dict(), "ensemble_curve": curve},
        "rows": rows, "speed": speed, "metta": metta, "goals": goals,
        "seconds": time.perf_counter() - start,
    }
    _common.save_result("tta", args.quick, payload)


if __name__ == "__main__":
    main()
