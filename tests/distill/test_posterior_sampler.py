"""PosteriorSampler: burn-in, thinning, memory/disk bound, state, the ensemble model."""

import os

import keras
import numpy as np
import pytest
from scipy import special

from tfpriors import distill


def _model(outputs=3):
    return keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(outputs)]
    )


def _data(n=32):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 4)).astype("float32"), rng.integers(0, 3, n)


def _fit(sampler, epochs=5, model=None):
    x, y = _data()
    model = model or _model()
    model.compile(
        distill.SGLD(1e-3, dataset_size=len(x), seed=0),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, y, batch_size=8, epochs=epochs, verbose=0, callbacks=[sampler])  # 4 steps
    return model, x


def test_burn_in_thinning_and_the_memory_and_disk_bound(tmp_path):
    sampler = distill.PosteriorSampler(
        burn_in_epochs=2, thin=3, max_samples=3, directory=tmp_path, in_memory=1
    )
    model, _ = _fit(sampler, epochs=5)
    # 3 epochs x 4 steps after burn-in = 12 steps: samples at steps 3, 6, 9, 12.
    # Sample 0 (in memory) was dropped for sample 3, which took its memory slot.
    assert sampler.steps_after_burn_in == 12 and sampler.next_index == 4
    assert sampler.num_samples == 3
    assert sorted(os.listdir(tmp_path)) == ["sample_000001.npz", "sample_000002.npz"]
    assert [("weights" in r, r["index"]) for r in sampler.get_state()["records"]] == [
        (False, 1),
        (False, 2),
        (True, 3),
    ]
    samples = list(sampler.samples())
    for got, want in zip(samples[-1], model.get_weights()):
        np.testing.assert_array_equal(got, want)
    assert not np.array_equal(samples[0][0], samples[1][0])


def test_in_memory_samples_stay_in_memory(tmp_path):
    sampler = distill.PosteriorSampler(
        burn_in_epochs=0, thin=2, max_samples=4, directory=None, in_memory=4
    )
    _fit(sampler, epochs=3)  # 6 samples: the 2 oldest dropped, nothing on disk
    assert sampler.num_samples == 4 and sampler.next_index == 6
    assert [r["index"] for r in sampler.get_state()["records"]] == [2, 3, 4, 5]


def test_state_round_trip_resumes_collection(tmp_path):
    sampler = distill.PosteriorSampler(
        burn_in_epochs=1, thin=2, max_samples=5, directory=tmp_path / "s", in_memory=2
    )
    model, x = _fit(sampler, epochs=3)
    sampler.save_state(tmp_path / "state.npz")
    restored = distill.PosteriorSampler(
        burn_in_epochs=1, thin=2, max_samples=5, directory=tmp_path / "s", in_memory=2
    )
    restored.load_state(tmp_path / "state.npz")
    assert restored.get_state()["epochs_seen"] == 3
    assert restored.num_samples == sampler.num_samples == 4
    for a, b in zip(restored.samples(), sampler.samples()):
        for wa, wb in zip(a, b):
            np.testing.assert_array_equal(wa, wb)
    # Both continue identically: same counters, same next file names.
    restored.set_model(model)
    sampler.add_sample(model.get_weights())
    restored.add_sample(model.get_weights())
    assert restored.get_state()["next_index"] == sampler.get_state()["next_index"] == 5
    np.testing.assert_allclose(
        restored.ensemble().predict(x, verbose=0),
        sampler.ensemble().predict(x, verbose=0),
        rtol=1e-6,
    )


def test_get_config_round_trips(tmp_path):
    sampler = distill.PosteriorSampler(
        burn_in_epochs=3, thin=7, max_samples=9, directory=str(tmp_path), in_memory=2
    )
    clone = distill.PosteriorSampler(**sampler.get_config())
    assert clone.get_config() == sampler.get_config()


