import numpy as np
import pytest

from tfpriors import calibration
from tfpriors.tta import GreedyPolicySearch, Policy, TTAPredictor


@pytest.fixture(scope="module")
def trained(trained_cnn):
    model, _, _, x_test, y_test = trained_cnn
    return model, x_test[:80], y_test[:80]


def _search(length=3, seed=0):
    return GreedyPolicySearch(
        pool_size=6,
        policy_length=length,
        ops_per_subpolicy=(2, 3),
        magnitude_bound=6,
        calibration_splits=2,
        seed=seed,
    )


def test_greedy_choice_and_determinism(trained):
    model, x, y = trained
    search = _search()
    policy = search.fit([model], x, y, verbose=0)
    pool = search.sample_pool()
    assert len(policy) == 3
    assert all(
        list(sub) in [[(n, float(m)) for n, m in p] for p in pool] for sub in policy.subpolicies
    )
    assert all(2 <= len(sub) <= 3 for sub in policy.subpolicies)
    # The first pick is the sub-policy that is best on its own.
    alone = [
        calibration.calibrated_nll(
            TTAPredictor(model, Policy([sub]), num_samples=1, seed=i).predict_log(x),
            y,
            splits=2,
            seed=0,
        )
        for i, sub in enumerate(pool)
    ]
    assert policy.subpolicies[0] == tuple((n, float(m)) for n, m in pool[int(np.argmin(alone))])
    assert search.history[0] == pytest.approx(min(alone), rel=1e-5)
    assert _search().fit([model], x, y, verbose=0) == policy


def test_resume_from_state_gives_the_same_policy(trained, tmp_path):
    model, x, y = trained
    state = tmp_path / "gps_state.npz"
    _search(length=2).fit([model], x, y, state_path=str(state), verbose=0)
    resumed = _search(length=3).fit([model], x, y, state_path=str(state), verbose=0)
    assert resumed == _search(length=3).fit([model], x, y, verbose=0)
    with pytest.raises(ValueError, match="another pool"):
        _search(length=3, seed=5).fit([model], x, y, state_path=str(state), verbose=0)
    state.write_bytes(state.read_bytes()[:100])
    with pytest.raises(ValueError, match="state_path"):
        _search(length=3).fit([model], x, y, state_path=str(state), verbose=0)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"pool_size": 0}, "pool_size"),
        ({"policy_length": -1}, "policy_length"),
        ({"ops_per_subpolicy": (3, 2)}, "ops_per_subpolicy"),
        ({"ops_per_subpolicy": 2}, "ops_per_subpolicy"),
        ({"magnitude_bound": 40}, "magnitude_bound"),
        ({"ops": ["blur"]}, "blur"),
        ({"ops": ["flip"], "ops_per_subpolicy": (2, 2)}, "ops_per_subpolicy"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        GreedyPolicySearch(**kwargs)
