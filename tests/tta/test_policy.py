import json

import numpy as np
import pytest
import tensorflow as tf

from tfpriors.tta import Policy


def test_json_round_trip_and_builtins(tmp_path):
    policy = Policy(
        [[("rotate", 9), ("contrast", 5.5)], [("flip", 0), ("crop", 15), ("invert", 0)]]
    )
    path = tmp_path / "policy.json"
    policy.to_json(path)
    assert Policy.from_json(path) == policy
    assert json.loads(path.read_text())["subpolicies"][0][0] == {"op": "rotate", "magnitude": 9.0}
    for builtin in (Policy.identity(), Policy.flip(), Policy.flip_crop(), Policy.randaugment(2, 9)):
        builtin.to_json(path)
        assert Policy.from_json(path) == builtin
    assert len(Policy.randaugment(2, 9)) == 15 * 14
    assert "rotate(9)" in repr(policy)


def test_augment_cycles_subpolicies_and_identity_is_exact():
    images = tf.random.stateless_uniform((4, 8, 8, 1), seed=[1, 1])
    np.testing.assert_array_equal(Policy.identity().augment(images, draw=3), images)
    policy = Policy([[("invert", 0)], []])
    np.testing.assert_allclose(policy.augment(images, draw=0), 1 - images)
    np.testing.assert_array_equal(policy.augment(images, draw=1), images)
    np.testing.assert_allclose(policy.augment(images, draw=2), 1 - images)


@pytest.mark.parametrize(
    "data,match",
    [
        ({"format": "other", "version": 1, "subpolicies": [[]]}, "format"),
        ({"format": "tfpriors.tta.Policy", "version": 2, "subpolicies": [[]]}, "version"),
        ({"format": "tfpriors.tta.Policy", "version": 1}, "subpolicies"),
        ({"format": "tfpriors.tta.Policy", "version": 1, "subpolicies": []}, "subpolicies"),
        (
            {
                "format": "tfpriors.tta.Policy",
                "version": 1,
                "subpolicies": [[{"op": "blur", "magnitude": 3}]],
            },
            r"`subpolicies`\[0\]\[0\]\.op",
        ),
        (
            {
                "format": "tfpriors.tta.Policy",
                "version": 1,
                "subpolicies": [[{"op": "rotate", "magnitude": 40}]],
            },
            r"magnitude",
        ),
        (
            {"format": "tfpriors.tta.Policy", "version": 1, "subpolicies": [[{"op": "rotate"}]]},
            r"`subpolicies`\[0\]\[0\]",
        ),
        (
            {"format": "tfpriors.tta.Policy", "version": 1, "choice": "best", "subpolicies": [[]]},
            "choice",
        ),
        ({"format": "tfpriors.tta.Policy", "version": 1, "subpolicies": [[]], "extra": 1}, "extra"),
        ([1, 2], "JSON object"),
    ],
)
def test_malformed_policies_name_the_field(data, match, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=match):
        Policy.from_json(path)


def test_truncated_file_is_a_clear_error(tmp_path):
    path = tmp_path / "policy.json"
    Policy.flip_crop().to_json(path)
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match="not valid JSON"):
        Policy.from_json(path)


def test_randaugment_bad_n():
    with pytest.raises(ValueError, match="`n` must be"):
        Policy.randaugment(n=5)
