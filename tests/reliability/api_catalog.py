"""The public API as a fuzz target: what it is, valid calls, hostile variations.

:func:`public_api` walks ``tfpriors``' exports, so a layer, callback or tool
added to a public module is fuzzed without editing the tests. A valid call of
each one is put together from :data:`VALID`, a table of argument *names* (a
new layer that takes ``units`` or ``filters`` needs nothing new), with
:data:`VALID_FOR` for arguments whose valid value depends on the callable
(``model`` of ``set_mode`` is an adaptive model, of ``shrink`` a Sparse VD
one). A callable whose required arguments are in neither table fails
``test_every_public_callable_is_fuzzed`` until it is added here or to
:data:`NOT_FUZZED` with the reason.

The contract checked by :func:`check_case`: every call either works, with
finite numbers out of finite numbers in, or raises ``ValueError`` /
``TypeError`` whose message names the argument that was made hostile. Anything
else (another exception type, a message that does not say what is wrong, a
NaN, a hang) is a finding.
"""

import contextlib
import dataclasses
import inspect
import math
import numbers
import os
import re
import signal
import tempfile
import types

import keras
import numpy as np
import tensorflow as tf

import tfpriors

# Seconds one fuzz case may take before it counts as a hang.
HANG_SECONDS = 120


class Make:
    """A valid value built fresh for each case (models, arrays, file paths)."""

    def __init__(self, build):
        self.build = build

    def __call__(self, context):
        return self.build(context)


def _value(spec, context):
    return spec(context) if isinstance(spec, Make) else spec


# --- small valid objects ---------------------------------------------------


def _mlp(context=None, kind="sparse_vd"):
    layer = {"sparse_vd": tfpriors.layers.SparseVDDense, "dense": keras.layers.Dense}[kind]
    model = keras.Sequential([keras.Input((6,)), layer(5, activation="relu"), layer(3)])
    if kind == "sparse_vd":
        tfpriors.set_dataset_size(model, 32)
    return model


def _images(context=None, n=4, size=8, channels=1):
    return np.random.default_rng(0).uniform(0, 1, (n, size, size, channels)).astype("float32")


def _cnn(context=None):
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(2, 3, padding="same", activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )


def _perforated_cnn(context=None):
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            tfpriors.layers.PerforatedConv2D(2, 3, padding="same", rate=0.5),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )


def _adaptive_model(context=None, mode="relaxed"):
    return tfpriors.models.act_resnet(
        (8, 8, 1), 3, blocks=(1,), widths=(4,), kind="pact", mode=mode
    )


def _sact_model(context=None):
    return tfpriors.models.act_resnet((8, 8, 1), 3, blocks=(1,), widths=(4,), kind="sact")


def _hyper_model(context=None):
    model = tfpriors.hyper.LambdaHyperModel(
        [
            tfpriors.layers.HyperVariationalDense(4, activation="relu", hidden_units=4),
            tfpriors.layers.HyperVariationalDense(3, hidden_units=4),
        ],
        lambda_draws=1,
        seed=0,
    )
    model(np.zeros((2, 6), "float32"))
    return model


def _kernel_vae(context=None):
    return tfpriors.priors.KernelVAE(kernel_size=3, latent_dim=2, hidden_units=4, seed=0)


def _logits(context=None):
    return np.random.default_rng(1).normal(size=(40, 3)).astype("float32")


def _labels(context=None):
    return np.arange(40) % 3


def _png(context):
    return os.path.join(context.directory, "plot.png")


def _regression_mlp(context=None):
    return keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(1)]
    )


