"""The train-step benchmark's --quick smoke path (without its Keras 2 peer, a bench extra)."""

import json
import os
import subprocess
import sys

import pytest

import tfpriors

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.usefixtures("fused_op")
def test_train_step_quick_records_the_noise_op_and_the_references():
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", "train_step.py"), "--quick", "--skip-peer"],
        check=True,
        capture_output=True,
        env=environment,
        timeout=600,
    )
    with open(os.path.join(ROOT, "bench", "results", "quick", "train_step.json")) as handle:
        result = json.load(handle)
    noise = result["noise"]
    assert noise["noise_isa"] == tfpriors.ops.library.noise_isa()
    assert set(noise["median_ms_per_call"]) == {
        "tensorflow",
        "fused",
        "tensorflow_backward",
        "fused_backward",
    }
    assert noise["speedup"] > 0 and noise["goal"]["goal"] == "ratio >= 5"
    for case in ("mlp", "conv"):
        timed = result["cases"][case]["median_ms_per_step"]
        assert set(timed) == {
            "dense",
            "sparse_vd",
            "sparse_vd_tensorflow_noise",
            "bare_local_reparameterization",
            "two_gemm",
        }
        assert "two matmuls/convolutions alone" in result["cases"][case]["goal"]["note"]
    assert [goal["goal"] for goal in result["goals"]] == [
        "ratio >= 5",
        "ratio <= 2.05",
        "ratio <= 2.15",
    ]
