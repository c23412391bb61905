"""Imports only go down: every tfpriors module imports modules of its own level or below.

The levels (lowest first): shared helpers; the compiled ops and their pure-TF
forms; priors and perforation masks; layers; tools and models built on
layers; the command line. The test reads every import statement of the
package (function-level ones too) from the source, so a new upward import
fails here instead of showing up later as an import cycle.
"""

import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "tfpriors")

# Module name prefixes by level; the longest matching prefix decides.
LEVELS = {
    "tfpriors._backend": 0,
    "tfpriors._validation": 0,
    "tfpriors._inputs": 0,
    "tfpriors._probabilities": 0,
    "tfpriors._rewrite": 0,
    "tfpriors.io": 0,
    "tfpriors.graph": 0,
    "tfpriors.distributed": 0,
    "tfpriors.datasets": 0,
    "tfpriors.ops": 1,
    "tfpriors.priors": 2,
    "tfpriors.perforation.masks": 2,
    "tfpriors.layers": 3,
    "tfpriors.perforation": 4,
    "tfpriors.models": 4,
    "tfpriors.adaptive": 4,
    "tfpriors.export": 4,
    "tfpriors.hyper": 4,
    "tfpriors.distill": 4,
    "tfpriors.tta": 4,
    "tfpriors.callbacks": 4,
    "tfpriors.calibration": 4,
    "tfpriors.sparsify": 4,
    "tfpriors.structured": 4,
    "tfpriors.compression": 4,
    "tfpriors.plotting": 4,
    "tfpriors.initializers": 4,
    "tfpriors.cli": 5,
    "tfpriors": 5,
}


def level(module):
    matches = [prefix for prefix in LEVELS if module == prefix or module.startswith(prefix + ".")]
    assert matches, f"{module} has no level in tests/test_imports.py: add it"
    return LEVELS[max(matches, key=len)]


def module_name(path):
    parts = os.path.relpath(path, ROOT)[:-3].split(os.sep)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path):
    """Every tfpriors module the file imports (``from a import b`` counts ``a.b`` when
    ``b`` is a module)."""

    def ours(name):  # tfpriors itself, not tfpriors_mobile (the device-side package)
        return name == "tfpriors" or name.startswith("tfpriors.")

    tree = ast.parse(open(path).read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if ours(alias.name)}
        elif isinstance(node, ast.ImportFrom) and ours(node.module or ""):
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                relative = os.path.join(ROOT, *candidate.split("."))
                is_module = os.path.exists(relative + ".py") or os.path.isdir(relative)
                found.add(candidate if is_module else node.module)
    return found


def package_files():
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                yield os.path.join(folder, name)


def test_imports_only_go_down():
    upward = []
    for path in package_files():
        importer = module_name(path)
        for imported in imported_modules(path):
            if imported == "tfpriors" and importer == "tfpriors.cli":
                continue  # the CLI imports the whole package (lazily, for a fast --help)
            if level(imported) > level(importer):
                upward.append(
                    f"{importer} (level {level(importer)}) imports {imported} "
                    f"(level {level(imported)})"
                )
    assert not upward, "\n".join(sorted(upward))


def test_the_rule_catches_an_upward_import(tmp_path, monkeypatch):
    """Positive control: a prior that imports a layer is reported."""
    fake = tmp_path / "tfpriors" / "priors"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("from tfpriors.layers import sparse_vd\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", str(tmp_path))
    imported = imported_modules(str(fake / "bad.py"))
    assert any(level(m) > level("tfpriors.priors.bad") for m in imported)


# Layers use perforation's masks, perforation's tools use layers: either may come first.
@pytest.mark.parametrize("module", ["tfpriors.layers.perforated", "tfpriors.perforation.masks"])
def test_any_module_imports_first_in_a_fresh_interpreter(module):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
