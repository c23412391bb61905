"""A wheel built with `python -m build --wheel` carries the compiled op (slow: it installs
TensorFlow into the isolated build environment)."""

import os
import re
import subprocess
import sys
import zipfile

import pytest
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_wheel_contains_the_compiled_op_built_for_this_tensorflow(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "build>=1.2,<2"], check=True)
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    (wheel,) = [name for name in os.listdir(tmp_path) if name.endswith(".whl")]
    assert re.search(r"-linux_x86_64\.whl$|-manylinux", wheel)  # a platform wheel
    with zipfile.ZipFile(tmp_path / wheel) as archive:
        libraries = [name for name in archive.namelist() if name.endswith(".so")]
        assert libraries == ["tfpriors/ops/_perforated_conv.so"]
        data = archive.read(libraries[0])
    tag = re.search(rb"tfpriors-built-against-tensorflow=([^;]+);", data).group(1).decode()
    assert tag.split(".")[:2] == tf.__version__.split(".")[:2]
