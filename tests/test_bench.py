"""bench/run_all.py's records: commit, tree, machine, and stale figures marked as such."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

BENCH_DIR = os.path.join(os.path.dirname(__file__), "..", "bench")


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(BENCH_DIR, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def run_all():
    return _load("run_all")


def _git(repo, *args):
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def _write(repo, path, text):
    full = os.path.join(repo, path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "w") as f:
        f.write(text)


@pytest.fixture
def repo(tmp_path):
    """A repository with tfpriors/, two benchmarks and a worker, one commit."""
    root = str(tmp_path / "repo")
    os.makedirs(root)
    _git(root, "init", "-q")
    _write(root, "tfpriors/core.py", "x = 1\n")
    _write(root, "bench/_common.py", "")
    _write(root, "bench/alpha.py", "import _common\n")
    # beta starts a worker: the worker's changes must count as beta's own.
    _write(root, "bench/beta.py", 'run_keras2_worker("_beta_worker.py", job)\n')
    _write(root, "bench/_beta_worker.py", "y = 1\n")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "first")
    return root


def _record(name, commit, dirty=False, dirty_paths=()):
    return {
        "benchmark": name,
        "title": name,
        "timestamp": "2026-01-01T00:00:00+00:00",
        "seconds": 90.0,
        "machine": {
            "cpu": "Test CPU",
            "cores": 2,
            "platform": "Linux",
            "isa": {"simd": ["sse4_2", "avx", "avx2", "fma", "avx512f"], "flags": []},
            "versions": {"python": "3.11", "tensorflow": "2", "keras": "3", "numpy": "2"},
            "load_average_start": [0.5, 0.5, 0.5],
            "load_average_end": [1.5, 1.0, 0.5],
            "code": {"commit": commit, "dirty": dirty, "dirty_paths": list(dirty_paths)},
        },
        "goals": [
            {
                "name": f"{name} goal",
                "measured": 2.0,
                "unit": "x",
                "baseline_name": "base",
                "baseline": 1.0,
                "ratio": 2.0,
                "goal": "ratio >= 1",
                "goal_value": 1.0,
                "met": True,
                "note": "",
            }
        ],
    }


def _rows(text, heading):
    """The table rows under ``## heading`` as lists of cells, keyed by their first cell."""
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip("|").split("|") for line in section.splitlines() if line.startswith("| ")]
    return {cells[0].strip(): [c.strip() for c in cells] for cells in rows[1:]}


def test_results_md_marks_changed_code_stale(run_all, repo, tmp_path):
    first = _git(repo, "rev-parse", "HEAD")
    _write(repo, "bench/_beta_worker.py", "y = 2\n")
    _git(repo, "commit", "-q", "-am", "beta's worker changes")
    results = tmp_path / "results"
    results.mkdir()
    for name in ("alpha", "beta"):
        (results / f"{name}.json").write_text(json.dumps(_record(name, first)))

    text = run_all.render(str(results), repo=repo)

    records = _rows(text, "Records")
    assert records["alpha"][-1] == "current"
    assert records["beta"][-1] == "**stale**"
    assert records["alpha"][1] == first[:12]
    assert records["alpha"][2] == "clean"
    assert records["alpha"][4] == "SSE4.2, AVX2+FMA, AVX-512 F"
    assert records["alpha"][5] == "0.5/0.5/0.5 -> 1.5/1.0/0.5"
    assert f"- beta: changed since {first[:12]}: bench/_beta_worker.py." in text
    assert "- alpha:" not in text
    goals = _rows(text, "Goals")
    assert goals["alpha goal"][-1] == "current"
    assert goals["beta goal"][-1] == "**stale**"
    assert "Total time of the" in text


def test_dirty_tree_and_uncommitted_changes_are_stale(run_all, repo):
    head = _git(repo, "rev-parse", "HEAD")
    dirty = _record("alpha", head, dirty=True, dirty_paths=["tfpriors/core.py"])
    assert run_all.staleness(dirty, repo) == ["measured on a dirty tree (tfpriors/ (1 file))"]
    clean = _record("alpha", head)
    assert run_all.staleness(clean, repo) == []
    # Edits not yet committed count too: the figures no longer match this tree.
    _write(repo, "tfpriors/new_module.py", "z = 1\n")
    assert run_all.staleness(clean, repo) == [f"changed since {head[:12]}: tfpriors/ (1 file)"]
    assert run_all.staleness(_record("alpha", None), repo) == ["commit unknown"]
    unknown = _record("alpha", "0" * 40)
    assert run_all.staleness(unknown, repo) == ["commit 000000000000 is not in this repository"]


