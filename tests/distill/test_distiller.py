"""Distiller and BayesianDarkKnowledge: KL direction, student approaches teacher, config."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import special

from tfpriors import distill


def _mlp(outputs, hidden=16, seed=None):
    init = keras.initializers.GlorotNormal(seed)
    return keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(hidden, "tanh", kernel_initializer=init),
            keras.layers.Dense(outputs, kernel_initializer=init),
        ]
    )


def _x(n=256):
    return np.random.default_rng(0).normal(size=(n, 5)).astype("float32")


def _out(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


def _fit_recording(distiller, x, measure, rounds=3, epochs=5):
    """Fits `rounds * epochs` epochs in one call, measuring before and every `epochs`."""
    values = [measure()]
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: (
            values.append(measure()) if (epoch + 1) % epochs == 0 else None
        )
    )
    distiller.fit(x, batch_size=32, epochs=rounds * epochs, verbose=0, callbacks=[record])
    return values


def _classification_kl(teacher, student, x, temperature=1.0):
    t = special.log_softmax(_out(teacher, x) / temperature, axis=1)
    s = special.log_softmax(_out(student, x) / temperature, axis=1)
    return float(np.mean(np.sum(np.exp(t) * (t - s), axis=1)))


def test_loss_is_forward_kl_times_t_squared_plus_alpha_ce():
    x = _x(8)
    labels = np.arange(8) % 3
    teacher, student = _mlp(3, seed=1), _mlp(3, seed=2)
    # Confident teacher logits make the two KL directions clearly different.
    kernel = teacher.layers[-1].kernel
    kernel.assign(kernel * 20.0)
    distiller = distill.Distiller(student, teacher, temperature=3.0, alpha=0.5)
    loss = distiller.compute_loss(x, labels, student(x))
    kl = _classification_kl(teacher, student, x, temperature=3.0)
    ce = -np.mean(special.log_softmax(student.predict(x, verbose=0), 1)[np.arange(8), labels])
    assert float(loss) == pytest.approx(kl * 9.0 + 0.5 * ce, rel=1e-5)
    t = special.log_softmax(teacher.predict(x, verbose=0) / 3, axis=1)
    s = special.log_softmax(student.predict(x, verbose=0) / 3, axis=1)
    reverse = float(np.mean(np.sum(np.exp(s) * (s - t), axis=1)))
    assert abs(reverse - kl) > 0.1 * kl  # the test can tell the two directions apart
    unlabeled = distiller.compute_loss(x, None, student(x))
    assert float(unlabeled) == pytest.approx(kl * 9.0, rel=1e-5)


def test_student_approaches_the_teacher_on_unlabeled_data():
    x = _x()
    teacher = distill.PosteriorEnsemble([_mlp(3, seed=s) for s in range(3)])
    student = _mlp(3, hidden=32, seed=9)
    distiller = distill.Distiller(
        student, teacher, temperature=2.0, alpha=0.0, teacher_output="log_probs"
    )
    distiller.compile(keras.optimizers.Adam(1e-2))
    kls = _fit_recording(distiller, x, lambda: _classification_kl(teacher, student, x))
    before = kls[0]
    assert all(b < a for a, b in zip(kls, kls[1:])), kls
    assert kls[-1] < 0.2 * before
    assert not teacher.trainable


def test_regression_student_matches_the_teacher_mixture():
    x = _x()
    teacher = distill.PosteriorEnsemble(
        [_mlp(1, seed=s) for s in range(4)], task="regression", noise_variance=0.1
    )
    student = _mlp(2, hidden=32, seed=5)
    distiller = distill.Distiller(student, teacher, task="regression", alpha=0.0)
    distiller.compile(keras.optimizers.Adam(1e-2))

    def kl():
        t, s = _out(teacher, x), _out(student, x)
        return float(
            np.mean(
                0.5
                * (
                    s[:, 1]
                    - t[:, 1]
                    + np.exp(t[:, 1] - s[:, 1])
                    + (t[:, 0] - s[:, 0]) ** 2 * np.exp(-s[:, 1])
                    - 1
                )
            )
        )

    kls = _fit_recording(distiller, x, kl)
    assert all(b < a for a, b in zip(kls, kls[1:])), kls
    assert kls[-1] < 0.1 * kls[0]


def test_distiller_with_hard_labels_fits_and_round_trips_its_config(tmp_path):
    x = _x(64)
    y = (x[:, 0] > 0).astype("int64")
    distiller = distill.Distiller(_mlp(2, seed=1), _mlp(2, seed=2), temperature=4.0, alpha=0.1)
    distiller.compile("adam")
    history = distiller.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    clone = distill.Distiller.from_config(distiller.get_config())
    assert (clone.temperature, clone.alpha, clone.task) == (4.0, 0.1, "classification")


def _bdk_data(n=128):
    x = _x(n)
    return x, (x[:, 0] + x[:, 1] > 0).astype("int64")


def test_bayesian_dark_knowledge_student_follows_the_sgld_teacher():
    x, y = _bdk_data()
    teacher, student = _mlp(2, seed=1), _mlp(2, hidden=32, seed=2)
    prior = distill.gaussian_prior(1.0, len(x))
    for layer in teacher.layers:
        layer.kernel_regularizer = prior
    bdk = distill.BayesianDarkKnowledge(
        teacher, student, dataset_size=len(x), teacher_learning_rate=1e-3, input_noise=0.05
    )
    bdk.compile(keras.optimizers.Adam(1e-2))
    first = bdk.evaluate(x, y, verbose=0, return_dict=True)
    history = bdk.fit(x, y, batch_size=32, epochs=12, verbose=0)
    last = bdk.evaluate(x, y, verbose=0, return_dict=True)
    assert set(history.history) == {"loss", "teacher_nll"}
    assert last["teacher_nll"] < 0.7 * first["teacher_nll"]
    assert last["student_nll"] < 0.7 * first["student_nll"]
    assert last["loss"] < 0.5 * first["loss"]  # KL(teacher || student)
    assert int(bdk.teacher_optimizer.iterations.numpy()) == 12 * 4
    np.testing.assert_array_equal(bdk.predict(x, verbose=0), student.predict(x, verbose=0))


def test_bayesian_dark_knowledge_regression_and_burn_in():
    x = _x(64)
    y = (x[:, :1] * 2.0).astype("float32")
    student = _mlp(2, seed=2)
    start = student.get_weights()
    bdk = distill.BayesianDarkKnowledge(
        _mlp(1, seed=1),
        student,
        dataset_size=64,
        task="regression",
        teacher_noise_variance=0.1,
        teacher_learning_rate=1e-4,
        burn_in_steps=4,
    )
    bdk.compile(keras.optimizers.Adam(1e-2))
    bdk.fit(x, y, batch_size=16, epochs=1, verbose=0)  # 4 steps: all burn-in
    for a, b in zip(start, student.get_weights()):
        np.testing.assert_array_equal(a, b)
    history = bdk.fit(x, y, batch_size=16, epochs=3, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    with pytest.raises(ValueError, match="labels"):
        bdk.fit(x, epochs=1, verbose=0)


def test_bayesian_dark_knowledge_config_round_trip():
    bdk = distill.BayesianDarkKnowledge(
        _mlp(2),
        _mlp(2),
        dataset_size=10,
        teacher_optimizer=distill.SGHMC(1e-4, dataset_size=10, seed=1),
        input_noise=0.1,
        temperature=2.0,
    )
    clone = distill.BayesianDarkKnowledge.from_config(bdk.get_config())
    assert isinstance(clone.teacher_optimizer, distill.SGHMC)
    assert clone.teacher_optimizer.get_config() == bdk.teacher_optimizer.get_config()
    assert (clone.input_noise, clone.temperature, clone.dataset_size) == (0.1, 2.0, 10)


@pytest.mark.slow
def test_bayesian_dark_knowledge_under_mirrored_strategy():
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    x, y = _bdk_data(64)
    # ReductionToOneDevice: see the note in test_sgmcmc.py.
    strategy = tf.distribute.MirroredStrategy(
        devices, cross_device_ops=tf.distribute.ReductionToOneDevice()
    )
    with strategy.scope():
        bdk = distill.BayesianDarkKnowledge(
            _mlp(2, seed=1), _mlp(2, seed=2), dataset_size=64, teacher_learning_rate=1e-3
        )
        bdk.compile(keras.optimizers.Adam(1e-2))
    history = bdk.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert np.isfinite(history.history["teacher_nll"]).all()
    for variable in bdk.teacher.trainable_variables + bdk.student.trainable_variables:
        replicas = [v.numpy() for v in variable.value.values]
        np.testing.assert_array_equal(replicas[0], replicas[1])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": -2.0}, "temperature"),
        ({"alpha": -0.1}, "alpha"),
        ({"task": "ranking"}, "task"),
        ({"teacher_output": "scores"}, "teacher_output"),
        ({"teacher_noise_variance": 0.0}, "teacher_noise_variance"),
        ({"teacher": "model"}, "teacher"),
    ],
)
def test_bad_distiller_arguments(kwargs, match):
    kwargs = {"student": _mlp(2), "teacher": _mlp(2), **kwargs}
    with pytest.raises((ValueError, TypeError), match=match):
        distill.Distiller(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"dataset_size": 0}, "dataset_size"),
        ({"dataset_size": -3}, "dataset_size"),
        ({"task": "ranking"}, "task"),
        ({"temperature": 0.0}, "temperature"),
        ({"input_noise": -1.0}, "input_noise"),
        ({"burn_in_steps": -1}, "burn_in_steps"),
        ({"teacher_learning_rate": -1e-3}, "learning_rate"),
        ({"teacher_optimizer": "sgd"}, "teacher_optimizer"),
        ({"teacher_optimizer": distill.SGLD(1e-3, dataset_size=5)}, "dataset_size"),
    ],
)
def test_bad_bayesian_dark_knowledge_arguments(kwargs, match):
    kwargs = {"teacher_model": _mlp(2), "student_model": _mlp(2), "dataset_size": 10, **kwargs}
    with pytest.raises((ValueError, TypeError), match=match):
        distill.BayesianDarkKnowledge(**kwargs)


# --- reading probabilities: teacher_output="auto" and softmax students ---------


def _with_softmax(model):
    """The same network (shared weights) ending in a softmax: it outputs probabilities."""
    return keras.Sequential([keras.Input((5,)), model, keras.layers.Softmax()])


class _Opaque(keras.Model):
    """A subclassed model whose last layer cannot be inspected: its rows decide."""

    def __init__(self, inner, softmax, **kwargs):
        super().__init__(**kwargs)
        self.inner, self.softmax = inner, softmax

    def call(self, inputs):
        outputs = self.inner(inputs)
        return keras.ops.softmax(outputs) if self.softmax else outputs


@pytest.mark.parametrize("wrap", ["softmax_layer", "opaque_softmax", "opaque_logits"])
def test_teacher_output_auto_reads_a_teacher_like_its_logits_twin(wrap):
    x, labels = _x(16), np.arange(16) % 3
    teacher, student = _mlp(3, seed=1), _mlp(3, seed=2)
    kernel = teacher.layers[-1].kernel
    kernel.assign(kernel * 10.0)  # confident: flattening would show
    wrapped = {
        "softmax_layer": lambda: _with_softmax(teacher),
        "opaque_softmax": lambda: _Opaque(teacher, softmax=True),
        "opaque_logits": lambda: _Opaque(teacher, softmax=False),
    }[wrap]()
    loss = distill.Distiller(student, wrapped, temperature=3.0, alpha=0.5).compute_loss(
        x, labels, student(x)
    )
    kl = _classification_kl(teacher, student, x, temperature=3.0)
    ce = -np.mean(special.log_softmax(_out(student, x), 1)[np.arange(16), labels])
    assert float(loss) == pytest.approx(kl * 9.0 + 0.5 * ce, rel=1e-5)
    if wrap != "opaque_logits":
        # The old default read the probabilities as logits: a much flatter teacher.
        probs = _out(wrapped, x)
        t = special.log_softmax(special.log_softmax(probs, 1) / 3.0, axis=1)
        s = special.log_softmax(_out(student, x) / 3.0, axis=1)
        old = 9.0 * np.mean(np.sum(np.exp(t) * (t - s), axis=1)) + 0.5 * ce
        assert abs(old - float(loss)) > 0.2 * float(loss)


def test_a_softmax_student_is_trained_on_its_log_probabilities():
    x, labels = _x(16), np.arange(16) % 3
    teacher, student = _mlp(3, seed=1), _mlp(3, seed=2)
    softmax_student = _with_softmax(student)
    expected = distill.Distiller(student, teacher, temperature=2.0, alpha=0.5).compute_loss(
        x, labels, student(x)
    )
    distiller = distill.Distiller(softmax_student, teacher, temperature=2.0, alpha=0.5)
    loss = distiller.compute_loss(x, labels, softmax_student(x))
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    distiller.compile(keras.optimizers.Adam(1e-2))
    history = distiller.fit(x, labels, batch_size=8, epochs=3, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_teacher_output_that_contradicts_the_teacher_is_refused():
    softmax_teacher = _with_softmax(_mlp(3))
    for output in ("logits", "log_probs"):
        with pytest.raises(ValueError, match=r'`teacher_output=.*softmax.*"probs".*"auto"'):
            distill.Distiller(_mlp(3), softmax_teacher, teacher_output=output)
    with pytest.raises(ValueError, match=r'`teacher_output="probs"`.*logits'):
        distill.Distiller(_mlp(3), _mlp(3), teacher_output="probs")
    with pytest.raises(ValueError, match=r"teacher_output.*'auto'"):
        distill.Distiller(_mlp(3), _mlp(3), teacher_output="scores")
    # Explicit values that agree with the model are kept, and survive the config.
    distiller = distill.Distiller(_mlp(3), softmax_teacher, teacher_output="probs")
    assert distill.Distiller.from_config(distiller.get_config()).teacher_output == "probs"
    assert distill.Distiller(_mlp(3), _mlp(3)).get_config()["teacher_output"] == "auto"


def test_bayesian_dark_knowledge_reads_softmax_models_like_their_logits_twins():
    x, y = _bdk_data(64)
    teacher, student = _mlp(2, seed=1), _mlp(2, seed=2)
    metrics = []
    for pair in ((teacher, student), (_with_softmax(teacher), _with_softmax(student))):
        bdk = distill.BayesianDarkKnowledge(*pair, dataset_size=len(x), temperature=2.0)
        bdk.compile("adam")
        metrics.append(bdk.evaluate(x, y, batch_size=32, verbose=0, return_dict=True))
    assert sorted(metrics[0]) == ["loss", "student_nll", "teacher_nll"]
    for key in metrics[0]:
        assert metrics[1][key] == pytest.approx(metrics[0][key], rel=1e-4), key
    nll = -np.mean(special.log_softmax(_out(teacher, x), 1)[np.arange(len(y)), y])
    assert metrics[1]["teacher_nll"] == pytest.approx(nll, rel=1e-4)
