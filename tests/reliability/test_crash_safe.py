"""A training run killed with SIGKILL mid-epoch resumes to the same weights.

Each run is a subprocess (crash_worker.py) with deterministic ops: one
uninterrupted, one killed in the middle of its second epoch and restarted
with the same BackupAndRestore directory. The resumed run must end with the
uninterrupted run's weights exactly: weights, optimizer state and the
layers' noise seed state all come back from the checkpoint, and for the
SGLD run the PosteriorSampler's own state (counters, samples in memory and
on disk) comes back from its state file.
"""

import os
import signal
import subprocess
import sys

import numpy as np
import pytest

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "crash_worker.py")


def _run(model, backup_dir, out, kill_at=None):
    command = [sys.executable, WORKER, model, str(backup_dir), str(out)]
    if kill_at:
        command += ["--kill-at", *map(str, kill_at)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("model", ["sparse_vd", "sgld"])
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(model, tmp_path):
    straight = _run(model, tmp_path / "straight", tmp_path / "straight.npz")
    assert straight.returncode == 0, straight.stderr[-2000:]

    killed = _run(model, tmp_path / "backup", tmp_path / "resumed.npz", kill_at=(1, 3))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (tmp_path / "resumed.npz").exists()
    resumed = _run(model, tmp_path / "backup", tmp_path / "resumed.npz")
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    expected, actual = np.load(tmp_path / "straight.npz"), np.load(tmp_path / "resumed.npz")
    assert sorted(expected.files) == sorted(actual.files)
    for key in expected.files:
        np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)
