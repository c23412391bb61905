"""The PEP 517 build backend: setuptools, plus TensorFlow when a wheel is built.

A wheel carries the compiled op (``setup.py`` compiles it with the build
environment's TensorFlow headers), so building one needs the TensorFlow that
``pyproject.toml`` pins. Editable installs and sdists compile nothing and do
not download TensorFlow into their build environment.
"""

import re
from pathlib import Path

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F401,F403  (the standard hooks)


def _tensorflow_requirement():
    """The ``tensorflow`` range of ``[project] dependencies`` (one place for every range)."""
    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    match = re.search(r'^\s*"(tensorflow\s*[<>=!~][^"]*)"', text, re.MULTILINE)
    if match is None:
        raise RuntimeError("pyproject.toml does not list tensorflow among the dependencies")
    return match.group(1)


def get_requires_for_build_wheel(config_settings=None):
    return _setuptools.get_requires_for_build_wheel(config_settings) + [_tensorflow_requirement()]
