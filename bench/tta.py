"""Test-time augmentation on real MNIST images: policies x ensembles, calibrated, with DEE.

Data: the MNIST sample (``tfpriors.datasets.load_mnist_sample()``): 4,000
training and 1,000 test images, 28x28. A stratified search split of 500
training images (50 per class, seed 0) is held out; ten small CNNs
(``tfpriors.models.small_cnn``, width 16) are trained on the other 3,500,
each from its own seed, with light augmentation: every epoch a random shift
(reflect-padded crop, magnitude 10: up to 8% of the side) and a rotation of
up to 10 degrees per image. The number of epochs is chosen on the search
split (member 0's calibrated NLL after each of up to 12 epochs); the test
set is used for nothing but the final figures.

Policies on the 1,000 test images: no TTA, shift (the crop alone),
shift+rotate (the training augmentation), RandAugment (n=2, M picked from
3/6/9/12 on the search split) and the Greedy Policy Search policy (Lyzhov
et al., 2020: pool of 200 random sub-policies of 2-3 ops, magnitude bound 6,
policy length 5, searched on the search split with member 0). Rows: the
single model and the ensemble of 5 at 5, 10 and 20 samples; at 10 samples
(the goal rows) every policy is scored with 3 augmentation seeds and the
median calibrated NLL counts. DEE: the size of a deep ensemble without TTA
with the same calibrated NLL (ensembles of 1..10 members give the curve).
Equal compute: with a budget of B model calls per image (B = 5, 10), k
members x B/k TTA samples against B members without TTA.

Goals: GPS has the lowest calibrated NLL at 10 samples, for the single model
and the ensemble of 5 (the GPS paper's claim, its anchor: GPS ahead of
every other policy on CIFAR and ImageNet); TTA improves the ensemble at
equal compute (the best k < B split beats B members without TTA);
TTAPredictor is at least 5x faster per image than what a careful user
writes by hand: a loop over the augmentations that augments the whole test
set and calls the model once per augmentation (timed alternately with it,
medians of 7 repeats; the augmentation and the model call are also timed
alone, eagerly and traced, which caps the reachable ratio). MeTTA:
linear-probe accuracy of mean vs central embeddings (reported, no goal).
CIFAR-10 runs the same pipeline (flip+crop training) when its file is in
the Keras cache; otherwise the JSON says why it was skipped. ``--quick``
runs 8x8 digits with 4 members and few epochs (a smoke test).

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
from tfpriors.tta import _compiled  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

SHIFT = [("crop", 10)]
SHIFT_ROTATE = [("crop", 10), ("rotate", 10)]

# Per data set: training policy, search split, member recipe, test subset.
SETTINGS = {
    "mnist": {
        "title": "MNIST sample",
        "train_policy": tta.Policy([SHIFT_ROTATE]),
        "train_policy_name": "shift+rotate",
        "extra_policies": {"shift": tta.Policy([SHIFT])},
        "search_split": 500,
        "max_epochs": 12,
        "width": 16,
        "members": 10,
        "train_subset": None,
        "test_subset": None,
        "magnitude_bound": 6,
        "pool_size": 200,
        "policy_length": 5,
        "sample_counts": (5, 10, 20),
        "goal_samples": 10,
        "seeds": 3,
        "budgets": (5, 10),
        "metta_samples": 16,
    },
    "digits": {
        "title": "digits (quick smoke run)",
        "train_policy": tta.Policy([[("crop", 10), ("rotate", 5)]]),
        "train_policy_name": "shift+rotate",
        "extra_policies": {"shift": tta.Policy([SHIFT])},
        "search_split": 200,
        "max_epochs": 3,
        "width": 8,
        "members": 4,
        "train_subset": None,
        "test_subset": None,
        "magnitude_bound": 6,
        "pool_size": 8,
        "policy_length": 2,
        "sample_counts": (4,),
        "goal_samples": 4,
        "seeds": 2,
        "budgets": (4,),
        "metta_samples": 4,
    },
    "cifar10": {
        "title": "CIFAR-10",
        "train_policy": tta.Policy.flip_crop(),
        "train_policy_name": "flip+crop",
        "extra_policies": {"flip": tta.Policy.flip()},
        "search_split": 2000,
        "max_epochs": 10,
        "width": 32,
        "members": 10,
        "train_subset": 20000,
        "test_subset": 2000,
        "magnitude_bound": 6,
        "pool_size": 200,
        "policy_length": 5,
        "sample_counts": (10,),
        "goal_samples": 10,
        "seeds": 1,
        "budgets": (5, 10),
        "metta_samples": 8,
    },
}
RANDAUGMENT_GRID = (3, 6, 9, 12)


def stratified_split(y, size, seed=0):
    """Indices ``(rest, held_out)`` with ``size // classes`` held-out images per class.

    Args:
        y: integer labels.
        size: the held-out count, a multiple of the number of classes.
        seed: the draw's seed.

    Returns:
        Two sorted index arrays that partition ``range(len(y))``.
    """
    classes = np.unique(y)
    if size % len(classes):
        raise ValueError(f"`size` must be a multiple of {len(classes)} classes; received {size}.")
    rng = np.random.default_rng(seed)
    held = np.zeros(len(y), bool)
    for label in classes:
        members = np.flatnonzero(y == label)
        if len(members) < size // len(classes):
            raise ValueError(f"class {label} has {len(members)} images, fewer than asked.")
        held[rng.choice(members, size // len(classes), replace=False)] = True
    return np.flatnonzero(~held), np.flatnonzero(held)


def compiled_member(x, seed, width):
    keras.utils.set_random_seed(seed)
    model = tfpriors.models.small_cnn(x.shape[1:], 10, width=width)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def train_epoch(model, x, y, policy, seed, epoch):
    augmented = policy.augment(x, draw=epoch, seed=seed * 1000 + epoch)
    model.fit(augmented, y, epochs=1, batch_size=64, verbose=0)


def choose_epochs(x, y, x_search, y_search, policy, width, max_epochs):
    """Member 0 trained epoch by epoch; the epoch count of its best search-split cNLL.

    Returns ``(epochs, curve, model)``: the model holds the weights of the
    chosen epoch, so it serves as member 0.
    """
    model = compiled_member(x, 0, width)
    curve, best = {}, None
    for epoch in range(max_epochs):
        train_epoch(model, x, y, policy, 0, epoch)
        score = tta.TTAPredictor(model, num_samples=1).evaluate(x_search, y_search)
        curve[epoch + 1] = score["calibrated_nll"]
        if best is None or curve[epoch + 1] < curve[best]:
            best, weights = epoch + 1, model.get_weights()
    model.set_weights(weights)
    return best, curve, model


def train_member(x, y, seed, epochs, policy, width):
    model = compiled_member(x, seed, width)
    for epoch in range(epochs):
        train_epoch(model, x, y, policy, seed, epoch)
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


def scored(models, policy, samples, x, y, curve, seed=0):
    metrics = tta.TTAPredictor(
        models, policy, num_samples=1 if policy is None else samples, seed=seed
    ).evaluate(x, y)
    metrics["dee"] = calibration.deep_ensemble_equivalent(metrics["calibrated_nll"], curve)
    return metrics


def median_metrics(runs):
    """Per metric, the median over runs (``runs``: dicts of floats); the runs kept too."""
    merged = {key: _common.median([run[key] for run in runs]) for key in runs[0]}
    merged["seeds"] = len(runs)
    merged["calibrated_nll_per_seed"] = [run["calibrated_nll"] for run in runs]
    return merged


def policy_goals(name, rows, goal_samples):
    """GPS against the best other policy in each row with ``goal_samples`` samples."""
    goals = []
    for row in rows:
        if row["samples"] != goal_samples:
            continue
        policies = row["policies"]
        others = {n: v["calibrated_nll"] for n, v in policies.items() if n != "GPS"}
        runner_up = min(others, key=others.get)
        gps = policies["GPS"]["calibrated_nll"]
        note = f"lowest here: {row['best']}"
        if gps > others[runner_up]:
            note += (
                f"; GPS {gps:.4f} vs {runner_up} {others[runner_up]:.4f} "
                f"({100 * (gps / others[runner_up] - 1):+.1f}%)"
            )
        goals.append(
            _common.goal_row(
                f"{name}, {row['models']}, {row['samples']} samples: GPS calibrated NLL / "
                "best other policy"
                + (
                    f" (median of {policies['GPS']['seeds']} seeds)"
                    if "seeds" in policies["GPS"]
                    else ""
                ),
                gps,
                "nats",
                runner_up,
                others[runner_up],
                "<=",
                1.0,
                note=note,
            )
        )
    return goals


def run_dataset(name, data, quick):
    """Policies x ensembles, equal-compute splits and MeTTA on one data set."""
    config = SETTINGS[name]
    train_policy, policy_name = config["train_policy"], config["train_policy_name"]
    members_count, width = config["members"], config["width"]
    (x, y), (x_test, y_test) = data
    if config["train_subset"]:
        x, y = x[: config["train_subset"]], y[: config["train_subset"]]
    if config["test_subset"]:
        x_test, y_test = x_test[: config["test_subset"]], y_test[: config["test_subset"]]
    rest, held = stratified_split(y, config["search_split"], seed=0)
    x_train, y_train, x_search, y_search = x[rest], y[rest], x[held], y[held]
    stage = time.perf_counter()
    timings = {}

    def lap(label):
        nonlocal stage
        timings[label] = time.perf_counter() - stage
        stage = time.perf_counter()
        print(f"[tta/{name}] {label}: {timings[label]:.0f} s", flush=True)

    epochs, epoch_curve, first = choose_epochs(
        x_train, y_train, x_search, y_search, train_policy, width, config["max_epochs"]
    )
    members = [first] + [
        train_member(x_train, y_train, seed, epochs, train_policy, width)
        for seed in range(1, members_count)
    ]
    lap(f"trained {members_count} members ({epochs} epochs, chosen on the search split)")

    # Deep-ensemble curve without TTA, for the DEE and the equal-compute baseline.
    curve = {
        k: tta.TTAPredictor(members[:k], num_samples=1).evaluate(x_test, y_test)["calibrated_nll"]
        for k in range(1, members_count + 1)
    }
    goal_samples = config["goal_samples"]
    grid = {
        m: tta.TTAPredictor(
            members[0], tta.Policy.randaugment(2, m), num_samples=goal_samples
        ).evaluate(x_search, y_search)["calibrated_nll"]
        for m in RANDAUGMENT_GRID
    }
    best_m = min(grid, key=grid.get)
    search = tta.GreedyPolicySearch(
        pool_size=config["pool_size"],
        policy_length=config["policy_length"],
        ops_per_subpolicy=(2, 3),
        magnitude_bound=config["magnitude_bound"],
    )
    gps = search.fit([members[0]], x_search, y_search, verbose=0)
    lap(f"RandAugment M={best_m}; GPS policy {gps}")

    policies = {
        "no TTA": None,
        **config["extra_policies"],
        policy_name: train_policy,
        f"randaugment(2, {best_m})": tta.Policy.randaugment(2, best_m),
        "GPS": gps,
    }
    rows = []
    ensemble = min(5, members_count)
    for label, models in (("single", members[:1]), (f"ensemble of {ensemble}", members[:ensemble])):
        for samples in config["sample_counts"]:
            seeds = config["seeds"] if samples == goal_samples else 1
            row = {"models": label, "samples": samples, "policies": {}}
            for p, policy in policies.items():
                runs = [
                    scored(models, policy, samples, x_test, y_test, curve, seed=seed)
                    for seed in range(1 if policy is None else seeds)
                ]
                row["policies"][p] = runs[0] if seeds == 1 else median_metrics(runs)
            row["best"] = min(row["policies"], key=lambda n: row["policies"][n]["calibrated_nll"])
            rows.append(row)
            lap(f"{label}, {samples} samples: lowest calibrated NLL {row['best']}")
    goals = policy_goals(config["title"], rows, goal_samples)

    # Equal compute: B model calls per image, as k members x B/k augmentations.
    equal_compute = []
    for budget in config["budgets"]:
        splits = []
        for k in (k for k in range(1, budget) if budget % k == 0):
            for p in (policy_name, f"randaugment(2, {best_m})", "GPS"):
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
                f"{config['title']}, {budget} calls per image: best members x TTA split / "
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
    lap("equal compute")

    # MeTTA: linear probe on central vs mean embeddings of the "features" layer.
    identity, count = tta.Policy.identity(), config["metta_samples"]
    metta = {
        "central": tta.linear_probe(
            tta.mean_embeddings(members[0], "features", x_train, identity, 1),
            y_train,
            tta.mean_embeddings(members[0], "features", x_test, identity, 1),
            y_test,
        ),
        "mean": tta.linear_probe(
            tta.mean_embeddings(members[0], "features", x_train, train_policy, count),
            y_train,
            tta.mean_embeddings(members[0], "features", x_test, train_policy, count),
            y_test,
        ),
        "samples": count,
    }
    lap("MeTTA")
    settings = {
        "data": config["title"],
        "epochs": epochs,
        "epoch_choice": "member 0's calibrated NLL on the search split after each epoch",
        "search_split_calibrated_nll_by_epoch": epoch_curve,
        "width": width,
        "members": members_count,
        "search_split": config["search_split"],
        "train_images": len(x_train),
        "test_images": len(x_test),
        "train_policy": policy_name,
        "pool_size": config["pool_size"],
        "policy_length": config["policy_length"],
        "magnitude_bound": config["magnitude_bound"],
        "goal_samples": goal_samples,
        "seeds_at_goal_samples": config["seeds"],
        "randaugment_grid": grid,
        "randaugment_best_m": best_m,
        "gps_policy": gps.to_dict(),
        "gps_history": search.history,
        "ensemble_curve": curve,
    }
    return {
        "settings": settings,
        "rows": rows,
        "equal_compute": equal_compute,
        "metta": metta,
        "goals": goals,
        "timings": timings,
        "members": members,
        "x_test": x_test,
        "policy": train_policy,
    }


def speed(model, policy, x_test, quick):
    """TTAPredictor against a loop that batches the images per augmentation.

    Both take the whole test set; their calls alternate inside every repeat
    so that a slow phase of the shared CPU hits both alike. The parts are
    timed alone too: the augmentation of all draws and the model call on
    them, eagerly (as the loop runs them) and as traced graphs (as the
    predictor runs them).
    """
    samples, repeats = (4, 3) if quick else (10, 7)
    predictor = tta.TTAPredictor(model, policy, num_samples=samples)
    generator = keras.random.SeedGenerator(0)
    stacked = np.concatenate([x_test] * samples)
    indices, bounds = _compiled.encode([policy.subpolicy_for_draw(s) for s in range(samples)])
    seed = keras.ops.convert_to_tensor([0, 0], "int32")
    model_graph_call = _compiled.graph_call(model)

    def predictor_run():  # returns None: time_interleaved then takes the wall time
        predictor.predict(x_test)

    def loop_run():
        per_augmentation_loop_probs(model, policy, x_test, samples, 0)

    images = keras.ops.convert_to_tensor(x_test)

    def augment_eager():
        for s in range(samples):
            keras.ops.convert_to_numpy(policy.augment(images, draw=s, seed=generator))

    def augment_graph():
        keras.ops.convert_to_numpy(_compiled.augment_draws(images, indices, bounds, seed))

    def model_eager():
        for _ in range(samples):
            keras.ops.convert_to_numpy(model(images, training=False))

    def model_graph():
        keras.ops.convert_to_numpy(model_graph_call(stacked))

    parts = {
        "augment_eager": augment_eager,
        "augment_graph": augment_graph,
        "model_eager": model_eager,
        "model_graph": model_graph,
    }
    times = _common.time_interleaved(
        {"predictor": predictor_run, "loop": loop_run, **parts}, repeats
    )
    to_ms = lambda seconds: [1e3 * t / len(x_test) for t in seconds]  # noqa: E731
    batched, looped = to_ms(times["predictor"]), to_ms(times["loop"])
    result = {
        "ms_per_image_batched": batched,
        "ms_per_image_per_augmentation_loop": looped,
        "median_batched": _common.median(batched),
        "median_per_augmentation_loop": _common.median(looped),
        "parts_ms_per_image": {k: _common.median(to_ms(times[k])) for k in parts},
        "samples": samples,
        "images": len(x_test),
        "repeats": repeats,
        "baseline": "for each augmentation: augment the whole test set, one model call, "
        "softmax; then the mean over augmentations",
    }
    p = result["parts_ms_per_image"]
    # The loop's work run as graphs in one call each (the predictor's way, unbatched).
    graph_work = p["augment_graph"] + p["model_graph"]
    result["graph_work_ratio"] = (p["augment_eager"] + p["model_eager"]) / graph_work
    result["predictor_overhead_ms_per_image"] = result["median_batched"] - graph_work
    # Augmentation the predictor cannot skip: the ratio if its model calls cost nothing.
    result["ratio_cap_free_model"] = result["median_per_augmentation_loop"] / p["augment_graph"]
    goal = _common.goal_row(
        f"TTAPredictor speed-up over a per-augmentation batched loop ({samples} samples)",
        result["median_per_augmentation_loop"] / result["median_batched"],
        "x",
        "per-augmentation batched loop",
        1.0,
        ">=",
        5.0,
        note=speed_note(result),
    )
    return result, goal


def speed_note(result):
    """Where the predictor's time goes, and what 5x over the loop would need (measured parts)."""
    p, loop = result["parts_ms_per_image"], result["median_per_augmentation_loop"]
    if result["ratio_cap_free_model"] < 5.0:
        verdict = (
            f"even free model calls would leave the ratio at "
            f"{result['ratio_cap_free_model']:.1f}x, so 5x needs cheaper augmentation kernels"
        )
    else:
        free_augmentation = loop / p["model_graph"]
        verdict = (
            f"5x needs both to shrink: free model calls would give "
            f"{result['ratio_cap_free_model']:.1f}x, free augmentation {free_augmentation:.1f}x"
        )
    return (
        f"ms per image, eager (the loop) vs traced (the predictor): augmentation "
        f"{p['augment_eager']:.3f} vs {p['augment_graph']:.3f}, model call "
        f"{p['model_eager']:.3f} vs {p['model_graph']:.3f}; the predictor's other work "
        f"{result['predictor_overhead_ms_per_image']:.3f}; {verdict}"
    )


