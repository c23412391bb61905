"""Helpers shared by the benchmarks: timing, medians, machine info, JSON files.

This module imports neither TensorFlow nor Keras, so the Keras 2 workers
(started with TF_USE_LEGACY_KERAS=1) can use it too.
"""

import datetime
import functools
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
RESULTS_DIR = os.path.join(BENCH_DIR, "results")
# Quick smoke runs must never overwrite the figures of a full run.
QUICK_RESULTS_DIR = os.path.join(RESULTS_DIR, "quick")

_VERSIONED = (
    "tensorflow",
    "keras",
    "tf_keras",
    "tensorflow-probability",
    "tensorflow-model-optimization",
    "numpy",
    "scikit-learn",
)


def median(values):
    return float(statistics.median(values))


@functools.cache
def hold_then_decay_class(schedule_class):
    """A learning-rate schedule: constant, then linear decay to 0 over the last ``decay_steps``.

    ``schedule_class`` is the framework's ``LearningRateSchedule`` (Keras 3's, or
    tf_keras' in the Keras 2 workers), so both sides of a benchmark fine-tune with
    the same schedule. Returns the class; its arguments are ``learning_rate``,
    ``total_steps`` and ``decay_steps``.
    """
    import tensorflow as tf

    class HoldThenDecay(schedule_class):
        def __init__(self, learning_rate, total_steps, decay_steps):
            self.learning_rate = learning_rate
            self.total_steps = total_steps
            self.decay_steps = decay_steps

        def __call__(self, step):
            remaining = (self.total_steps - tf.cast(step, "float32")) / self.decay_steps
            return self.learning_rate * tf.clip_by_value(remaining, 0.0, 1.0)

        def get_config(self):
            return {
                "learning_rate": self.learning_rate,
                "total_steps": self.total_steps,
                "decay_steps": self.decay_steps,
            }

    return HoldThenDecay


def doc_body(doc):
    """A benchmark's docstring without its title line and its usage paragraph (Markdown)."""
    paragraphs = doc.strip().split("\n\n")[1:]
    if paragraphs and paragraphs[-1].lstrip().startswith("python "):
        paragraphs = paragraphs[:-1]
    return "\n\n".join(paragraphs)


def results_dir(quick):
    return QUICK_RESULTS_DIR if quick else RESULTS_DIR


# What a benchmark process saw when it started (every benchmark imports this
# module first): the load average at the end alone would hide a busy start.
_START_LOAD_AVERAGE = list(os.getloadavg())

# The SIMD extensions that decide which kernels TensorFlow and oneDNN run, in
# the order of /proc/cpuinfo's names; the full flag list is recorded too.
SIMD_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "avx_vnni",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)

# Paths whose uncommitted changes make a figure unreproducible from its
# commit. Results and the generated report are outputs, not inputs.
CODE_PATHS = ("tfpriors", "custom_ops", "bench")
OUTPUT_PATHS = ("bench/results", "bench/RESULTS.md")


def _cpuinfo_field(name):
    """The first value of field ``name`` in /proc/cpuinfo, or None off Linux."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == name:
                    return value.strip()
    except OSError:
        pass
    return None


def cpu_model():
    return _cpuinfo_field("model name") or platform.processor() or "unknown"


def cpu_flags():
    """The CPU's feature flags from /proc/cpuinfo (an empty list where there is none)."""
    flags = _cpuinfo_field("flags")
    return flags.split() if flags else []


def isa_info():
    """The SIMD flags that matter for kernels (``simd``) and every flag (``flags``)."""
    flags = cpu_flags()
    present = set(flags)
    return {"simd": [f for f in SIMD_FLAGS if f in present], "flags": flags}


