"""Deep Weight Prior on digits: small-data accuracy by prior, and convergence by initialization.

Source task: digits 0-4. Four small conv nets (3x3 convolutions of 16 and 32
filters) are trained on it; their 3x3 kernel slices train a KernelVAE
(latent 2). Target task: digits 5-9 (fixed test split, about 225 images).

Priors: the same variational net (VariationalConv2D x2 + VariationalDense)
with the standard normal, log-uniform, learned (empirical-Bayes) Gaussian or
Deep Weight Prior on its convolutions (the logits layer keeps the standard
normal prior), trained for
a fixed number of steps on 50, 100 and 500 target images; test accuracy at
the posterior means, median over 3 seeds (each seed draws its own training
subset). Initialization: the plain conv net on all target training images
from He, a source net's filters, DWP initialization (decoder means at
z ~ N(0, I)) or DWP initialization with the decoder's noise added; test
accuracy after 1, 5 and 20 epochs, median over 3 seeds.

Goals (on the medians): the Deep Weight Prior beats the standard normal prior
at the smallest training size; DWP initialization beats He at 1, 5 and 20
epochs. The CPU is shared with other jobs: the figures are accuracies, not
times, so load only changes the run time.

    python bench/dwp.py [--quick]
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

import tfpriors  # noqa: E402

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH_DIR)
sys.path.insert(0, os.path.join(os.path.dirname(BENCH_DIR), "examples"))
import _common  # noqa: E402
import dwp_digits  # noqa: E402

PRIORS = ("normal", "log_uniform", "learned_gaussian", "DWP")


def make_prior(name, vae):
    if name == "DWP":
        return tfpriors.priors.DeepWeightPrior(vae, seed=0)
    if name == "learned_gaussian":
        return tfpriors.priors.LearnedGaussian()
    return name


def prior_note(kernels, samples):
    return (
        f"The KernelVAE's latent code explains little of these kernels: its samples "
        f"(decoder means) have weight std {samples.std():.3f} against "
        f"{kernels.std():.3f} for the real ones, so the prior mostly pulls kernels "
        "towards flat ones, while the standard normal prior (variance 1, far wider "
        "than the weights) barely regularizes this easy task."
    )


def init_note(kernels, samples):
    return (
        f"DWP initialization draws decoder means, whose weight std "
        f"({samples.std():.3f}) is {kernels.std() / samples.std():.1f}x below that of "
        f"trained kernels ({kernels.std():.3f}): the net starts too small; with the "
        "decoder noise added (DWPInitializer(noise=True)) it starts at the right scale."
    )


def _median_and_range(runs):
    """Medians (%) of each row of ``runs`` and their distances to the row's min and max."""
    median = np.median(runs, axis=1)
    spread = np.stack([median - runs.min(axis=1), runs.max(axis=1) - median])
    return median * 100, spread * 100


