"""Fuzzes every public layer, callback and tool (hypothesis).

The callables come from walking ``tfpriors``' exports (``api_catalog.public_api``),
so a new layer is fuzzed without editing this file. Each case makes one
argument hostile (NaN, a negative count, a wrong type, an empty or NaN array)
or, for layers, feeds a hostile input (random shapes, dtypes, NaN / inf, an
empty batch). It must work, with finite numbers out of finite numbers in, or
raise ``ValueError`` / ``TypeError`` naming the argument (or the input).

``make test`` runs ``FUZZ_EXAMPLES`` cases (default 6) per callable and test;
``make test-slow`` runs ``test_*_many`` with 10 (arguments) and 20 (inputs) times
as many.
"""

import os

import api_catalog as catalog
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "6"))
API = catalog.public_api()
FUZZED = sorted(name for name in API if name not in catalog.NOT_FUZZED)
LAYERS = [name for name in FUZZED if catalog.kind_of(API[name]) == "layer"]

SETTINGS = dict(
    deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)


def test_every_public_callable_is_fuzzed():
    """Each public callable has a valid call; NOT_FUZZED names only real exports."""
    gaps = []
    for name in FUZZED:
        try:
            catalog.valid_spec(name, API[name])
        except KeyError as error:
            gaps.append(str(error))
    assert not gaps, "\n".join(gaps)
    stale = sorted(set(catalog.NOT_FUZZED) - set(API))
    assert not stale, f"NOT_FUZZED lists names that are not public: {stale}"
    assert len(LAYERS) >= 15 and len(FUZZED) >= 80


@pytest.mark.parametrize("name", FUZZED)
def test_valid_call_works(name):
    obj = API[name]
    spec = catalog.valid_spec(name, obj)
    with catalog.new_context() as context:
        catalog.check_case(
            f"{name}(valid)",
            lambda: catalog.exercise(name, obj, catalog.arguments(spec, context), context),
        )


def _hostile_argument_case(name, data):
    obj = API[name]
    spec = catalog.valid_spec(name, obj)
    if not spec:
        return
    with catalog.new_context() as context:
        _hostile_argument_call(name, obj, spec, context, data)


def _hostile_argument_call(name, obj, spec, context, data):
    kwargs = catalog.arguments(spec, context)
    argument = data.draw(st.sampled_from(sorted(kwargs)), label="argument")
    bad = data.draw(st.sampled_from(catalog.hostile_values(kwargs[argument])), label="value")
    kwargs[argument] = bad
    # NaN in may give NaN out (as in NumPy); only NaN out of finite input is silent.
    catalog.check_case(
        f"{name}({argument}={bad!r:.60})".replace("\n", " "),
        lambda: catalog.exercise(name, obj, kwargs, context),
        argument=argument,
        finite_expected=catalog.is_finite(bad),
    )


@pytest.mark.parametrize("name", FUZZED)
@settings(max_examples=EXAMPLES, **SETTINGS)
@given(data=st.data())
def test_hostile_argument(name, data):
    _hostile_argument_case(name, data)


@pytest.mark.slow
@pytest.mark.parametrize("name", FUZZED)
@settings(max_examples=10 * EXAMPLES, **SETTINGS)
@given(data=st.data())
def test_hostile_argument_many(name, data):
    _hostile_argument_case(name, data)


# Input shapes: a batch of 0-3 and 0-3 more axes of 0-9 each.
SHAPES = st.tuples(st.integers(0, 3), st.lists(st.integers(0, 9), max_size=3))
DTYPES = st.sampled_from(["float32", "float64", "float16", "int32", "uint8", "bool"])
SPECIALS = st.sampled_from([None, np.nan, np.inf, -np.inf, 1e4])


def _hostile_input_case(name, data):
    obj = API[name]
    with catalog.new_context() as context:
        layer = catalog.construct(obj, catalog.arguments(catalog.valid_spec(name, obj), context))
    valid = catalog.layer_input(layer)
    if data.draw(st.booleans(), label="random shape"):
        batch, rest = data.draw(SHAPES, label="shape")
        shape = (batch, *rest)
        x = np.random.default_rng(0).uniform(-1, 1, shape)
        dtype = data.draw(DTYPES, label="dtype")
        special = data.draw(SPECIALS, label="special") if x.size else None
        if special is not None:
            x.reshape(-1)[data.draw(st.integers(0, x.size - 1), label="where")] = special
        x = x.astype(dtype)
        label = f"shape {shape} {dtype} with {special}"
    else:
        label, x = data.draw(st.sampled_from(catalog.hostile_inputs(valid)), label="input")
        special = None if x.dtype.kind not in "fc" or np.all(np.isfinite(x)) else np.nan
    training = data.draw(st.booleans(), label="training")
    result = catalog.check_case(
        f"{name} called on {label} (training={training})",
        lambda: catalog.call_layer(layer, x, training=training),
        argument="input",
        finite_expected=special is None,
    )
    if result is not None and x.ndim and x.shape[0] == 0:
        first = result[0] if isinstance(result, (list, tuple)) else result
        assert np.asarray(first).shape[0] == 0, f"{name}: an empty batch gave rows"


@pytest.mark.parametrize("name", LAYERS)
@settings(max_examples=2 * EXAMPLES, **SETTINGS)
@given(data=st.data())
def test_hostile_layer_input(name, data):
    _hostile_input_case(name, data)


@pytest.mark.slow
@pytest.mark.parametrize("name", LAYERS)
@settings(max_examples=20 * EXAMPLES, **SETTINGS)
@given(data=st.data())
def test_hostile_layer_input_many(name, data):
    _hostile_input_case(name, data)