def isa_summary(simd):
    """A short reading of a ``simd`` flag list, e.g. ``AVX2+FMA, AVX-512 F/BW/VL/VNNI``."""
    if simd is None:
        return "unknown"
    present = set(simd)
    parts = []
    if "sse4_2" in present:
        parts.append("SSE4.2")
    if "avx2" in present:
        parts.append("AVX2+FMA" if "fma" in present else "AVX2")
    elif "avx" in present:
        parts.append("AVX")
    avx512 = [
        label
        for flag, label in (
            ("avx512f", "F"),
            ("avx512bw", "BW"),
            ("avx512vl", "VL"),
            ("avx512_vnni", "VNNI"),
            ("avx512_bf16", "BF16"),
            ("avx512_fp16", "FP16"),
        )
        if flag in present
    ]
    if avx512:
        parts.append("AVX-512 " + "/".join(avx512))
    amx = [label for flag, label in (("amx_bf16", "BF16"), ("amx_int8", "INT8")) if flag in present]
    if "amx_tile" in present:
        parts.append("AMX" + (" " + "/".join(amx) if amx else ""))
    return ", ".join(parts) or "no SSE4.2"


def usable_cores():
    # The affinity mask is what TensorFlow's thread pools will actually get
    # inside a container; os.cpu_count() reports the host.
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count()


def versions():
    found = {}
    for name in _VERSIONED:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    found["python"] = platform.python_version()
    return found


def _git(repo, *args):
    """``git args`` in ``repo``; its stdout, or None when git or the repository is missing."""
    try:
        return subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None


def code_state(repo=None):
    """The commit measured and the uncommitted changes that could colour its figures.

    ``dirty_paths`` lists every modified, staged, deleted or untracked (not
    ignored) file under ``tfpriors/``, ``custom_ops/`` and ``bench/``, the
    benchmark results themselves excepted; ``dirty`` is whether there is any.
    Both are None when git cannot answer.

    Args:
        repo: the repository root; the one holding ``bench/`` by default.

    Returns:
        A dict with ``commit``, ``dirty``, ``dirty_paths`` and, for older
        readers, ``tfpriors_uncommitted_changes``.
    """
    repo = repo or os.path.dirname(BENCH_DIR)
    commit = _git(repo, "rev-parse", "HEAD")
    status = _git(
        repo,
        "status",
        "--porcelain",
        "--untracked-files=all",
        "--",
        *CODE_PATHS,
        *(f":(exclude){path}" for path in OUTPUT_PATHS),
    )
    dirty_paths = None
    if status is not None:
        # Porcelain lines are "XY path" or "XY old -> new" (renames).
        dirty_paths = sorted({line[3:].split(" -> ")[-1] for line in status.splitlines() if line})
    return {
        "commit": commit.strip() if commit else None,
        "dirty": None if dirty_paths is None else bool(dirty_paths),
        "dirty_paths": dirty_paths,
        "tfpriors_uncommitted_changes": None
        if dirty_paths is None
        else any(path.startswith("tfpriors/") for path in dirty_paths),
    }


def merge_code_states(start, end):
    """One record of a run during which the tree may have changed: dirty if either was."""
    merged = dict(start)
    if end.get("commit") != start.get("commit"):
        merged["commit_at_end"] = end.get("commit")
    if start.get("dirty_paths") is None or end.get("dirty_paths") is None:
        return merged
    merged["dirty_paths"] = sorted(set(start["dirty_paths"]) | set(end["dirty_paths"]))
    merged["dirty"] = bool(merged["dirty_paths"])
    merged["tfpriors_uncommitted_changes"] = any(
        path.startswith("tfpriors/") for path in merged["dirty_paths"]
    )
    return merged