# Valid values by argument name. Layer inputs are found by probing (see
# ``layer_input``); these are the constructor and function arguments.
VALID = {
    # layers
    "units": 3,
    "filters": 4,
    "kernel_size": 3,
    "strides": 1,
    "padding": "same",
    "data_format": None,
    "dilation_rate": 1,
    "activation": "relu",
    "use_bias": True,
    "threshold": 3.0,
    "kernel_initializer": "glorot_uniform",
    "bias_initializer": "zeros",
    "kernel_regularizer": "l2",
    "bias_regularizer": "l2",
    "activity_regularizer": "l2",
    "kernel_constraint": "non_neg",
    "bias_constraint": "non_neg",
    "implementation": "auto",
    "selected_implementation": None,
    "small_batch_implementation": None,
    "built_mask": None,
    "dtype": "float32",
    "log_sigma2_initializer": -10.0,
    "prior": "normal",
    "seed": 0,
    "kind": "linear",
    "rank": 2,
    "hidden_units": 4,
    "lambda_range": (0.001, 10.0),
    "lambda_draws": 1,
    "prior_variance": 1.0,
    "rate": 0.5,
    "mask": "uniform",
    "num_units": 2,
    "ponder_cost": 0.01,
    "sparse_inference": True,
    "track_metrics": True,
    "mode": "relaxed",
    "temperature": 0.5,
    "group_size": 1,
    "dataset_size": 100,
    "latent_dim": 2,
    "min_log_variance": -12.0,
    "lambda_value": None,
    "unit_factory": Make(lambda c: tfpriors.layers.ResidualUnit(4)),
    "noise_variance": None,
    "task": "classification",
    "output": "logits",
    # callbacks and optimizers
    "start_epoch": 0,
    "end_epoch": 2,
    "start": 0.0,
    "end": 0.01,
    "per_layer": True,
    "description": "training",
    "keys": None,
    "learning_rate": 1e-3,
    "friction": 0.05,
    "noise_estimate": 0.0,
    "burn_in_epochs": 0,
    "thin": 1,
    "max_samples": 3,
    "in_memory": 2,
    "directory": Make(lambda c: os.path.join(c.directory, "samples")),
    "state_path": None,
    "variance": 1.0,
    # tools
    "values": Make(_logits),
    "labels": Make(_labels),
    "from_logits": True,
    "splits": 2,
    "bins": 5,
    "path": Make(_png),
    "title": None,
    "metric_value": 0.16,
    "ensemble_curve": {1: 0.2, 2: 0.17, 4: 0.15},
    "kl_weight": 0.5,
    "images": Make(_images),
    "x": Make(_images),
    "max_images": 2,
    "pool_size": 20,
    "policy_length": 2,
    "ops_per_subpolicy": (1, 2),
    "magnitude_bound": 3.0,
    "ops": None,
    "calibration_splits": 2,
    "num_samples": 2,
    "batch_size": 8,
    "c": 1.0,
    "choice": "cycle",
    "policy": None,
    "strategy": None,
    "flat": True,
    "output_shape": (6, 6),
    "kept": Make(lambda c: np.arange(0, 36, 2)),
    "scores": Make(lambda c: np.random.default_rng(2).uniform(size=(6, 6))),
    "prune_fraction": 0.5,
    "pool_strides": 2,
    "pool_padding": "valid",
    "input_hw": (8, 8),
    "magnitude": 3.0,
    "zero_mean": False,
    "min_variance": 1e-8,
    "noise": False,
    "num_kernels": 4,
    "skip": (),
    "log_sigma2_init": -8.0,
    "include_self": False,
    "input_image_shape": None,
    "input_shape": (8, 8, 1),
    "num_classes": 3,
    "width": 4,
    "name": None,
    "widths": (4,),
    "blocks": (1,),
    "alpha": 0.1,
    "teacher_output": "logits",
    "teacher_noise_variance": None,
    "teacher_optimizer": None,
    "teacher_learning_rate": 1e-4,
    "input_noise": 0.05,
    "burn_in_steps": 0,
    "quantize": None,
    "representative_data": None,
    "verify_data": None,
    "shrink": False,
    "sparse_storage": True,
    "latency_repeats": 1,
    "compare_dense": False,
    "synchronized_batch_norm": False,
}

