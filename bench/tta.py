"""Test-time augmentation on digits: policies x ensembles, calibrated, with DEE.

Ten small CNNs are trained on the digits training images minus the last
400 (the search split), each with random shifts and small rotations. On
the test set, single model and 5-member ensemble are scored with no TTA,
the training policy (shift+rotate), RandAugment (n=2, M picked by grid
search on the search split) and the Greedy Policy Search policy (searched
on the search split with the single model, pool 200), for 5, 10 and 20
samples. DEE: ensemble size without TTA that reaches the same calibrated
NLL (deep ensembles of 1..10 members give the curve).

Equal compute: with a budget of B model calls per image (B = 5, 10),
k members x B/k TTA samples against the B-member ensemble without TTA.

Goals: GPS has the lowest calibrated NLL in every row (the GPS paper's
claim); TTA improves the ensemble at equal compute (the best k < B split
has a lower calibrated NLL than B members without TTA); TTAPredictor is at
least 5x faster per image than what a careful user writes by hand: a loop
over the augmentations that augments the whole test set and calls the model
once per augmentation (timed alternately with it, medians of 7 repeats).
MeTTA: linear-probe accuracy of mean vs central embeddings (reported, no
goal). CIFAR-10 runs the same pipeline (flip+crop training) when its file is
in the Keras cache; otherwise the JSON says why it was skipped.

    python bench/tta.py [--quick]
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import tfpriors  # noqa: E402
from tfpriors import calibration, tta  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

# Per data set: training policy, search split, member recipe, test subset.
SETTINGS = {
    "digits": {
        "train_policy": tta.Policy([[("crop", 10), ("rotate", 5)]]),
        "train_policy_name": "shift+rotate",
        "search_split": 400,
        "epochs": 15,
        "width": 16,
        "train_subset": None,
        "test_subset": None,
        "magnitude_bound": 6,
    },
    "cifar10": {
        "train_policy": tta.Policy.flip_crop(),
        "train_policy_name": "flip+crop",
        "search_split": 2000,
        "epochs": 10,
        "width": 32,
        "train_subset": 20000,
        "test_subset": 2000,
        "magnitude_bound": 6,
    },
}
MEMBERS = 10


def train_member(x, y, seed, epochs, policy, width):
    keras.utils.set_random_seed(seed)
    model = tfpriors.models.small_cnn(x.shape[1:], 10, width=width)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    for epoch in range(epochs):
        augmented = policy.augment(x, draw=epoch, seed=seed * 1000 + epoch)
        model.fit(augmented, y, epochs=1, batch_size=64, verbose=0)
    return model


def per_augmentation_loop_probs(model, policy, x, samples, seed):
    """The careful hand-written baseline: one batched model call per augmentation.

    For each of the ``samples`` augmentations the whole of ``x`` is augmented
    and sent through the model in one call; the softmax outputs are averaged.
    """
    generator = keras.random.SeedGenerator(seed)
    total = 0.0
    for s in range(samples):
        augmented = policy.augment(x, draw=s, seed=generator)
        total = total + keras.ops.convert_to_numpy(
            keras.ops.softmax(model(augmented, training=False))
        )
    return total / samples


def scored(models, policy, samples, x, y, curve):
    metrics = tta.TTAPredictor(
        models, policy, num_samples=1 if policy is None else samples
    ).evaluate(x, y)
    metrics["dee"] = calibration.deep_ensemble_equivalent(metrics["calibrated_nll"], curve)
    return metrics


def run_dataset(name, data, quick):
    """Policies x ensembles, equal-compute splits and MeTTA on one data set."""
    config = SETTINGS[name]
    train_policy, policy_name = config["train_policy"], config["train_policy_name"]
    epochs, pool_size, length = (2, 8, 2) if quick else (config["epochs"], 200, 5)
    sample_counts = (5,) if quick else (5, 10, 20)
    (x, y), (x_test, y_test) = data
    if config["train_subset"]:
        x, y = (
            x[: config["train_subset"] + config["search_split"]],
            y[: config["train_subset"] + config["search_split"]],
        )
    if config["test_subset"]:
        x_test, y_test = x_test[: config["test_subset"]], y_test[: config["test_subset"]]
    split = config["search_split"]
    x_train, y_train, x_search, y_search = x[:-split], y[:-split], x[-split:], y[-split:]
    members = [
        train_member(x_train, y_train, seed, epochs, train_policy, config["width"])
        for seed in range(MEMBERS)
    ]
    print(f"[tta/{name}] trained {MEMBERS} members", flush=True)

    # Deep-ensemble curve without TTA, for the DEE and the equal-compute baseline.
    curve = {
        k: tta.TTAPredictor(members[:k], num_samples=1).evaluate(x_test, y_test)["calibrated_nll"]
        for k in range(1, MEMBERS + 1)
    }

    grid = {
        m: tta.TTAPredictor(members[0], tta.Policy.randaugment(2, m), num_samples=5).evaluate(
            x_search, y_search
        )["calibrated_nll"]
        for m in (3, 6, 9, 12)
    }
    best_m = min(grid, key=grid.get)
    search = tta.GreedyPolicySearch(
        pool_size=pool_size,
        policy_length=length,
        ops_per_subpolicy=(2, 3),
        magnitude_bound=config["magnitude_bound"],
    )
    gps = search.fit([members[0]], x_search, y_search, verbose=0)
    print(f"[tta/{name}] RandAugment M={best_m}; GPS policy {gps}", flush=True)

    policies = {
        "no TTA": None,
        policy_name: train_policy,
        f"randaugment(2, {best_m})": tta.Policy.randaugment(2, best_m),
        "GPS": gps,
    }
    rows, goals = [], []
    for label, models in (("single", members[:1]), ("ensemble of 5", members[:5])):
        for samples in sample_counts:
            row = {
                "models": label,
                "samples": samples,
                "policies": {
                    p: scored(models, policy, samples, x_test, y_test, curve)
                    for p, policy in policies.items()
                },
            }
            best = min(row["policies"], key=lambda n: row["policies"][n]["calibrated_nll"])
            row["best"] = best
            rows.append(row)
            runner_up = min(v["calibrated_nll"] for n, v in row["policies"].items() if n != "GPS")
            goals.append(
                _common.goal_row(
                    f"{name}, {label}, {samples} samples: GPS calibrated NLL / best other",
                    row["policies"]["GPS"]["calibrated_nll"],
                    "nats",
                    "best other policy",
                    runner_up,
                    "<=",
                    1.0,
                    note=f"lowest here: {best}",
                )
            )
            print(f"[tta/{name}] {label}, {samples} samples: best {best}", flush=True)

    # Equal compute: B model calls per image, as k members x B/k augmentations.
    equal_compute = []
    for budget in (5, 10):
        splits = []
        for k in (k for k in range(1, budget) if budget % k == 0):
            for p in (policy_name, "GPS"):
                metrics = scored(members[:k], policies[p], budget // k, x_test, y_test, curve)
                splits.append({"members": k, "samples": budget // k, "policy": p, **metrics})
        best = min(splits, key=lambda r: r["calibrated_nll"])
        equal_compute.append(
            {
                "budget": budget,
                "ensemble_calibrated_nll": curve[budget],
                "splits": splits,
                "best": best,
            }
        )
        goals.append(
            _common.goal_row(
                f"{name}, {budget} calls per image: best members x TTA split / "
                f"{budget}-member ensemble (calibrated NLL)",
                best["calibrated_nll"],
                "nats",
                f"{budget}-member ensemble, no TTA",
                curve[budget],
                "<=",
                1.0,
                note=f"best split: {best['members']} members x {best['samples']} "
                f"{best['policy']} samples",
            )
        )

    # MeTTA: linear probe on central vs mean embeddings of the "features" layer.
    identity = tta.Policy.identity()
    metta = {
        "central": tta.linear_probe(
            tta.mean_embeddings(members[0], "features", x_train, identity, 1),
            y_train,
            tta.mean_embeddings(members[0], "features", x_test, identity, 1),
            y_test,
        ),
        "mean": tta.linear_probe(
            tta.mean_embeddings(members[0], "features", x_train, train_policy, 16),
            y_train,
            tta.mean_embeddings(members[0], "features", x_test, train_policy, 16),
            y_test,
        ),
    }
    settings = {
        "epochs": epochs,
        "members": MEMBERS,
        "search_split": split,
        "train_images": len(x_train),
        "test_images": len(x_test),
        "train_policy": policy_name,
        "pool_size": pool_size,
        "policy_length": length,
        "randaugment_grid": grid,
        "randaugment_best_m": best_m,
        "gps_policy": gps.to_dict(),
        "ensemble_curve": curve,
    }
    return {
        "settings": settings,
        "rows": rows,
        "equal_compute": equal_compute,
        "metta": metta,
        "goals": goals,
        "members": members,
        "x_test": x_test,
        "policy": train_policy,
    }


def speed(model, policy, x_test, quick):
    """TTAPredictor against a loop that batches the images per augmentation.

    Both take the whole test set; their calls alternate inside every repeat
    so that a slow phase of the shared CPU hits both alike.
    """
    samples, repeats = (5, 3) if quick else (10, 7)
    predictor = tta.TTAPredictor(model, policy, num_samples=samples)

    def predictor_run():  # returns None: time_interleaved then takes the wall time
        predictor.predict(x_test)

    def loop_run():
        per_augmentation_loop_probs(model, policy, x_test, samples, 0)

    times = _common.time_interleaved({"predictor": predictor_run, "loop": loop_run}, repeats)
    to_ms = lambda seconds: [1e3 * t / len(x_test) for t in seconds]  # noqa: E731
    batched, looped = to_ms(times["predictor"]), to_ms(times["loop"])
    result = {
        "ms_per_image_batched": batched,
        "ms_per_image_per_augmentation_loop": looped,
        "median_batched": _common.median(batched),
        "median_per_augmentation_loop": _common.median(looped),
        "samples": samples,
        "images": len(x_test),
        "repeats": repeats,
        "baseline": "for each augmentation: augment the whole test set, one model call, "
        "softmax; then the mean over augmentations",
    }
    goal = _common.goal_row(
        f"TTAPredictor speed-up over a per-augmentation batched loop ({samples} samples)",
        result["median_per_augmentation_loop"] / result["median_batched"],
        "x",
        "per-augmentation batched loop",
        1.0,
        ">=",
        5.0,
    )
    return result, goal


def public(result):
    return {k: v for k, v in result.items() if k not in ("members", "x_test", "policy")}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    start = time.perf_counter()

    digits = run_dataset("digits", tfpriors.datasets.load_digits(flat=False), args.quick)
    speed_result, speed_goal = speed(
        digits["members"][0], digits["policy"], digits["x_test"], args.quick
    )
    try:
        cifar_data = tfpriors.datasets.load_cifar10()
    except tfpriors.datasets.DatasetUnavailableError as error:
        cifar = {"skipped": str(error).split(":")[0] + ": not in the Keras cache, offline."}
        print(f"[tta] CIFAR-10 skipped: {cifar['skipped']}", flush=True)
    else:
        cifar = public(run_dataset("cifar10", cifar_data, args.quick))

    payload = {
        **_common.result_header("tta", "Test-time augmentation on digits", __doc__, args.quick),
        "repeats": speed_result["repeats"],
        "repeat_kind": "interleaved timing repeats (metrics: one run, seed 0)",
        **public(digits),
        "speed": speed_result,
        "cifar10": cifar,
        "goals": digits["goals"] + [speed_goal] + cifar.get("goals", []),
        "seconds": time.perf_counter() - start,
    }
    _common.save_result("tta", args.quick, payload)


if __name__ == "__main__":
    main()