def public(result):
    return {k: v for k, v in result.items() if k not in ("members", "x_test", "policy")}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    start = time.perf_counter()

    if args.quick:
        name, data = "digits", tfpriors.datasets.load_digits(flat=False)
    else:
        name, data = "mnist", tfpriors.datasets.load_mnist_sample()
    main_result = run_dataset(name, data, args.quick)
    speed_result, speed_goal = speed(
        main_result["members"][0], main_result["policy"], main_result["x_test"], args.quick
    )
    print(f"[tta] speed: {speed_goal['measured']:.2f}x", flush=True)
    try:
        cifar_data = tfpriors.datasets.load_cifar10()
    except tfpriors.datasets.DatasetUnavailableError as error:
        cifar = {"skipped": str(error).split(":")[0] + ": not in the Keras cache, offline."}
        print(f"[tta] CIFAR-10 skipped: {cifar['skipped']}", flush=True)
    else:
        cifar = public(run_dataset("cifar10", cifar_data, args.quick))

    payload = {
        **_common.result_header(
            "tta", f"Test-time augmentation on the {SETTINGS[name]['title']}", __doc__, args.quick
        ),
        "dataset": name,
        "repeats": speed_result["repeats"],
        "repeat_kind": "interleaved timing repeats (goal rows: medians of "
        f"{SETTINGS[name]['seeds']} augmentation seeds)",
        **public(main_result),
        "speed": speed_result,
        "cifar10": cifar,
        "goals": main_result["goals"] + [speed_goal] + cifar.get("goals", []),
        "seconds": time.perf_counter() - start,
    }
    _common.save_result("tta", args.quick, payload)


if __name__ == "__main__":
    main()
