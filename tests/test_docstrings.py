"""One docstring style: Keras' sections, every public name with an example that runs.

The examples themselves run as doctests (``--doctest-modules`` in pyproject.toml, set-up
in the root conftest.py); ruff's pydocstyle rules check the Google layout. This file
checks what neither does: that every public class and function *has* an example, that
layers document their input and output shapes, and that a layer's ``Args`` section
lists every constructor argument in the order of the signature.
"""

import inspect
import re

import keras
import pytest

import tfpriors

# The public namespaces: what users import names from.
NAMESPACES = [
    "tfpriors",
    "tfpriors.layers",
    "tfpriors.priors",
    "tfpriors.initializers",
    "tfpriors.callbacks",
    "tfpriors.calibration",
    "tfpriors.datasets",
    "tfpriors.distributed",
    "tfpriors.graph",
    "tfpriors.io",
    "tfpriors.plotting",
    "tfpriors.ops",
    "tfpriors.perforation",
    "tfpriors.adaptive",
    "tfpriors.models",
    "tfpriors.export",
    "tfpriors.hyper",
    "tfpriors.distill",
    "tfpriors.tta",
]

SECTIONS = (
    "Args",
    "Call arguments",
    "Returns",
    "Yields",
    "Raises",
    "Input shape",
    "Output shape",
    "Example",
    "Attributes",
)
# Headers of other styles that the one style replaces.
FOREIGN_HEADER = re.compile(
    r"^\s*(Arguments|Parameters|Params|Examples|Usage|Return|Raise|Notes?)\s*:+\s*$"
    r"|^\s*-{3,}\s*$|:param \w+:",
    re.MULTILINE,
)


def _module(name):
    module = tfpriors
    for part in name.split(".")[1:]:
        module = getattr(module, part)
    return module


def _public_objects():
    seen = {}
    for namespace in NAMESPACES:
        module = _module(namespace)
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            if inspect.isclass(obj) and issubclass(obj, (Exception, Warning)):
                continue  # raised, not called: the raising function documents them
            if inspect.isclass(obj) or inspect.isfunction(obj):
                if obj.__module__.startswith("tfpriors") and id(obj) not in seen:
                    seen[id(obj)] = (f"{namespace}.{name}", obj)
    return sorted(seen.values(), key=lambda item: item[0])


PUBLIC = _public_objects()
LAYERS = [
    (name, obj)
    for name, obj in PUBLIC
    if inspect.isclass(obj)
    and issubclass(obj, keras.layers.Layer)
    and not issubclass(obj, keras.Model)
    and "Example:" in (obj.__doc__ or "")  # abstract bases document no shapes
]


def _sections(doc):
    """Section name -> its text, for the headers of ``SECTIONS``."""
    doc = inspect.cleandoc(doc)
    pattern = re.compile(r"^({}):\s*$".format("|".join(SECTIONS)), re.MULTILINE)
    marks = list(pattern.finditer(doc))
    return {
        mark.group(1): doc[mark.end() : marks[i + 1].start() if i + 1 < len(marks) else None]
        for i, mark in enumerate(marks)
    }


def test_the_catalogue_is_not_empty():
    # A positive control: an import or __all__ mistake would leave nothing to check.
    names = [name for name, _ in PUBLIC]
    assert len(PUBLIC) > 60
    assert "tfpriors.layers.SparseVDDense" in names
    assert len(LAYERS) >= 10


@pytest.mark.parametrize("name, obj", PUBLIC, ids=[name for name, _ in PUBLIC])
def test_public_names_have_a_runnable_example(name, obj):
    doc = obj.__doc__
    assert doc, f"{name} has no docstring"
    sections = _sections(doc)
    assert "Example" in sections, f"{name}: no `Example:` section"
    assert ">>>" in sections["Example"], f"{name}: the example has no `>>>` line"
    foreign = FOREIGN_HEADER.search(doc)
    assert foreign is None, f"{name}: header {foreign.group(0).strip()!r} is not Keras' style"


@pytest.mark.parametrize("name, layer", LAYERS, ids=[name for name, _ in LAYERS])
def test_layers_document_shapes_and_every_argument_in_order(name, layer):
    sections = _sections(layer.__doc__)
    for section in ("Args", "Input shape", "Output shape"):
        assert sections.get(section, "").strip(), f"{name}: no `{section}:` section"
    documented = []
    for line in inspect.cleandoc(sections["Args"]).splitlines():
        entry = re.match(r"^([\w*][\w, *]*):", line)  # "units:" or "a, b:" at the margin
        if entry:
            documented += [part.strip().lstrip("*") for part in entry.group(1).split(",")]
    parameters = [
        p.name
        for p in inspect.signature(layer.__init__).parameters.values()
        if p.name != "self"
        and not p.name.startswith("_")
        and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    ]
    missing = [p for p in parameters if p not in documented]
    assert not missing, f"{name}: arguments not in `Args:`: {missing}"
    order = [p for p in documented if p in parameters]
    assert order == parameters, f"{name}: `Args:` order {order} differs from {parameters}"