def test_set_state_checks_the_files(tmp_path):
    sampler = distill.PosteriorSampler(
        burn_in_epochs=0, thin=1, max_samples=4, directory=tmp_path, in_memory=0
    )
    _fit(sampler, epochs=1)
    state = sampler.get_state()
    os.remove(tmp_path / "sample_000000.npz")
    with pytest.raises(FileNotFoundError, match="sample_000000"):
        distill.PosteriorSampler(directory=tmp_path).set_state(state)
    with pytest.raises(ValueError, match="state"):
        distill.PosteriorSampler(directory=tmp_path).set_state({"records": []})


def test_classification_ensemble_is_log_mean_prob(tmp_path):
    sampler = distill.PosteriorSampler(
        burn_in_epochs=0, thin=2, max_samples=4, directory=tmp_path, in_memory=2
    )
    model, x = _fit(sampler, epochs=2)
    ensemble = sampler.ensemble()
    member_log_probs = []
    for weights in sampler.samples():
        model.set_weights(weights)
        member_log_probs.append(special.log_softmax(model.predict(x, verbose=0), axis=1))
    expected = special.logsumexp(member_log_probs, axis=0) - np.log(4)
    np.testing.assert_allclose(ensemble.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-5)
    path = tmp_path / "ensemble.keras"
    ensemble.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), ensemble.predict(x, verbose=0))
    assert len(sampler.ensemble(last=2).members) == 2


@pytest.mark.parametrize("noise_variance", [None, 0.3])
def test_regression_ensemble_is_the_moment_matched_mixture(noise_variance):
    x, _ = _data()
    members = [_model(outputs=2 if noise_variance is None else 1) for _ in range(3)]
    ensemble = distill.PosteriorEnsemble(members, task="regression", noise_variance=noise_variance)
    outputs = np.stack([m.predict(x, verbose=0) for m in members])
    if noise_variance is None:
        means, variances = outputs[..., :1], np.exp(outputs[..., 1:])
    else:
        means, variances = outputs, np.full_like(outputs, noise_variance)
    mean = means.mean(0)
    variance = (variances + means**2).mean(0) - mean**2
    got = ensemble.predict(x, verbose=0)
    np.testing.assert_allclose(got[:, :1], mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.exp(got[:, 1:]), variance, rtol=1e-4)


def test_ensemble_before_any_sample_explains():
    sampler = distill.PosteriorSampler(burn_in_epochs=10, directory=None, in_memory=100)
    sampler.set_model(_model())
    with pytest.raises(ValueError, match="burn_in_epochs"):
        sampler.ensemble()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"burn_in_epochs": -1}, "burn_in_epochs"),
        ({"thin": 0}, "thin"),
        ({"max_samples": 0}, "max_samples"),
        ({"in_memory": -2}, "in_memory"),
        ({"directory": None, "in_memory": 5, "max_samples": 10}, "directory"),
        ({"directory": 3}, "directory"),
    ],
)
def test_bad_sampler_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        distill.PosteriorSampler(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"members": []}, "members"),
        ({"task": "ranking"}, "task"),
        ({"output": "scores"}, "output"),
        ({"noise_variance": -1.0}, "noise_variance"),
    ],
)
def test_bad_ensemble_arguments(kwargs, match):
    kwargs = {"members": [_model()], **kwargs}
    with pytest.raises((ValueError, TypeError), match=match):
        distill.PosteriorEnsemble(**kwargs)


def test_state_path_saves_each_epoch_and_resumes_a_new_sampler(tmp_path):
    state = tmp_path / "state.npz"
    sampler = distill.PosteriorSampler(
        burn_in_epochs=1,
        thin=2,
        max_samples=2,
        directory=tmp_path / "s",
        in_memory=0,
        state_path=state,
    )
    _fit(sampler, epochs=3)
    assert state.exists()
    # Dropped samples' files are gone once the saved state no longer lists them.
    assert sorted(os.listdir(tmp_path / "s")) == [r["file"] for r in sampler.get_state()["records"]]
    resumed = distill.PosteriorSampler(
        burn_in_epochs=1,
        thin=2,
        max_samples=2,
        directory=tmp_path / "s",
        in_memory=0,
        state_path=state,
    )
    resumed.on_train_begin()
    assert resumed.get_state() == sampler.get_state()
    assert resumed.get_config()["state_path"] == os.fspath(state)


