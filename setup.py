"""Packaging hook: a wheel contains the compiled op (custom_ops/build.py), built against
the build environment's TensorFlow; the metadata lives in pyproject.toml."""

import os
import sys

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

HERE = os.path.dirname(os.path.abspath(__file__))


class BuildWithOp(build_py):
    """build_py, then the op compiled into the build tree (when TensorFlow is importable)."""

    def run(self):
        super().run()
        if self.editable_mode:
            return
        try:
            import tensorflow  # noqa: F401
        except ImportError:
            print(
                "tensorflow is not importable: building a wheel without the compiled op "
                "(the pure-TF path will run)",
                file=sys.stderr,
            )
            return
        sys.path.insert(0, os.path.join(HERE, "custom_ops"))
        import build as op_build

        op_build.build_cpu(ops_dir=os.path.join(self.build_lib, "tfpriors", "ops"))


class BinaryDistribution(Distribution):
    """The wheel holds a compiled library: tag it for this platform."""

    def has_ext_modules(self):
        return True


setup(cmdclass={"build_py": BuildWithOp}, distclass=BinaryDistribution)