def plot(result, path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    sizes = result["settings"]["train_sizes"]
    for name in PRIORS:
        runs = np.array([result["priors"][name][str(n)] for n in sizes])
        left.errorbar(sizes, *_median_and_range(runs), marker="o", capsize=3, label=name)
    left.set_xscale("log")
    left.minorticks_off()
    left.set_xticks(sizes, [str(n) for n in sizes])
    left.set_xlabel("target training images")
    left.set_ylabel("test accuracy (%)")
    left.set_title("prior on the conv kernels (median, min-max over seeds)", fontsize=10)
    left.legend()
    epochs = result["settings"]["init_epochs"]
    for name, curves in result["inits"].items():
        runs = np.array([curves[str(e)] for e in epochs])
        right.errorbar(
            epochs,
            *_median_and_range(runs),
            marker="o",
            capsize=3,
            label=f"{name} init",
        )
    right.set_xscale("log")
    right.minorticks_off()
    right.set_xticks(epochs, [str(e) for e in epochs])
    right.set_xlabel("epochs")
    right.set_ylabel("test accuracy (%)")
    right.set_title("initialization of the plain net (median, min-max over seeds)", fontsize=10)
    right.legend()
    fig.tight_layout()
    with tfpriors.io.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        settings = {
            "sources": 2,
            "source_epochs": 2,
            "vae_epochs": 3,
            "steps": 30,
            "train_sizes": [50],
            "seeds": [0],
            "init_epochs": [1, 2],
        }
    else:
        settings = {
            "sources": 4,
            "source_epochs": 15,
            "vae_epochs": 60,
            "steps": 300,
            "train_sizes": [50, 100, 500],
            "seeds": [0, 1, 2],
            "init_epochs": [1, 5, 20],
        }
    start = time.perf_counter()

    ((xs, ys), (xs_test, ys_test)), ((xt, yt), (xt_test, yt_test)) = dwp_digits.split_digits()
    sources = dwp_digits.train_sources(xs, ys, settings["sources"], settings["source_epochs"])
    source_accuracy = [dwp_digits.test_accuracy(m, xs_test, ys_test) for m in sources]
    kernels = tfpriors.priors.collect_kernels(sources, kernel_size=3)
    vae = dwp_digits.train_vae(kernels, settings["vae_epochs"])
    vae_loss = float(vae.evaluate(kernels, verbose=0))
    samples = vae.sample(len(kernels), seed=tfpriors_seed(0))
    print(
        f"[dwp] sources {np.mean(source_accuracy):.1%}, VAE on {len(kernels)} slices: "
        f"-ELBO {vae_loss:.2f}",
        flush=True,
    )

    # One compiled net per (prior, size), restarted for every seed: tracing a
    # new train step costs more than 300 steps of these nets.
    priors = {name: {str(n): [] for n in settings["train_sizes"]} for name in PRIORS}
    progress = tqdm(
        total=len(PRIORS) * len(settings["train_sizes"]) * len(settings["seeds"]),
        desc="priors",
        unit="net",
    )
    for name in PRIORS:
        prior = make_prior(name, vae)
        for n in settings["train_sizes"]:
            model = dwp_digits.compile_classifier(dwp_digits.variational_net(prior))
            tfpriors.set_dataset_size(model, n)
            for seed in settings["seeds"]:
                x, y = dwp_digits.subset(xt, yt, n, seed)
                priors[name][str(n)].append(
                    dwp_digits.train_variational(
                        prior, x, y, xt_test, yt_test, settings["steps"], seed, model=model
                    )
                )
                progress.update()
    progress.close()

    variants = dwp_digits.init_variants(vae, sources)
    inits = {name: {str(e): [] for e in settings["init_epochs"]} for name in variants}
    compiled = {name: dwp_digits.compile_classifier(dwp_digits.conv_net()) for name in variants}
    for seed in tqdm(settings["seeds"], desc="initializations", unit="seed"):
        for name, make in variants.items():
            curve = dwp_digits.accuracy_curve(
                make(seed),
                xt,
                yt,
                xt_test,
                yt_test,
                settings["init_epochs"],
                seed,
                compiled=compiled[name],
            )
            for epochs, accuracy in curve.items():
                inits[name][str(epochs)].append(accuracy)

    smallest = str(settings["train_sizes"][0])
    dwp_small = _common.median(priors["DWP"][smallest])
    normal_small = _common.median(priors["normal"][smallest])
    goals = [
        _common.goal_row(
            f"DWP prior vs standard normal, {smallest} target images (median test accuracy)",
            dwp_small,
            "accuracy",
            "standard normal prior",
            normal_small,
            ">=",
            1.0,
            condition=dwp_small > normal_small,
            note="" if dwp_small > normal_small else prior_note(kernels, samples),
        )
    ]
    for epochs in settings["init_epochs"]:
        dwp = _common.median(inits["DWP"][str(epochs)])
        he = _common.median(inits["He"][str(epochs)])
        goals.append(
            _common.goal_row(
                f"DWP init vs He init, {epochs} epoch{'s' if epochs > 1 else ''} "
                "(median test accuracy)",
                dwp,
                "accuracy",
                "He init",
                he,
                ">=",
                1.0,
                condition=dwp > he,
                note="" if dwp > he else init_note(kernels, samples),
            )
        )

    result = _common.result_header(
        "dwp", "Deep Weight Prior: small-data priors and initialization", __doc__, args.quick
    )
    result.update(
        {
            "repeats": len(settings["seeds"]),
            "repeat_kind": "seeds",
            "settings": settings,
            "source_test_accuracy": source_accuracy,
            "kernel_slices": int(len(kernels)),
            "vae_negative_elbo": vae_loss,
            "kernel_std": float(kernels.std()),
            "vae_sample_std": float(samples.std()),
            "priors": priors,
            "inits": inits,
            "goals": goals,
        }
    )
    picture = os.path.join(_common.results_dir(args.quick), "dwp.png")
    plot(result, picture)
    result["plot"] = os.path.relpath(picture, BENCH_DIR)
    result["seconds"] = time.perf_counter() - start
    _common.save_result("dwp", args.quick, result)


def tfpriors_seed(seed):
    import keras

    return keras.random.SeedGenerator(seed)


if __name__ == "__main__":
    main()