def test_state_path_keeps_dropped_files_until_the_state_is_saved(tmp_path):
    sampler = distill.PosteriorSampler(
        burn_in_epochs=0,
        thin=1,
        max_samples=1,
        directory=tmp_path,
        in_memory=0,
        state_path=tmp_path / "state.npz",
    )
    sampler.add_sample([np.zeros(2)])
    sampler.add_sample([np.ones(2)])  # drops sample 0 mid-epoch
    assert sorted(os.listdir(tmp_path)) == ["sample_000000.npz", "sample_000001.npz"]
    sampler.on_epoch_end(0)
    assert sorted(os.listdir(tmp_path)) == ["sample_000001.npz", "state.npz"]


def _softmax_model(outputs=3):
    return keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="tanh"),
            keras.layers.Dense(outputs, activation="softmax"),
        ]
    )


def test_ensemble_of_softmax_members_is_log_mean_prob():
    x, _ = _data()
    members = [_softmax_model() for _ in range(3)]
    for member in members:  # confident members: flattening would show
        kernel = member.layers[-1].kernel
        kernel.assign(kernel * 10.0)
    ensemble = distill.PosteriorEnsemble(members)
    expected = np.log(np.mean([m.predict(x, verbose=0) for m in members], axis=0))
    np.testing.assert_allclose(ensemble.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-5)
    old = special.logsumexp(
        [special.log_softmax(m.predict(x, verbose=0), 1) for m in members], axis=0
    ) - np.log(3)
    assert np.abs(old - expected).max() > 0.5  # what output="logits" used to give
    with pytest.raises(ValueError, match=r'`output="logits"`.*softmax'):
        distill.PosteriorEnsemble(members, output="logits")
    config = ensemble.get_config()
    assert config["output"] == "auto"


def test_sampler_ensemble_of_a_softmax_model_reads_probabilities(tmp_path):
    sampler = distill.PosteriorSampler(burn_in_epochs=0, thin=2, directory=tmp_path, in_memory=4)
    x, y = _data()
    model = _softmax_model()
    model.compile(
        distill.SGLD(1e-3, dataset_size=len(x), seed=0),
        keras.losses.SparseCategoricalCrossentropy(),
    )
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[sampler])
    probs = []
    for weights in sampler.samples():
        model.set_weights(weights)
        probs.append(model.predict(x, verbose=0))
    np.testing.assert_allclose(
        sampler.ensemble().predict(x, verbose=0), np.log(np.mean(probs, 0)), rtol=1e-5, atol=1e-5
    )


def test_ensemble_of_a_model_with_a_lambda_layer(tmp_path):
    # The members are copies of the user's model: a Lambda must not go through
    # Keras' config round trip (refused in safe mode), and must keep its function.
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="tanh"),
            keras.layers.Lambda(lambda x: x * 2.0),
            keras.layers.Dense(3),
        ]
    )
    sampler = distill.PosteriorSampler(
        burn_in_epochs=0, thin=2, max_samples=2, directory=tmp_path, in_memory=2
    )
    model, x = _fit(sampler, epochs=1, model=model)
    ensemble = sampler.ensemble()
    member_log_probs = []
    for weights in sampler.samples():
        model.set_weights(weights)
        member_log_probs.append(special.log_softmax(model.predict(x, verbose=0), axis=1))
    expected = special.logsumexp(member_log_probs, axis=0) - np.log(2)
    np.testing.assert_allclose(ensemble.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-5)