# Valid values that depend on the callable (``model`` means a different model
# to each tool). Keys are qualified names as listed by ``public_api``.
VALID_FOR = {
    "tfpriors.calibration.reliability_diagram": {"from_logits": True},
    "tfpriors.callbacks.PonderCostSchedule": {"model": Make(_adaptive_model)},
    "tfpriors.callbacks.TemperatureSchedule": {
        "model": Make(_adaptive_model),
        "start": 1.0,
        "end": 0.5,
    },
    "tfpriors.callbacks.compression_report": {"model": Make(_mlp)},
    "tfpriors.callbacks.kl_layers": {"model": Make(_mlp)},
    "tfpriors.callbacks.set_kl_weight": {"model": Make(_mlp)},
    "tfpriors.compression_report": {"model": Make(_mlp)},
    "tfpriors.set_dataset_size": {"model": Make(_mlp)},
    "tfpriors.set_kl_weight": {"model": Make(_mlp)},
    "tfpriors.sparsify": {"model": Make(lambda c: _mlp(kind="dense")), "dataset_size": 32},
    "tfpriors.structured": {
        "model": Make(lambda c: _mlp(kind="dense")),
        "dataset_size": 32,
        "learning_rate_multiplier": 30.0,
    },
    "tfpriors.priors.TruncatedLogNormal": {"mu": 0.0, "log_sigma": -1.0, "a": -20.0, "b": 0.0},
    "tfpriors.layers.StructuredBayesianPruning": {
        "a": -20.0,
        "b": 0.0,
        "mu_initializer": 0.0,
        "log_sigma_initializer": -5.0,
        "learning_rate_multiplier": 30.0,
    },
    "tfpriors.export.inference_model": {"model": Make(_mlp)},
    "tfpriors.export.shrink": {"model": Make(_mlp)},
    "tfpriors.datasets.load": {"name": "digits"},
    "tfpriors.datasets.load_font_letters": {"num_per_class": 2, "seed": 0},
    "tfpriors.adaptive.set_mode": {"model": Make(_adaptive_model), "mode": "threshold"},
    "tfpriors.adaptive.evaluated_units": {"model": Make(_sact_model)},
    "tfpriors.adaptive.ponder_map": {"model": Make(_sact_model)},
    "tfpriors.adaptive.flops_report": {"model": Make(_sact_model)},
    "tfpriors.adaptive.adaptive_blocks": {"model": Make(_sact_model)},
    "tfpriors.models.act_resnet": {"kind": "sact", "mode": "relaxed"},
    "tfpriors.models.lenet_300_100": {"input_shape": (16,), "kind": "dense"},
    "tfpriors.models.lenet5": {"input_shape": (8, 8, 1), "kind": "dense"},
    "tfpriors.layers.HyperVariationalDense": {"kind": "linear"},
    "tfpriors.layers.HyperVariationalConv2D": {"kind": "linear"},
    "tfpriors.layers.ProbabilisticACTBlock": {"mode": "relaxed"},
    "tfpriors.layers.VariationalDense": {"prior": "normal"},
    "tfpriors.distill.gaussian_prior": {"variance": 1.0, "dataset_size": 100},
    "tfpriors.distill.PosteriorEnsemble": {
        "members": Make(lambda c: [_mlp(kind="dense"), _mlp(kind="dense")])
    },
    "tfpriors.distill.Distiller": {
        "student": Make(lambda c: _mlp(kind="dense")),
        "teacher": Make(lambda c: _mlp(kind="dense")),
        "temperature": 2.0,
    },
    "tfpriors.distill.BayesianDarkKnowledge": {
        "teacher_model": Make(lambda c: _mlp(kind="dense")),
        "student_model": Make(lambda c: _mlp(kind="dense")),
        "temperature": 1.0,
    },
    "tfpriors.hyper.LambdaHyperModel": {
        "layers": Make(lambda c: [tfpriors.layers.HyperVariationalDense(3, hidden_units=4)]),
        "prior_variance": 0.1,
    },
    "tfpriors.hyper.density_masks": {
        "scores": Make(lambda c: [np.random.default_rng(3).uniform(size=(6, 3))])
    },
    "tfpriors.hyper.tradeoff_curve": {
        "model": Make(_hyper_model),
        "data": Make(
            lambda c: (
                np.random.default_rng(4).normal(size=(16, 6)).astype("float32"),
                np.arange(16) % 3,
            )
        ),
        "lambdas": (0.1, 1.0),
        "fractions": (0.0, 0.5),
    },
    "tfpriors.initializers.DWPInitializer": {"vae": Make(_kernel_vae)},
    "tfpriors.initializers.check_vae": {"vae": Make(_kernel_vae), "name": "vae"},
    "tfpriors.initializers.vae_to_config": {"vae": Make(_kernel_vae)},
    "tfpriors.initializers.vae_from_config": {
        "config": Make(lambda c: tfpriors.initializers.vae_to_config(_kernel_vae()))
    },
    "tfpriors.initializers.check_kernel_shape": {
        "shape": (3, 3, 1, 4),
        "kernel_size": 3,
        # What the caller calls the shape; the messages name it so.
        "where": "`shape`",
    },
    "tfpriors.priors.DeepWeightPrior": {"vae": Make(_kernel_vae)},
    "tfpriors.priors.log_alpha": {
        "mean": Make(lambda c: np.linspace(-1, 1, 6).astype("float32")),
        "log_sigma2": Make(lambda c: np.full(6, -4.0, "float32")),
    },
    "tfpriors.priors.collect_kernels": {"source_models": Make(lambda c: [_cnn()])},
    "tfpriors.priors.plot_kernels": {
        "vae": Make(_kernel_vae),
        "real_kernels": Make(
            lambda c: np.random.default_rng(5).normal(size=(8, 3, 3)).astype("float32")
        ),
    },
    "tfpriors.tta.Policy": {"subpolicies": [[("rotate", 3)], [("translate_x", 2)]]},
    "tfpriors.tta.TTAPredictor": {"models": Make(_cnn)},
    "tfpriors.tta.GreedyPolicySearch": {"ops": None},
    "tfpriors.tta.linear_probe": {
        "train_embeddings": Make(lambda c: np.random.default_rng(6).normal(size=(30, 4))),
        "train_labels": Make(lambda c: np.arange(30) % 3),
        "test_embeddings": Make(lambda c: np.random.default_rng(7).normal(size=(12, 4))),
        "test_labels": Make(lambda c: np.arange(12) % 3),
    },
    "tfpriors.tta.mean_embeddings": {"model": Make(_cnn), "layer": -2, "num_samples": 2},
    "tfpriors.tta.transforms.apply": {"name": "rotate"},
    "tfpriors.tta.transforms.get": {"name": "rotate"},
    "tfpriors.ops.conv_geometry": {"kernel_size": (3, 3), "strides": (1, 1)},
    "tfpriors.ops.perforated_conv2d": (
        _PERFORATED := {
            "inputs": Make(lambda c: _images(channels=2)),
            "kernel": Make(lambda c: np.ones((3, 3, 2, 4), "float32")),
            "kept": Make(lambda c: np.arange(0, 36, 2, dtype="int32")),
            "fill_index": Make(lambda c: (np.arange(36) // 2).astype("int32")),
            "output_shape": (6, 6),
            "strides": (1, 1),
            "pads": (0, 0),
            "bias": None,
        }
    ),
    "tfpriors.ops.perforated_conv2d_reference": _PERFORATED,
    "tfpriors.ops.conv_at_positions": (
        _POSITIONS := {
            "inputs": Make(lambda c: _images(channels=2)),
            "kernel": Make(lambda c: np.ones((3, 3, 2, 4), "float32")),
            "positions": Make(lambda c: np.array([0, 7, 35, 40], "int32")),
            "output_shape": (6, 6),
            "strides": (1, 1),
            "pads": (1, 1),
        }
    ),
    "tfpriors.ops.conv_at_positions_reference": _POSITIONS,
    "tfpriors.ops.library.select_gemm": {"name": "auto"},
    "tfpriors.ops.library.select_noise_isa": {"name": "auto"},
    "tfpriors.ops.lrt_sample": {
        "mean": Make(lambda c: np.zeros((3, 4), "float32")),
        "variance": Make(lambda c: np.ones((3, 4), "float32")),
        "seed": Make(lambda c: np.array([1, 2], "int32")),
        "variance_floor": 0.0,
        "offset": 0,
        "implementation": "auto",
    },
    "tfpriors.ops.noise_implementation": {"name": "tensorflow"},
    "tfpriors.ops.library.built_against": {
        "path": Make(lambda c: tfpriors.ops.library.library_path())
    },
    "tfpriors.ops.lattice_of": {
        "kept": Make(lambda c: np.array([0, 2, 12, 14], "int32")),
        "output_shape": (6, 6),
    },
    "tfpriors.ops.autotune.candidates": (
        _MASK := {
            "kept": Make(lambda c: np.arange(0, 36, 2, dtype="int32")),
            "fill_index": Make(lambda c: (np.arange(36) // 2).astype("int32")),
            "output_shape": (6, 6),
        }
    ),
    "tfpriors.ops.autotune.rule": _MASK,
    "tfpriors.ops.autotune.choose": (
        _TUNED := {
            **_MASK,
            "input_shape": (6, 6, 2),
            "kernel_size": (3, 3),
            "filters": 4,
            "strides": (1, 1),
            "pads": (1, 1),
        }
    ),
    "tfpriors.ops.autotune.measure": {**_TUNED, "batches": (1,), "repeats": 1},
    "tfpriors.perforation.lattice_mask": {"output_shape": (6, 6)},
    "tfpriors.perforation.lattice_rates": {"output_shape": (6, 6), "max_step": 4},
    "tfpriors.perforation.make_mask": {
        "kind": "lattice",
        "output_shape": (6, 6),
        "pooling": None,
        "scores": None,
    },
    "tfpriors.perforation.PerforationMask": {"output_shape": (6, 6)},
    "tfpriors.perforation.grid_mask": {"output_shape": (6, 6)},
    "tfpriors.perforation.uniform_mask": {"output_shape": (6, 6)},
    "tfpriors.perforation.structure_mask": {"output_shape": (6, 6), "pool_size": 3},
    "tfpriors.perforation.pooling_counts": {
        "output_shape": (6, 6),
        "pool_size": 3,
        "strides": None,
    },
    "tfpriors.perforation.mask_from_scores": {},
    "tfpriors.perforation.kept_count": {"size": 36},
    "tfpriors.perforation.check_rate": {"rate": 0.5, "name": "rate"},
    "tfpriors.perforation.perforable_layers": {"model": Make(_cnn)},
    "tfpriors.perforation.perforate": {"model": Make(_cnn), "rates": 0.5, "data": None},
    "tfpriors.perforation.plot_mask": {"layer": Make(lambda c: _perforated_cnn().layers[0])},
    "tfpriors.perforation.impact_scores": {
        "model": Make(_cnn),
        "layer": 0,
        "data": Make(lambda c: (_images(n=8), np.arange(8) % 3)),
    },
    "tfpriors.plotting.plot_sparsity": {"model": Make(_mlp)},
    "tfpriors.plotting.sparse_vd_layers": {"model": Make(_mlp)},
    "tfpriors.graph.walk": {"model": Make(_mlp)},
    "tfpriors.graph.consumers": {"layer": Make(lambda c: _cnn().layers[0]), "members": None},
    "tfpriors.graph.chain_after": {
        "layer": Make(lambda c: _cnn().layers[0]),
        "passes": lambda layer: isinstance(layer, keras.layers.Activation),
        "stops": lambda layer: isinstance(layer, keras.layers.Dense),
        "members": None,
        "outputs": (),
        "limit": None,
    },
    "tfpriors.io.check_archive": {
        "path": Make(lambda c: _saved_model(c)),
        "what": "a .keras model",
        "argument": "path",
    },
    "tfpriors.io.save_figure": {
        "figure": Make(lambda c: __import__("matplotlib.figure").figure.Figure()),
        "path": Make(lambda c: os.path.join(c.directory, "figure.png")),
        "argument": "path",
        "dpi": None,
    },
    "tfpriors.io.load_model": {"path": Make(lambda c: _saved_model(c))},
    "tfpriors.distill.GaussianNLL": {},
}


def _saved_model(context):
    path = os.path.join(context.directory, "model.keras")
    _mlp().save(path)
    return path


# Public callables not fuzzed, with the reason. Everything else is.
NOT_FUZZED = {
    # Abstract bases: only their subclasses are real layers.
    "tfpriors.layers.KLLayer": "abstract base",
    "tfpriors.layers.SparseVDLayer": "abstract base",
    "tfpriors.layers.VariationalLayer": "abstract base",
    "tfpriors.layers.HyperVariationalLayer": "abstract base",
    "tfpriors.layers.AdaptiveBlock": "abstract base of ACT/SACT/PACT",
    "tfpriors.priors.Prior": "abstract base",
    # Data loaders read files that cannot be downloaded here; their offline
    # errors are tested in tests/test_datasets.py.
    "tfpriors.datasets.load_cifar10": "needs the download",
    "tfpriors.datasets.load_mnist": "needs the download",
    "tfpriors.datasets.load_fashion_mnist": "needs the download",
    "tfpriors.datasets.load_boston_housing": "needs the download",
    # Long searches and exports: their argument checks run before any work and
    # are tested in their own suites; a fuzz case would take minutes.
    "tfpriors.perforation.greedy_perforation": "minutes per call (tests/perforation)",
    "tfpriors.export.to_tflite": "seconds per call (tests/export)",
    "tfpriors.models.AdaptiveModel": "built like keras.Model(inputs, outputs)",
    "tfpriors.io.atomic_path": "context manager (tests/reliability/test_corrupt_files.py)",
    "tfpriors.ops.fused_op_module": "no arguments; loads the library",
    "tfpriors.tta.transforms.Op": "record of a transform's definition",
    "tfpriors.hyper.plot_tradeoff": "takes a TradeoffCurve (fuzzed via tradeoff_curve)",
    "tfpriors.distributed.enable_multi_worker_fit": (
        "patches Keras' trainer for the process (tests/reliability/test_multiworker.py)"
    ),
    "tfpriors.distributed.batch_rows": (
        "called inside layers with graph tensors; every stochastic layer's fuzz runs it"
    ),
    "tfpriors.distributed.replica_offset": (
        "called inside layers with graph tensors; every Gaussian-weight layer's fuzz runs it"
    ),
}


# Arguments that accept a value of :func:`hostile_cases` marks as refused, with the
# reason; keyed by argument name, or by "qualified.name.argument" for one callable.
ACCEPTS = {
    "title": "a plot title: matplotlib shows any object with str()",
    "tfpriors.initializers.check_kernel_shape.where": "a label put into messages with str()",
    "tfpriors.initializers.check_vae.name": "a label put into messages with str()",
    "tfpriors.io.check_archive.what": "a label put into messages with str()",
    "tfpriors.io.check_archive.argument": "a label put into messages with str()",
    "tfpriors.io.save_figure.argument": "a label put into messages with str()",
}


def accepts(name, argument):
    """Whether ``argument`` of ``name`` is listed in :data:`ACCEPTS`."""
    return argument in ACCEPTS or f"{name}.{argument}" in ACCEPTS


# Arguments that say how the caller names another one in messages: with both
# hostile, the message names the other by the hostile label.
LABELS = {
    "tfpriors.initializers.check_kernel_shape.where",
    "tfpriors.initializers.check_vae.name",
    "tfpriors.io.check_archive.argument",
    "tfpriors.io.check_archive.what",
    "tfpriors.io.save_figure.argument",
    "tfpriors.perforation.check_rate.name",
}


# --- arguments take effect ----------------------------------------------------------

# A second valid value of each layer argument. Built with it, a layer must differ
# from the one built with :data:`VALID` in something observable (its weights, its
# outputs in training or inference, its losses or its metrics): a layer that takes
# an argument and ignores it (a `threshold` that never reaches the keep rule) fails
# ``test_layer_argument_takes_effect``.
ALTERNATIVES = {
    "units": 4,
    "filters": 5,
    "kernel_size": 1,
    "strides": 2,
    "padding": "valid",
    "dilation_rate": 2,
    "activation": "tanh",
    "use_bias": False,
    # log sigma^2 = -10: log alpha > -8 drops every weight under 0.37 in magnitude.
    "threshold": -8.0,
    "kernel_initializer": "ones",
    "bias_initializer": "ones",
    "kernel_regularizer": None,
    "bias_regularizer": None,
    "activity_regularizer": None,
    "log_sigma2_initializer": -2.0,
    "prior": "log_uniform",
    "seed": 1,
    "dataset_size": 50,
    "kind": "lowrank",
    "rank": 1,
    "hidden_units": 2,
    "lambda_range": (0.01, 1.0),
    "lambda_draws": 2,
    "prior_variance": 0.5,
    "log_sigma2_init": -2.0,
    "rate": 0.25,
    "mask": "grid",
    "num_units": 3,
    "ponder_cost": 0.1,
    "mode": "threshold",
    "temperature": 1.0,
    "group_size": 2,
    "track_metrics": False,
    "unit_factory": Make(lambda c: tfpriors.layers.ResidualUnit(4, kernel_size=1)),
}

# Alternatives for one layer (keyed "qualified.name.argument"), where the general one
# is not valid for it.
ALTERNATIVES_FOR = {
    # A fresh gate's units have E[theta] / std[theta] ~ 248: 1000 prunes them all.
    "tfpriors.layers.StructuredBayesianPruning.threshold": 1000.0,
    # mu starts at 0: inside [-20, 1] rather than at its upper end, E[theta] changes.
    "tfpriors.layers.StructuredBayesianPruning.b": 1.0,
    # mu = -1 inside the interval: a lower end of -1.001 truncates it (E[theta] changes).
    "tfpriors.layers.StructuredBayesianPruning.a": -1.001,
    "tfpriors.layers.StructuredBayesianPruning.mu_initializer": -3.0,
    "tfpriors.layers.StructuredBayesianPruning.log_sigma_initializer": 1.0,
    # The stored (scaled) parameters are the initial ones divided by the multiplier.
    "tfpriors.layers.StructuredBayesianPruning.learning_rate_multiplier": 1.0,
}

# Valid values both layers of an effect check get, where the argument only acts
# with them (by argument name; applied to the layers that take them).
EFFECT_BASE = {
    "rank": {"kind": "lowrank"},
    "hidden_units": {"kind": "lowrank"},
}

# Layer arguments whose effect is not observable in one forward pass, with the reason.
NO_EFFECT = {
    "data_format": "one layout on CPU; channels_first is tested in tests/layers",
    "sparse_inference": "speed only: the same outputs by design (tests/adaptive)",
    "implementation": "speed only: every implementation gives the same outputs (tests/ops)",
    "selected_implementation": "state a saved layer restores (tests/layers/test_perforated.py)",
    "small_batch_implementation": "state a saved layer restores (tests/layers/test_perforated.py)",
    "built_mask": "state a saved layer restores (tests/layers/test_perforated.py)",
    "kernel_constraint": "applied by the optimizer after a step, not in the forward pass",
    "bias_constraint": "applied by the optimizer after a step, not in the forward pass",
    "synchronized_batch_norm": "the same statistics on one replica (tests/reliability)",
    "tfpriors.layers.PerforatedConv2D.dilation_rate": "only 1 is accepted (others are refused)",
}


def effect_arguments(name, obj):
    """The arguments of layer ``name`` whose effect is checked, and those with no entry."""
    checked, missing = [], []
    for parameter in parameters(obj):
        argument = parameter.name
        if argument.startswith("_") or argument in NO_EFFECT or f"{name}.{argument}" in NO_EFFECT:
            continue
        known = argument in ALTERNATIVES or f"{name}.{argument}" in ALTERNATIVES_FOR
        (checked if known else missing).append(argument)
    return checked, missing


def alternative(name, argument):
    """The second valid value of ``argument`` for layer ``name``."""
    return ALTERNATIVES_FOR.get(f"{name}.{argument}", ALTERNATIVES.get(argument))


def effect_base(obj, argument):
    """The :data:`EFFECT_BASE` values for ``argument`` that ``obj`` takes."""
    names = {parameter.name for parameter in parameters(obj)}
    return {key: value for key, value in EFFECT_BASE.get(argument, {}).items() if key in names}


def layer_fingerprint(name, obj, overrides, context):
    """Everything observable of a layer built with ``overrides``: a list of arrays.

    The global seed is reset first, so that two layers built with the same
    arguments give the same fingerprint.
    """
    keras.utils.set_random_seed(0)
    kwargs = arguments(valid_spec(name, obj), context)
    kwargs.update({key: _value(value, context) for key, value in overrides.items()})
    layer = construct(obj, kwargs)
    x = layer_input(layer)
    found = []
    for training in (False, True):
        outputs = call_layer(layer, x, training=training)
        found += [np.asarray(a) for a in keras.tree.flatten(outputs)]
    found += [np.asarray(loss) for loss in layer.losses]
    found += [np.asarray(w) for w in layer.weights]
    found += [np.asarray(v) for metric in layer.metrics for v in metric.variables]
    return found


def same_fingerprint(first, second):
    return len(first) == len(second) and all(
        a.shape == b.shape and np.array_equal(a, b, equal_nan=True) for a, b in zip(first, second)
    )


def public_api():
    """Qualified name -> public class or function, walked from ``tfpriors``.

    Exceptions and result records (dataclasses returned by tools) are left
    out: they are outputs, not things a user calls with their own arguments.
    An object exported from several modules is listed once, under the
    shortest name.
    """
    found = {}
    seen_modules = set()

    def walk(module, prefix):
        if module.__name__ in seen_modules:
            return
        seen_modules.add(module.__name__)
        names = getattr(module, "__all__", None) or [
            n for n in dir(module) if not n.startswith("_")
        ]
        for name in names:
            obj = getattr(module, name)
            if inspect.ismodule(obj):
                if obj.__name__.startswith("tfpriors"):
                    walk(obj, f"{prefix}{name}.")
                continue
            if not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            if not getattr(obj, "__module__", "").startswith("tfpriors"):
                continue
            if inspect.isclass(obj) and (
                issubclass(obj, BaseException)
                or dataclasses.is_dataclass(obj)
                and obj is not tfpriors.tta.transforms.Op
            ):
                continue
            qualified = f"{prefix}{name}"
            for other, known in list(found.items()):
                if known is obj:
                    if len(qualified) < len(other):
                        del found[other]
                        break
                    qualified = None
                    break
            if qualified:
                found[qualified] = obj

    walk(tfpriors, "tfpriors.")
    return dict(sorted(found.items()))


def kind_of(obj):
    if inspect.isfunction(obj):
        return "function"
    if issubclass(obj, keras.callbacks.Callback):
        return "callback"
    if issubclass(obj, keras.layers.Layer):
        return "layer"
    return "class"


def parameters(obj):
    """The named parameters of a callable (``self``, ``*args``, ``**kwargs`` left out)."""
    target = obj.__init__ if inspect.isclass(obj) else obj
    return [
        p
        for p in inspect.signature(target).parameters.values()
        if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]


def valid_spec(name, obj):
    """Argument name -> valid value spec for a call, or raises KeyError naming the gap."""
    specific = VALID_FOR.get(name, {})
    spec = {}
    for parameter in parameters(obj):
        if parameter.name in specific:
            spec[parameter.name] = specific[parameter.name]
        elif parameter.name in VALID:
            spec[parameter.name] = VALID[parameter.name]
        elif parameter.default is not parameter.empty:
            continue  # an optional argument we have no table entry for: default
        else:
            raise KeyError(
                f"{name}: no valid value for required argument "
                f"`{parameter.name}` (add it to VALID or VALID_FOR)"
            )
    if inspect.isclass(obj) and issubclass(obj, tfpriors.layers.KLLayer):
        # Passed through **kwargs: a KL layer is unusable without it.
        spec.setdefault("dataset_size", specific.get("dataset_size", VALID["dataset_size"]))
    return spec


# --- hostile values ---------------------------------------------------------


def hostile_cases(valid):
    """``(value, must_refuse)`` pairs: wrong values for an argument whose valid value is ``valid``.

    ``must_refuse`` marks the values no argument may accept: a wrong type (a
    string for a number, a number for a string, a float for a count, an
    object for anything) or a NaN. An argument that takes one silently was
    either never checked or never used; arguments that do accept one are
    listed in :data:`ACCEPTS`. The other values (0, -1, inf, None, an empty
    string) are valid for some arguments.
    """
    if isinstance(valid, bool):
        refused, other = ["yes", 2, 1.5], [None]
    elif isinstance(valid, int):
        refused, other = [2.5, "2", True, math.nan], [0, -1, -7, None]
    elif isinstance(valid, float):
        refused, other = [math.nan, "0.5"], [math.inf, -math.inf, -1.0, 0.0, None]
    elif isinstance(valid, str):
        refused, other = [7, b"relu"], ["bogus", "", None]
    elif isinstance(valid, tuple):
        refused = [("a", "b"), (math.nan, 1.0)]
        other = [(), (1,), None, 5, (-1, -1), (0, 0, 0)]
    elif isinstance(valid, dict):
        refused, other = [{1: math.nan}, "bogus"], [{}, [1, 2], None]
    elif isinstance(valid, np.ndarray):
        refused, other = [valid.astype(str)], hostile_arrays(valid)
    elif valid is None:
        refused, other = [object()], [3, "bogus", -1, math.nan, (1, 2)]
    else:
        refused, other = [object()], ["bogus", 3, None]
    return [(value, True) for value in refused] + [(value, False) for value in other]


def hostile_values(valid):
    """Wrong values for an argument whose valid value is ``valid`` (see :func:`hostile_cases`)."""
    return [value for value, _ in hostile_cases(valid)]


def hostile_arrays(valid):
    """Arrays with NaN, inf, no rows, the wrong rank and the wrong dtype."""
    out = [valid[:0], valid.reshape(-1)[:1].reshape(()), np.expand_dims(valid, -1)]
    if valid.dtype.kind == "f":
        for bad in (np.nan, np.inf, -np.inf):
            copy = valid.copy()
            copy.reshape(-1)[len(copy.reshape(-1)) // 2] = bad
            out.append(copy)
    else:
        copy = valid.copy()
        copy.reshape(-1)[0] = -5
        out.append(copy)
        out.append(valid.astype("float32") + 0.5)
    return out


# --- layer inputs -------------------------------------------------------------

# Shapes a layer's valid input is looked for among, in order.
PROBE_SHAPES = [(2, 8, 8, 4), (2, 8, 8, 1), (2, 6), (4, 3, 3)]


def call_layer(layer, inputs, training):
    return layer(inputs, training=training)


def layer_input(layer):
    """The first probe shape the freshly built ``layer`` accepts, as a float32 batch."""
    rng = np.random.default_rng(0)
    for shape in PROBE_SHAPES:
        x = rng.uniform(-1, 1, shape).astype("float32")
        try:
            call_layer(layer, x, training=False)
        except (ValueError, TypeError, tf.errors.InvalidArgumentError):
            continue
        return x
    raise AssertionError(f"{type(layer).__name__} accepts none of {PROBE_SHAPES}")


def hostile_inputs(x):
    """(label, array) pairs: the valid input made hostile in one way."""
    cases = [
        ("empty batch", x[:0]),
        ("float64", x.astype("float64")),
        ("float16", x.astype("float16")),
        ("int32", (x * 3).astype("int32")),
        ("bool", x > 0),
        ("one example", x[:1]),
        ("wrong last axis", np.concatenate([x, x[..., :1]], axis=-1)),
        ("extra axis", x[..., None]),
        ("missing axis", x[0]),
        ("strings", x.astype(str)),
    ]
    for label, bad in (("nan", np.nan), ("inf", np.inf), ("-inf", -np.inf)):
        copy = x.copy()
        copy.reshape(-1)[copy.size // 3] = bad
        cases.append((label, copy))
    return cases


# --- the contract ---------------------------------------------------------------


class Finding(AssertionError):
    """A case that broke the contract."""


def _numbers(result):
    """The floating arrays in a result (tensors, arrays, floats, nested lists)."""
    if isinstance(result, (tf.Tensor, tf.Variable, np.ndarray, np.floating, float)):
        array = np.asarray(result)
        return [array] if array.dtype.kind == "f" else []
    if isinstance(result, (list, tuple)):
        return [a for item in result for a in _numbers(item)]
    if isinstance(result, dict):
        return [a for item in result.values() for a in _numbers(item)]
    return []


def is_finite(value):
    """False for NaN / inf numbers and containers holding any; True for everything else.

    Explicit about what is a number: ``None``, strings and other objects are
    not NaN (``np.asarray(None, float)`` is, which would turn the NaN-output
    check off for a hostile ``None``).
    """
    if value is None or isinstance(value, (str, bytes, bool, np.bool_)):
        return True
    if isinstance(value, (numbers.Number, np.number)):
        return bool(np.isfinite(complex(value)))
    if isinstance(value, (np.ndarray, tf.Tensor)):
        array = np.asarray(value)
        if array.dtype.kind in "biufc":
            return bool(np.all(np.isfinite(array)))
        return array.dtype.kind != "O" or all(is_finite(item) for item in array.reshape(-1))
    if isinstance(value, dict):
        return all(is_finite(key) and is_finite(item) for key, item in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return all(is_finite(item) for item in value)
    return True


def names_argument(message, argument):
    """Whether an error ``message`` names ``argument`` as our errors do.

    A parameter is named in backquotes (`` `x` ``, as ``tfpriors._validation``
    writes it; also a part of it, `` `data[0]` ``, or how to pass it,
    `` `dataset_size=` ``), so that the message of an argument called ``x``
    or ``c`` is not matched by any word that holds the letter. The layer input (``"input"``)
    is matched as a whole word (``input`` / ``inputs``), as Keras names it.
    """
    if argument == "input":
        return re.search(r"\binputs?\b", message, re.IGNORECASE) is not None
    return re.search(rf"`{re.escape(argument)}(\[[^`]*\]|=[^`]*)?`", message) is not None


def _alarm(signum, frame):
    raise Finding(f"hang: the case ran for more than {HANG_SECONDS} s")


def check_case(description, run, argument=None, finite_expected=True, must_refuse=False):
    """Runs ``run()``; returns its result or raises :class:`Finding`.

    ``argument`` is the name the error message must contain when the call is
    refused (``None``: the valid call, which must not be refused at all), or
    a tuple of names of which it must contain one.
    ``must_refuse``: the call has a value no argument may accept (see
    :func:`hostile_cases`), so that working is a finding too.
    """
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(HANG_SECONDS)
    try:
        # Relative paths a case writes ("bogus" as a directory) land in a scratch folder.
        with (
            tempfile.TemporaryDirectory(
                prefix="tfpriors-fuzz-cwd-", ignore_cleanup_errors=True
            ) as scratch,
            contextlib.chdir(scratch),
        ):
            result = run()
    except Finding:
        raise
    except (ValueError, TypeError, FileNotFoundError) as error:
        # FileNotFoundError: a missing file the user named (it must name the argument too).
        if argument is None:
            raise Finding(
                f"{description}: the valid call was refused: {type(error).__name__}: {error}"
            ) from error
        names = (argument,) if isinstance(argument, str) else argument
        if not any(names_argument(str(error), name) for name in names):
            raise Finding(
                f"{description}: the error does not name {' or '.join(f'`{n}`' for n in names)}: "
                f"{type(error).__name__}: {error}"
            ) from error
        return None
    except Exception as error:  # noqa: BLE001 - every other type is a finding
        raise Finding(
            f"{description}: {type(error).__name__} (only ValueError or "
            f"TypeError may be raised): {error}"
        ) from error
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    if must_refuse:
        raise Finding(f"{description}: accepted a value of the wrong type or NaN without an error")
    if finite_expected:
        for array in _numbers(result):
            if not np.all(np.isfinite(array)):
                raise Finding(f"{description}: silent NaN/inf in the result")
    return result


@contextlib.contextmanager
def new_context():
    """A namespace with a scratch ``directory`` for files a case reads or writes."""
    with tempfile.TemporaryDirectory(
        prefix="tfpriors-fuzz-", ignore_cleanup_errors=True
    ) as directory:
        yield types.SimpleNamespace(directory=directory)


def arguments(spec, context):
    return {name: _value(value, context) for name, value in spec.items()}


def construct(obj, kwargs):
    """``obj(**kwargs)``; a model with KL layers gets the dataset size it needs to train."""
    instance = obj(**kwargs)
    if isinstance(instance, keras.Model) and tfpriors.callbacks.kl_layers(instance):
        tfpriors.set_dataset_size(instance, 100)
    return instance


def exercise(name, obj, kwargs, context):
    """Constructs or calls ``obj`` with ``kwargs`` and uses what it made."""
    kind = kind_of(obj)
    if kind == "function":
        return obj(**kwargs)
    instance = construct(obj, kwargs)
    if kind == "layer":
        x = layer_input(instance)
        return [call_layer(instance, x, training=True), call_layer(instance, x, training=False)]
    if kind == "callback":
        return run_callback(name, instance, context)
    if isinstance(instance, keras.optimizers.Optimizer):
        return run_optimizer(instance)
    if isinstance(instance, keras.losses.Loss):
        return instance(
            np.arange(4) % 3 if "nll" not in name.lower() else np.zeros((4, 1), "float32"),
            np.zeros((4, 2), "float32"),
        )
    if isinstance(instance, keras.initializers.Initializer):
        return instance((3, 3, 1, 2))
    return instance


def run_callback(name, callback, context):
    """One short ``fit`` with the callback on a model it applies to."""
    spec = VALID_FOR.get(name, {}).get("model", Make(_mlp))
    model = spec(context)
    inputs = model.inputs[0].shape[1:]
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (8,) + tuple(inputs)).astype("float32")
    y = np.arange(8) % 3
    if isinstance(callback, tfpriors.distill.PosteriorSampler):
        optimizer = tfpriors.distill.SGLD(1e-4, dataset_size=8, seed=0)
    else:
        optimizer = "sgd"
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[callback])
    return history.history.get("loss")


def run_optimizer(optimizer):
    model = _mlp(kind="dense")
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).uniform(0, 1, (8, 6)).astype("float32")
    model.fit(x, np.arange(8) % 3, batch_size=4, epochs=1, verbose=0)
    return model.get_weights()
