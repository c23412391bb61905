import os
import subprocess
import sys


def test_other_keras_backend_is_refused_with_a_clear_message():
    env = dict(os.environ, KERAS_BACKEND="jax")
    result = subprocess.run(
        [sys.executable, "-c", "import tfpriors"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "KERAS_BACKEND=tensorflow" in result.stderr
