"""What the tests of bench/ share: loading a benchmark module and running its smoke path."""

import importlib.util
import json
import os
import subprocess
import sys

BENCH_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench")


def load_bench(name):
    """Imports ``bench/<name>.py`` as a module (bench/ on the path while it loads)."""
    sys.path.insert(0, BENCH_DIR)
    try:
        spec = importlib.util.spec_from_file_location(name, os.path.join(BENCH_DIR, f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(BENCH_DIR)
    return module


def run_quick(name, timeout=600):
    """Runs ``bench/<name>.py --quick`` in a subprocess; returns the JSON record it wrote."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    completed = subprocess.run(
        [sys.executable, os.path.join(BENCH_DIR, f"{name}.py"), "--quick"],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    with open(os.path.join(BENCH_DIR, "results", "quick", f"{name}.json")) as f:
        return json.load(f)