def machine_info():
    """The machine, the software and the code state of this run, for a result's JSON.

    ``load_average_start`` is the load when this process imported
    ``_common`` (the benchmark's start), ``load_average_end`` the load now;
    :func:`save_result` refreshes the end figures when the result is written.
    """
    load = list(os.getloadavg())
    return {
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "platform": platform.platform(),
        "isa": isa_info(),
        "versions": versions(),
        "load_average": load,
        "load_average_start": list(_START_LOAD_AVERAGE),
        "load_average_end": load,
        "code": code_state(),
    }


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _usual_permissions(path):
    # mkstemp creates files readable by their owner only; results are for everyone.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def write_json(path, payload):
    """Writes ``payload`` as JSON so that readers never see a half-written file."""
    write_text(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")


def result_header(name, title, doc, quick):
    """The fields every benchmark's JSON starts with."""
    return {
        "benchmark": name,
        "title": title,
        "description": doc_body(doc),
        "command": "make bench",
        "quick": quick,
        "timestamp": now_iso(),
        "machine": machine_info(),
    }


def finish_record(payload):
    """Stamps the end of a run on ``payload["machine"]``: load average and code state now."""
    machine = payload.get("machine")
    if machine is None:
        return payload
    machine["load_average_end"] = list(os.getloadavg())
    machine.setdefault("load_average_start", list(_START_LOAD_AVERAGE))
    machine["code"] = merge_code_states(machine.get("code", {}), code_state())
    return payload


def save_result(name, quick, payload):
    """Writes a benchmark's payload to results/<name>.json (results/quick/ for --quick)."""
    path = os.path.join(results_dir(quick), f"{name}.json")
    write_json(path, finish_record(payload))
    print(f"[{name}] wrote {path} ({payload['seconds']:.0f} s)", flush=True)
    return path


def write_text(path, text):
    """Writes ``text`` atomically: readers see the old file or the new one, never half."""
    write_bytes(path, text.encode("utf-8"))


def write_bytes(path, data):
    """Writes ``data`` atomically (this module runs where tfpriors may not import)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _usual_permissions(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def table(header, rows):
    """A Markdown table: a header row, the separator, then one line per row."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def read_json(path):
    """Reads a results or job file; a truncated or corrupted one gives one clear error."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(
            f"{path} is not a complete JSON file ({error}); delete it and rerun its benchmark."
        ) from None


def error_rate(model, x, y, batch_size=512):
    """Test error of a classifier's arg-max (Keras 2 or 3: only ``predict`` is called)."""
    import numpy as np

    # predict runs the inference path: posterior means, pruned weights zeroed.
    logits = model.predict(x, batch_size=batch_size, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) != y))


def litert_latencies(interpreters, example, rounds, invokes):
    """Median ms per invoke of each LiteRT interpreter, ``rounds`` interleaved rounds.

    Returns ``{name: [median ms of each round]}``; the files alternate inside
    every round, so a slow phase of the machine hits them alike.
    """
    from tfpriors_mobile import median_latency_ms

    per_file = {name: [] for name in interpreters}
    for _ in range(rounds):
        for name, interpreter in interpreters.items():
            per_file[name].append(median_latency_ms(interpreter, example, repeats=invokes))
    return per_file


def time_interleaved(candidates, repeats, warmup=1):
    """Times each zero-argument callable ``repeats`` times; returns seconds per call.

    A callable may return the seconds it measured itself (see
    :func:`fit_runner`); otherwise its wall time counts. The candidates
    alternate inside every repeat, so a slow phase of the machine (another
    process, frequency scaling) hits all of them alike and cancels out of
    their ratios.

    Returns ``{name: [seconds, ...]}``.
    """
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            start = time.perf_counter()
            measured = fn()
            times[name].append(time.perf_counter() - start if measured is None else measured)
    return times


def fit_runner(model, dataset, steps, callback_base, skip_steps=5):
    """A callable that runs ``model.fit`` and returns the seconds of ``steps`` train steps.

    ``fit`` is how users train, so its per-step overhead belongs in the
    figure. The clock runs from the end of the ``skip_steps``-th batch to the
    end of the last one: on this machine ``fit`` sometimes stalls for 0.1-1 s
    after its last batch, snapping whole-call times to ~0.3, 0.6, 1.3, 2.5 s,
    which would swamp the differences being measured. ``dataset`` should
    repeat one in-memory batch so that no input pipeline cost hides the step.
    ``callback_base`` is ``keras.callbacks.Callback`` of the Keras that built
    ``model`` (Keras 3, or tf_keras in the Keras 2 workers).
    """

    class Clock(callback_base):
        def on_train_batch_end(self, batch, logs=None):
            if batch == skip_steps - 1:
                self.start = time.perf_counter()
            elif batch == skip_steps + steps - 1:
                self.stop = time.perf_counter()

    def run():
        clock = Clock()
        model.fit(
            dataset,
            steps_per_epoch=skip_steps + steps,
            epochs=1,
            verbose=0,
            shuffle=False,
            callbacks=[clock],
        )
        return clock.stop - clock.start

    return run


