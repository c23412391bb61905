"""The --quick smoke path of the benchmarks that have no test file of their own.

Each run trains and times for real on small settings (minutes), so these are
``slow`` tests: ``make test-slow`` runs them, ``make test`` does not. The
record must be complete enough for ``bench/run_all.py`` to render.
"""

import math

import pytest
from bench_support import load_bench, run_quick

# distill, dwp, hyper, tta and train_step run theirs in tests/test_bench_<name>.py.
BENCHMARKS = ("compression", "export_tflite", "structured", "adaptive", "perforation")


def _compression_pairs_every_seed_with_tfmot_picks(result):
    for net, entry in result["nets"].items():
        for row in entry["per_seed"]:
            assert row["tfmot"]["chosen"]["compression"] >= 1.0, (net, row["seed"])
            # The Keras 2 worker saw the same dense weights as the Keras 3 side.
            assert row["tfmot"]["dense_error_keras2"] == pytest.approx(row["dense_error"])


CHECKS = {"compression": _compression_pairs_every_seed_with_tfmot_picks}


@pytest.mark.slow
@pytest.mark.parametrize("name", BENCHMARKS)
def test_quick_run_writes_a_record_run_all_renders(name):
    result = run_quick(name, timeout=1800)
    assert result["benchmark"] == name and result["quick"] is True
    assert len(result["machine"]["code"]["commit"]) == 40
    assert result["goals"], "a benchmark states its goals"
    for goal in result["goals"]:
        assert math.isfinite(goal["ratio"]) and goal["ratio"] > 0, goal["name"]
        assert isinstance(goal["met"], bool), goal["name"]
        assert goal["goal_op"] in ("<=", ">="), goal["name"]
    section = "\n".join(load_bench("run_all").section_renderer(name)(result))
    assert section.strip()
    CHECKS.get(name, lambda result: None)(result)
