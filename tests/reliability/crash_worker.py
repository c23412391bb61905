"""Trains a small model with BackupAndRestore; optionally SIGKILLs itself mid-epoch.

Run by test_crash_safe.py in a subprocess:

    python crash_worker.py MODEL BACKUP_DIR OUT.npz [--seed SEED] [--kill-at EPOCH BATCH]

MODEL names a builder in BUILDERS. SEED (default 0) seeds everything the
checkpoint does not hold: the initial weights come from it, so a process that
trains from scratch with another seed ends elsewhere, while one that resumes
from BACKUP_DIR ends where the interrupted run would have. The final weights
(and, for models that have one, their sampler state) go to OUT.npz, with
`first_epoch` (the epoch this process started training at) and
`epochs_trained` (how many epochs it ran).
"""

import argparse
import os
import signal
import sys

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfpriors  # noqa: E402

EPOCHS, BATCH, EXAMPLES = 3, 32, 256


def sparse_vd():
    model = keras.Sequential(
        [
            keras.Input((64,)),
            tfpriors.layers.SparseVDDense(32, activation="relu", seed=1),
            tfpriors.layers.SparseVDDense(10, seed=2),
        ]
    )
    tfpriors.set_dataset_size(model, EXAMPLES)
    model.compile(
        keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    return model, []


def sgld(backup_dir):
    model = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(10)]
    )
    model.compile(
        tfpriors.distill.SGLD(1e-4, dataset_size=EXAMPLES, seed=3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    # Beside the backup folder, not in it: BackupAndRestore deletes its folder
    # when training ends. Small thinning and memory: samples are kept, spilled to disk and dropped
    # in every epoch, so the killed epoch leaves real files behind.
    sampler = tfpriors.distill.PosteriorSampler(
        burn_in_epochs=1,
        thin=3,
        max_samples=3,
        in_memory=1,
        directory=os.path.join(backup_dir + "_sampler", "samples"),
        state_path=os.path.join(backup_dir + "_sampler", "state.npz"),
    )

    def state_arrays():
        arrays = {"samples_seen": np.array(sampler.next_index)}
        for i, sample in enumerate(sampler.samples()):
            arrays.update({f"sample{i}_{j}": w for j, w in enumerate(sample)})
        return arrays

    sampler.state_arrays = state_arrays
    return model, [sampler]


BUILDERS = {"sparse_vd": lambda backup_dir: sparse_vd(), "sgld": sgld}


class KillAt(keras.callbacks.Callback):
    """SIGKILL (no clean-up, no flush) at a given batch of a given epoch."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.epoch, self.batch, self.current = epoch, batch, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.current == self.epoch and batch == self.batch:
            os.kill(os.getpid(), signal.SIGKILL)


class EpochRecorder(keras.callbacks.Callback):
    """Records the epochs this process trains (after BackupAndRestore has loaded)."""

    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model", choices=sorted(BUILDERS))
    parser.add_argument("backup_dir")
    parser.add_argument("out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kill-at", nargs=2, type=int, metavar=("EPOCH", "BATCH"))
    args = parser.parse_args()

    tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(args.seed)
    (x, y), _ = tfpriors.datasets.load_digits()
    x, y = x[:EXAMPLES], y[:EXAMPLES]
    model, extra_callbacks = BUILDERS[args.model](args.backup_dir)
    model.build((None, 64))
    recorder = EpochRecorder()
    callbacks = [keras.callbacks.BackupAndRestore(args.backup_dir), recorder] + extra_callbacks
    if args.kill_at:
        callbacks.append(KillAt(*args.kill_at))
    model.fit(x, y, epochs=EPOCHS, batch_size=BATCH, shuffle=False, verbose=0, callbacks=callbacks)
    arrays = {f"w{i}": w for i, w in enumerate(model.get_weights())}
    arrays["first_epoch"] = np.array(recorder.epochs[0] if recorder.epochs else EPOCHS)
    arrays["epochs_trained"] = np.array(len(recorder.epochs))
    for callback in extra_callbacks:
        arrays.update(getattr(callback, "state_arrays", lambda: {})())
    np.savez(args.out, **arrays)


if __name__ == "__main__":
    sys.exit(main())