def ms_per_step(seconds, steps):
    return [1000.0 * s / steps for s in seconds]


def goal_row(
    name, measured, unit, baseline_name, baseline, goal_op, goal_value, condition=True, note=""
):
    """One line of a benchmark's verdict: a figure, its baseline, ratio and goal.

    The goal is met when ``ratio goal_op goal_value`` holds ("<=" or ">=")
    and ``condition`` (a side requirement such as an error budget) is true.
    """
    ratio = measured / baseline if baseline else float("inf")
    ratio_ok = ratio <= goal_value if goal_op == "<=" else ratio >= goal_value
    return {
        "name": name,
        "measured": measured,
        "unit": unit,
        "baseline_name": baseline_name,
        "baseline": baseline,
        "ratio": ratio,
        "goal": f"ratio {goal_op} {goal_value:g}",
        "goal_op": goal_op,
        "goal_value": goal_value,
        "met": bool(ratio_ok and condition),
        "note": note,
    }


def keras2_env():
    """Environment of a Keras 2 child: tf.keras is tf_keras there (TFMOT, TFP layers)."""
    env = dict(os.environ)
    env["TF_USE_LEGACY_KERAS"] = "1"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def run_keras2_worker(script, job, label, arrays=None):
    """Runs ``bench/<script>`` under Keras 2 on ``job`` (a dict) and returns its JSON reply.

    ``arrays`` (a dict of NumPy arrays) travel in an .npz file whose path the
    worker finds in ``job["arrays"]``. The worker's stderr (its progress bar)
    passes through; the reply comes back through a file because TensorFlow
    writes freely to both streams.
    """
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="tfpriors-bench-") as tmp:
        job = dict(job)
        if arrays is not None:
            job["arrays"] = os.path.join(tmp, "arrays.npz")
            np.savez(job["arrays"], **arrays)
        job_path = os.path.join(tmp, "job.json")
        reply_path = os.path.join(tmp, "reply.json")
        write_json(job_path, job)
        print(f"[{label}] starting a Keras 2 subprocess ({script})", flush=True)
        start = time.perf_counter()
        completed = subprocess.run(
            [sys.executable, os.path.join(BENCH_DIR, script), job_path, reply_path],
            env=keras2_env(),
            stdout=subprocess.DEVNULL,
        )
        if completed.returncode != 0:
            raise RuntimeError(
                f"{script} failed with exit status {completed.returncode}; "
                "its error is printed above."
            )
        print(
            f"[{label}] Keras 2 subprocess done in {time.perf_counter() - start:.0f} s", flush=True
        )
        return read_json(reply_path)


def net_arrays(net, data=None, seed=None, weights=None):
    """Arrays of one net for the Keras 2 worker, keyed by net (and seed).

    ``data`` is ``((x_train, y_train), (x_test, y_test))``; ``weights`` (a list,
    as ``get_weights`` returns it) are stored under ``seed``. The worker reads
    them back with :func:`net_data` and :func:`net_weights`.
    """
    import numpy as np

    arrays = {}
    if data is not None:
        (x_train, y_train), (x_test, y_test) = data
        arrays.update(
            {
                f"{net}/x_train": x_train,
                f"{net}/y_train": y_train,
                f"{net}/x_test": x_test,
                f"{net}/y_test": y_test,
            }
        )
    if weights is not None:
        arrays[f"{net}/seed{seed}/count"] = np.array(len(weights))
        arrays.update({f"{net}/seed{seed}/w{i}": w for i, w in enumerate(weights)})
    return arrays


def net_data(arrays, net):
    """``((x_train, y_train), (x_test, y_test))`` of ``net`` from :func:`net_arrays`' arrays."""
    return (
        (arrays[f"{net}/x_train"], arrays[f"{net}/y_train"]),
        (arrays[f"{net}/x_test"], arrays[f"{net}/y_test"]),
    )


def net_weights(arrays, net, seed):
    """The weights list of ``net`` and ``seed`` from :func:`net_arrays`' arrays."""
    count = int(arrays[f"{net}/seed{seed}/count"])
    return [arrays[f"{net}/seed{seed}/w{i}"] for i in range(count)]
