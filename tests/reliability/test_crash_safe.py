"""A training run killed with SIGKILL mid-epoch resumes to the same weights.

Each run is a subprocess (crash_worker.py) with deterministic ops: one
uninterrupted, one killed in the middle of its second epoch and restarted
with the same BackupAndRestore directory. The resumed run must start at the
second epoch (the last one the backup completed) and end with the
uninterrupted run's weights exactly: weights, optimizer state and the
layers' noise seed state all come back from the checkpoint, and for the
SGLD run the PosteriorSampler's own state (counters, samples in memory and
on disk) comes back from its state file.

The restarted process gets another global seed than the first two, so that
it can only match by resuming: a control run with that seed and an empty
backup folder (a restart that restores nothing) must end elsewhere.
"""

import os
import signal
import subprocess
import sys

import numpy as np
import pytest

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "crash_worker.py")
EPOCHS = 3  # crash_worker.EPOCHS
RECORDS = ("first_epoch", "epochs_trained")


def _run(model, backup_dir, out, seed=0, kill_at=None):
    command = [sys.executable, WORKER, model, str(backup_dir), str(out), "--seed", str(seed)]
    if kill_at:
        command += ["--kill-at", *map(str, kill_at)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def _load(path):
    arrays = dict(np.load(path))
    return {key: arrays.pop(key).item() for key in RECORDS}, arrays


@pytest.mark.parametrize("model", ["sparse_vd", "sgld"])
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(model, tmp_path):
    straight = _run(model, tmp_path / "straight", tmp_path / "straight.npz")
    assert straight.returncode == 0, straight.stderr[-2000:]

    killed = _run(model, tmp_path / "backup", tmp_path / "resumed.npz", kill_at=(1, 3))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (tmp_path / "resumed.npz").exists()
    resumed = _run(model, tmp_path / "backup", tmp_path / "resumed.npz", seed=1)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    # A restart that restores nothing, with the resumed process's seed.
    restart = _run(model, tmp_path / "empty", tmp_path / "restart.npz", seed=1)
    assert restart.returncode == 0, restart.stderr[-2000:]

    straight_log, expected = _load(tmp_path / "straight.npz")
    resumed_log, actual = _load(tmp_path / "resumed.npz")
    restart_log, from_scratch = _load(tmp_path / "restart.npz")
    assert straight_log == restart_log == {"first_epoch": 0, "epochs_trained": EPOCHS}
    # Killed in epoch 1, after the backup of epoch 0: the restart resumes at epoch 1.
    assert resumed_log == {"first_epoch": 1, "epochs_trained": EPOCHS - 1}

    assert sorted(expected) == sorted(actual) == sorted(from_scratch)
    for key in expected:
        np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)
    # The comparison has power: training from scratch in the restarted process ends elsewhere.
    assert any(not np.array_equal(from_scratch[key], expected[key]) for key in expected)
