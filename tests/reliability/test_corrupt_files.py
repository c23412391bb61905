"""Every kind of file tfpriors writes, truncated at random offsets or with a
flipped byte, gives one clear error that names the file (never a crash or a
misleading "file not found")."""

import os

import keras
import numpy as np
import pytest

import tfpriors
from tfpriors import distill, tta
from tfpriors.io import CorruptFileError

OFFSETS = 6


def _damaged_copies(path, tmp_path, seed=0):
    """Truncations at random offsets plus one flipped byte in the middle."""
    data = open(path, "rb").read()
    rng = np.random.default_rng(seed)
    cuts = sorted({0, 1, len(data) - 1, *rng.integers(2, len(data) - 1, OFFSETS)})
    copies = []
    for cut in cuts:
        damaged = tmp_path / f"cut{cut}{os.path.splitext(path)[1]}"
        damaged.write_bytes(data[:cut])
        copies.append(damaged)
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    damaged = tmp_path / f"flipped{os.path.splitext(path)[1]}"
    damaged.write_bytes(bytes(flipped))
    return copies + [damaged]


def _model():
    model = keras.Sequential(
        [keras.Input((8,)), tfpriors.layers.SparseVDDense(16), tfpriors.layers.VariationalDense(3)]
    )
    model(np.zeros((1, 8), "float32"))
    return model


def test_keras_model_files(tmp_path):
    path = tmp_path / "model.keras"
    _model().save(path)
    assert isinstance(tfpriors.io.load_model(path), keras.Model)
    for damaged in _damaged_copies(path, tmp_path):
        with pytest.raises(CorruptFileError, match=str(damaged.name)):
            tfpriors.io.load_model(damaged)


def test_tflite_files(tmp_path):
    from tfpriors_mobile import runtime

    path = tmp_path / "model.tflite"
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    tfpriors.export.to_tflite(model, path, compare_dense=False, latency_repeats=1)
    for damaged in _damaged_copies(path, tmp_path)[:-1]:  # a flipped weight byte is data
        with pytest.raises(runtime.ModelFileError, match=str(damaged.name)):
            runtime.load_interpreter(str(damaged))


def test_policy_json_files(tmp_path):
    path = tmp_path / "policy.json"
    tta.Policy([[("rotate", 9), ("crop", 5)]]).to_json(path)
    for damaged in _damaged_copies(path, tmp_path)[:-1]:  # truncations
        with pytest.raises(ValueError, match=str(damaged.name)):
            tta.Policy.from_json(damaged)


def test_posterior_sampler_state_files(tmp_path):
    sampler = distill.PosteriorSampler(directory=None, in_memory=2, max_samples=2)
    sampler.add_sample([np.arange(50, dtype="float32")])
    path = tmp_path / "state.npz"
    sampler.save_state(path)
    for damaged in _damaged_copies(path, tmp_path):
        with pytest.raises(CorruptFileError, match=str(damaged.name)):
            distill.PosteriorSampler(directory=None, in_memory=2, max_samples=2).load_state(damaged)


def test_policy_search_state_files(tmp_path, digits):
    (x, y), _ = digits
    model = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)]
    )
    x, y = x[:20].reshape(-1, 8, 8, 1), y[:20]
    search = tta.GreedyPolicySearch(pool_size=3, policy_length=1, magnitude_bound=3)
    path = tmp_path / "search.npz"
    search.fit([model], x, y, state_path=path, verbose=0)
    for damaged in _damaged_copies(path, tmp_path):
        with pytest.raises(ValueError, match=str(damaged.name)):
            tta.GreedyPolicySearch(pool_size=3, policy_length=1, magnitude_bound=3).fit(
                [model], x, y, state_path=damaged, verbose=0
            )


def test_posterior_sample_snapshots(tmp_path):
    """Samples kept on disk: a damaged snapshot is named when the samples are read."""
    directory = tmp_path / "samples"
    sampler = distill.PosteriorSampler(directory=str(directory), in_memory=0, max_samples=2)
    sampler.add_sample([np.arange(500, dtype="float32")])
    (snapshot,) = directory.iterdir()
    data = snapshot.read_bytes()
    for damaged in _damaged_copies(snapshot, tmp_path):
        snapshot.write_bytes(damaged.read_bytes())
        with pytest.raises(CorruptFileError, match=snapshot.name):
            list(sampler.samples())
    snapshot.write_bytes(data)
    np.testing.assert_array_equal(next(sampler.samples())[0], np.arange(500))


def test_benchmark_result_files(tmp_path):
    """``bench/run_all.py --report-only`` reads results back; a cut one is named."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_common", os.path.join(os.path.dirname(__file__), "..", "..", "bench", "_common.py")
    )
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    path = tmp_path / "result.json"
    common.write_json(str(path), {"benchmark": "x", "rows": list(range(50))})
    assert common.read_json(str(path))["rows"][-1] == 49
    for damaged in _damaged_copies(path, tmp_path):
        if damaged.read_bytes().strip() == path.read_bytes().strip():
            continue  # the cut took only the final newline: still the whole file
        with pytest.raises(ValueError, match=damaged.name):
            common.read_json(str(damaged))
