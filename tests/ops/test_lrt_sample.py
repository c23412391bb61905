"""The fused local-reparameterization noise op: its stream, statistics, gradient, errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

import tfpriors
from tfpriors.ops import library, lrt_sample

# Fails instead of skipping when a C++ compiler exists but the op is missing (conftest).
needs_op = pytest.mark.usefixtures("fused_op")


def _available_isas():
    if library.noise_isa() is None:
        return []
    widest = library.NOISE_ISAS.index(library.noise_isa())
    return list(library.NOISE_ISAS[: widest + 1])


@pytest.fixture(params=["avx512", "avx2", "scalar"])
def isa(request, fused_op):
    """Each vector code of the op this CPU runs (the others are skipped: CPU, not build)."""
    if request.param not in _available_isas():
        pytest.skip(f"this CPU does not run the {request.param} code")
    library.select_noise_isa(request.param)
    yield request.param
    library.select_noise_isa("auto")


def _eps(shape, seed, implementation, offset=0):
    zeros = tf.zeros(shape)
    return lrt_sample(zeros, tf.ones(shape), seed, offset=offset, implementation=implementation)


# -- the stream ------------------------------------------------------------------------


def test_noise_is_tensorflows_stateless_normal(isa):
    shape = (7, 33, 5)  # 1,155 elements: not a multiple of 4, of a vector or of a chunk
    mean = tf.random.stateless_normal(shape, [0, 1])
    variance = tf.random.stateless_uniform(shape, [0, 2], maxval=3.0)
    seed = tf.constant([11, 12])
    expected = mean + tf.sqrt(variance + 1e-3) * tf.random.stateless_normal(shape, seed)
    actual = lrt_sample(mean, variance, seed, variance_floor=1e-3, implementation="fused")
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


def test_every_isa_draws_the_same_numbers(fused_op):
    seed = tf.constant([3, 9])
    draws = {}
    for isa in _available_isas():
        library.select_noise_isa(isa)
        try:
            draws[isa] = _eps((100_003,), seed, "fused").numpy()
        finally:
            library.select_noise_isa("auto")
    for isa, values in draws.items():
        np.testing.assert_allclose(values, draws["scalar"], atol=2e-6, err_msg=isa)


@pytest.mark.parametrize("offset", [1, 2, 3, 4, 4097, 10_000])
def test_offset_draws_later_elements_of_the_same_stream(fused_op, offset):
    seed = tf.constant([5, 6])
    whole = tf.reshape(tf.random.stateless_normal((offset + 999,), seed), [-1])
    part = _eps((999,), seed, "fused", offset=offset)
    np.testing.assert_allclose(part, whole[offset:], atol=2e-6)
    fallback = _eps((999,), seed, "tensorflow", offset=offset)
    np.testing.assert_allclose(fallback, whole[offset:], atol=0)


def test_low_counter_word_wrapping_inside_a_vector(isa):
    # Counters are 128-bit: a draw whose blocks cross 2^32 in the low word carries into
    # the next word (the vector code hands those blocks to the scalar code).
    module = tfpriors.ops.fused_op_module()
    key = tf.constant([12345], tf.uint64)
    counter = tf.constant([2**32 - 5, 7], tf.uint64)
    n = 4 * 64
    sample = module.lrt_sample(tf.zeros([n]), tf.ones([n]), key, counter, tf.constant(0, tf.int64))
    reference = tf.raw_ops.StatelessRandomNormalV2(
        shape=[n], key=key, counter=counter, alg=1, dtype=tf.float32
    )
    np.testing.assert_allclose(sample, reference, atol=2e-6)


def test_deterministic_per_seed_and_different_across_seeds(fused_op):
    first = _eps((4096,), [1, 2], "fused")
    again = _eps((4096,), [1, 2], "fused")
    other = _eps((4096,), [1, 3], "fused")
    np.testing.assert_array_equal(first, again)
    assert np.mean(np.abs(first - other)) > 0.5


# -- statistics ------------------------------------------------------------------------


def test_moments_and_kolmogorov_smirnov_against_the_standard_normal(isa):
    eps = _eps((400_000,), [21, 22], "fused").numpy().astype(np.float64)
    assert abs(eps.mean()) < 5 / np.sqrt(eps.size)  # 5 standard errors
    assert abs(eps.var() - 1.0) < 5 * np.sqrt(2 / eps.size)
    assert abs(stats.skew(eps)) < 5 * np.sqrt(6 / eps.size)
    assert abs(stats.kurtosis(eps)) < 5 * np.sqrt(24 / eps.size)
    assert stats.kstest(eps, "norm").pvalue > 1e-3
    # The tails: about 0.27% of draws beyond 3 standard deviations.
    assert abs(np.mean(np.abs(eps) > 3.0) - 0.0027) < 0.0007


def test_independent_across_elements_and_steps(fused_op):
    n = 200_000
    eps = _eps((n,), [8, 9], "fused").numpy().astype(np.float64)
    bound = 5 / np.sqrt(n)
    for lag in (1, 2, 3, 4, 5, 8, 16):  # lanes and blocks of the generator
        assert abs(np.corrcoef(eps[:-lag], eps[lag:])[0, 1]) < bound, lag
    # The two normals of one Box-Muller pair are uncorrelated, and so are their squares.
    pairs = eps.reshape(-1, 2)
    assert abs(np.corrcoef(pairs[:, 0], pairs[:, 1])[0, 1]) < 5 / np.sqrt(len(pairs))
    assert abs(np.corrcoef(pairs[:, 0] ** 2, pairs[:, 1] ** 2)[0, 1]) < 5 / np.sqrt(len(pairs))
    # Successive steps of a seed generator: a new seed each, independent draws.
    generator = keras.random.SeedGenerator(0)
    steps = [_eps((n,), tf.cast(generator.next(), tf.int32), "fused").numpy() for _ in range(2)]
    assert abs(np.corrcoef(steps[0], steps[1])[0, 1]) < bound
    assert stats.ks_2samp(steps[0], steps[1]).pvalue > 1e-3


def test_sample_has_the_requested_moments(fused_op):
    mean = tf.fill([100_000], 3.0)
    variance = tf.fill([100_000], 0.25)
    sample = lrt_sample(mean, variance, [4, 4], implementation="fused").numpy()
    assert abs(sample.mean() - 3.0) < 5 * 0.5 / np.sqrt(sample.size)
    assert abs(sample.std() - 0.5) < 0.01


# -- gradient --------------------------------------------------------------------------


def test_gradient_redraws_the_noise(fused_op):
    shape = (6, 37)
    mean = tf.random.stateless_normal(shape, [1, 1])
    variance = tf.random.stateless_uniform(shape, [1, 2], minval=0.1, maxval=2.0)
    seed = tf.constant([7, 7])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([mean, variance])
        fused = lrt_sample(mean, variance, seed, variance_floor=1e-4, implementation="fused")
        plain = lrt_sample(mean, variance, seed, variance_floor=1e-4, implementation="tensorflow")
        upstream = tf.random.stateless_normal(shape, [9, 9])
        fused_loss = tf.reduce_sum(fused * upstream)
        plain_loss = tf.reduce_sum(plain * upstream)
    for fused_grad, plain_grad in zip(
        tape.gradient(fused_loss, [mean, variance]), tape.gradient(plain_loss, [mean, variance])
    ):
        np.testing.assert_allclose(fused_grad, plain_grad, rtol=1e-5, atol=1e-6)


def test_gradient_matches_finite_differences(fused_op):
    mean = tf.constant(np.linspace(-1, 1, 24).reshape(4, 6), tf.float64)
    variance = tf.constant(np.linspace(0.2, 2.0, 24).reshape(4, 6), tf.float64)

    def sample(m, v):  # float64 in, through the float32 op
        return tf.cast(
            lrt_sample(
                tf.cast(m, tf.float32), tf.cast(v, tf.float32), [2, 3], implementation="fused"
            ),
            tf.float64,
        )

    theoretical, numerical = tf.test.compute_gradient(sample, [mean, variance], delta=1e-2)
    for analytic, estimate in zip(theoretical, numerical):
        np.testing.assert_allclose(analytic, estimate, atol=2e-3)


# -- dtypes, graphs, layers ------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_16_bit_values_are_computed_in_float32(fused_op, dtype):
    mean = tf.zeros((64, 8), dtype)
    variance = tf.ones((64, 8), dtype)
    sample = lrt_sample(mean, variance, [1, 2], implementation="fused")
    assert sample.dtype == dtype
    reference = tf.random.stateless_normal((64, 8), [1, 2])
    np.testing.assert_allclose(tf.cast(sample, tf.float32), reference, rtol=1e-2, atol=1e-2)


def test_auto_prefers_tensorflow_where_only_the_scalar_code_runs(fused_op):
    # The op's portable code is slower than TensorFlow's draw (bench/train_step.py).
    def traced_types():
        concrete = tf.function(lambda m: lrt_sample(m, m, [1, 2])).get_concrete_function(
            tf.TensorSpec([4, 3])
        )
        return {op.type for op in concrete.graph.get_operations()}

    library.select_noise_isa("scalar")
    try:
        assert "LrtSample" not in traced_types()
    finally:
        library.select_noise_isa("auto")
    assert ("LrtSample" in traced_types()) == (library.noise_isa() != "scalar")


def test_float64_uses_the_tensorflow_path_under_auto(fused_op):
    sample = lrt_sample(tf.zeros((3, 4), tf.float64), tf.ones((3, 4), tf.float64), [1, 2])
    assert sample.dtype == tf.float64
    with pytest.raises(ValueError, match="float16, bfloat16 or float32"):
        lrt_sample(
            tf.zeros((3, 4), tf.float64),
            tf.ones((3, 4), tf.float64),
            [1, 2],
            implementation="fused",
        )


def test_shape_function_in_graph_mode(fused_op):
    @tf.function(
        input_signature=[
            tf.TensorSpec([None, 5]),
            tf.TensorSpec([None, 5]),
            tf.TensorSpec([2], tf.int32),
        ]
    )
    def sample(m, v, seed):
        out = lrt_sample(m, v, seed, implementation="fused")
        assert out.shape.as_list() == [None, 5]
        return out

    assert sample(tf.zeros((3, 5)), tf.ones((3, 5)), tf.constant([1, 2])).shape == (3, 5)


@pytest.mark.parametrize(
    "layer",
    [
        lambda: tfpriors.layers.SparseVDDense(4, seed=1, dataset_size=100),
        lambda: tfpriors.layers.SparseVDConv2D(4, 3, seed=1, dataset_size=100),
        lambda: tfpriors.layers.VariationalDense(4, seed=1, dataset_size=100),
    ],
)
def test_layers_train_through_the_op(fused_op, layer):
    layer = layer()
    x = np.ones((2, 6, 6, 3) if "Conv" in type(layer).__name__ else (2, 6), "float32")
    concrete = tf.function(lambda x: layer(x, training=True)).get_concrete_function(
        tf.TensorSpec(x.shape)
    )
    types = {op.type for op in concrete.graph.get_operations()}
    # (Where only the scalar code runs, "auto" takes TensorFlow's faster draw.)
    fused = library.noise_isa() != "scalar"
    assert ("LrtSample" in types) == fused
    assert ("StatelessRandomNormalV2" in types) == (not fused)
    with tfpriors.ops.noise_implementation("tensorflow"):
        plain = tf.function(lambda x: layer(x, training=True)).get_concrete_function(
            tf.TensorSpec(x.shape)
        )
    assert "LrtSample" not in {op.type for op in plain.graph.get_operations()}


def test_layer_noise_equals_the_pure_tensorflow_path(fused_op):
    # The same seeds give the same training noise with or without the compiled op.
    x = np.random.default_rng(0).normal(size=(8, 5)).astype("float32")
    fused_layer = tfpriors.layers.SparseVDDense(3, seed=4, dataset_size=100)
    plain_layer = tfpriors.layers.SparseVDDense(3, seed=4, dataset_size=100)
    fused_layer.build(x.shape)
    plain_layer.build(x.shape)
    plain_layer.set_weights(fused_layer.get_weights())
    for _ in range(2):  # two steps: the seed generators advance alike
        fused = fused_layer(x, training=True)
        with tfpriors.ops.noise_implementation("tensorflow"):
            plain = plain_layer(x, training=True)
        np.testing.assert_allclose(fused, plain, rtol=1e-5, atol=1e-5)


def test_explicit_jit_compile_falls_back_instead_of_failing(fused_op):
    model = keras.Sequential([keras.Input((5,)), tfpriors.layers.SparseVDDense(2, seed=0)])
    tfpriors.set_dataset_size(model, 16)
    with pytest.warns(UserWarning, match="jit_compile"):
        model.compile("adam", "mse", jit_compile=True)
    history = model.fit(np.ones((16, 5)), np.zeros((16, 2)), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


# -- bad input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(variance=np.ones((3, 5), "float32")), "shape of `mean`"),
        (dict(variance=np.ones((3, 4), "float64")), "dtype of `mean`"),
        (dict(mean=np.ones((3, 4), "int32"), variance=np.ones((3, 4), "int32")), "floating"),
        (dict(seed=[1, 2, 3]), "`seed` must have shape"),
        (dict(seed=[1.0, 2.0]), "`seed` must hold int32 or int64"),
        (dict(offset=-1), "`offset` must be >= 0"),
        (dict(offset=1.5), "`offset` must be an integer"),
        (dict(variance_floor=-1.0), "`variance_floor` must be >= 0"),
        (dict(implementation="cuda"), "`implementation` must be one of"),
    ],
)
def test_bad_arguments_are_refused_by_name(kwargs, message):
    arguments = dict(
        mean=np.zeros((3, 4), "float32"), variance=np.ones((3, 4), "float32"), seed=[1, 2]
    )
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        lrt_sample(**arguments)


def _raw(module, **overrides):
    arguments = dict(
        mean=tf.zeros([4, 3]),
        variance=tf.ones([4, 3]),
        key=tf.constant([1], tf.uint64),
        counter=tf.constant([0, 0], tf.uint64),
        offset=tf.constant(0, tf.int64),
    )
    arguments.update(overrides)
    return module.lrt_sample(**arguments)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(variance=tf.ones([4, 2])), "variance"),
        (dict(key=tf.constant([1, 2], tf.uint64)), "key"),
        (dict(counter=tf.constant([0], tf.uint64)), "counter"),
        (dict(offset=tf.constant([0], tf.int64)), "offset"),
        (dict(offset=tf.constant(-3, tf.int64)), "offset"),
        (dict(offset=tf.constant(2**63 - 5, tf.int64)), "offset"),
    ],
)
def test_raw_op_refuses_bad_shapes_and_offsets(fused_op, overrides, message):
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match=message):
        _raw(fused_op, **overrides)


@pytest.mark.parametrize("floor", [-1.0, float("nan"), float("inf")])
def test_raw_op_refuses_a_bad_variance_floor(fused_op, floor):
    with pytest.raises(tf.errors.InvalidArgumentError, match="variance_floor"):
        fused_op.lrt_sample(
            tf.zeros([2]),
            tf.ones([2]),
            tf.constant([1], tf.uint64),
            tf.constant([0, 0], tf.uint64),
            tf.constant(0, tf.int64),
            variance_floor=floor,
        )


def test_raw_op_handles_empty_and_large_offsets(fused_op):
    assert _raw(fused_op, mean=tf.zeros([0, 3]), variance=tf.ones([0, 3])).shape == (0, 3)
    # A stream position past 2^33 blocks: the counter's low word carries into the next.
    offset = 2**35 + 3
    sample = _raw(fused_op, offset=tf.constant(offset, tf.int64))
    counter = tf.constant([offset // 4, 0], tf.uint64)
    reference = tf.raw_ops.StatelessRandomNormalV2(
        shape=[15], key=tf.constant([1], tf.uint64), counter=counter, alg=1, dtype=tf.float32
    )
    np.testing.assert_allclose(tf.reshape(sample, [-1]), reference[3:], atol=2e-6)


def test_select_noise_isa_refuses_unknown_names():
    with pytest.raises(ValueError, match="`name` must be one of"):
        library.select_noise_isa("sse9")