def test_code_state_lists_dirty_code_but_not_results(repo):
    sys.path.insert(0, BENCH_DIR)
    try:
        common = _load("_common")
    finally:
        sys.path.remove(BENCH_DIR)
    state = common.code_state(repo)
    assert state["dirty"] is False and state["dirty_paths"] == []
    _write(repo, "bench/results/alpha.json", "{}")
    _write(repo, "bench/RESULTS.md", "# results\n")
    assert common.code_state(repo)["dirty"] is False
    _write(repo, "bench/alpha.py", "import _common  # edited\n")
    _write(repo, "custom_ops/kernel.cc", "")
    state = common.code_state(repo)
    assert state["dirty"] is True
    assert state["dirty_paths"] == ["bench/alpha.py", "custom_ops/kernel.cc"]
    assert state["commit"] == _git(repo, "rev-parse", "HEAD")


def test_benchmark_sources_follow_imports_and_workers(run_all):
    sources = run_all.benchmark_sources("export_tflite")
    for path in (
        "tfpriors",
        "custom_ops",
        "bench/_common.py",
        "bench/export_tflite.py",
        "bench/compression.py",
        "bench/_tfmot_worker.py",
        "bench/_tfmot_export_worker.py",
    ):
        assert path in sources
    assert "bench/_report_distill.py" in run_all.benchmark_sources("distill")


def test_tfmot_per_layer_targets_follow_sparse_vd_pattern():
    sys.path.insert(0, BENCH_DIR)
    try:
        compression = _load("compression")
    finally:
        sys.path.remove(BENCH_DIR)
    # Sparse VD kept 10% of a small layer and 1% of a large one: 1,090 of 100,100 weights.
    layers = [{"weights": 100, "nonzero": 10}, {"weights": 100_000, "nonzero": 1_000}]
    total = 100_100
    for compression_wanted in (20.0, 50.0, 91.0):
        sparsities = compression.per_layer_sparsities(layers, compression_wanted)
        kept = sum(layer["weights"] * (1 - s) for layer, s in zip(layers, sparsities))
        assert total / kept == pytest.approx(compression_wanted, rel=1e-3)
        # The layer Sparse VD pruned less keeps ten times the density of the other.
        assert (1 - sparsities[0]) == pytest.approx(10 * (1 - sparsities[1]), rel=1e-3)
    # Past what the pattern allows at full density, a layer is capped at keeping everything.
    capped = compression.per_layer_sparsities(layers, 5.0)
    assert capped[0] == 0.0 and 0.0 < capped[1] < 1.0
    # No pruning needed for 1x.
    assert compression.per_layer_sparsities(layers, 1.0) == [0.0, 0.0]


def test_tfmot_plan_and_per_sweep_picks():
    sys.path.insert(0, BENCH_DIR)
    try:
        compression = _load("compression")
    finally:
        sys.path.remove(BENCH_DIR)
    settings = compression.QUICK
    layers = [{"weights": 100, "nonzero": 10}, {"weights": 100_000, "nonzero": 1_000}]
    row = {
        "budget": 0.06,
        "sparse_vd": {"compression": 91.8, "test_error": 0.08, "report": {"layers": layers}},
    }
    plan = compression.tfmot_sweeps(settings, row)
    # Both error levels the picks are made at, and the stronger per-layer sweep first.
    assert plan["levels"] == [0.06, 0.08]
    assert [sweep["scheme"] for sweep in plan["sweeps"]] == ["per_layer", "global"]
    targets = [run["target_compression"] for run in plan["sweeps"][0]["runs"]]
    assert targets == pytest.approx([91.8 * f for f in sorted(settings.per_layer_fractions)])
    # A sweep whose runs within reach were skipped has no measured pick; one whose
    # runs all ran and missed falls back to the dense net.
    sweep = [
        {
            "scheme": "global",
            "label": "a",
            "target_compression": 100.0,
            "test_error": 0.2,
            "compression": 100.0,
        },
        {"scheme": "global", "label": "b", "target_compression": 10.0, "skipped": "..."},
        {
            "scheme": "per_layer",
            "label": "c",
            "target_compression": 50.0,
            "test_error": 0.05,
            "compression": 49.0,
        },
    ]
    assert compression.scheme_best(sweep, "global", 0.06, 0.05)["compression"] is None
    assert compression.scheme_best(sweep, "per_layer", 0.06, 0.05)["compression"] == 49.0
    assert compression.scheme_best(sweep[:1], "global", 0.06, 0.05)["compression"] == 1.0
