"""numpydoc's validation of every public name: the top level, the generator forms, files
(``napari_dsp.io``), stacks larger than memory (``napari_dsp.large``) and clusters
(``napari_dsp.distributed``), and the public methods and properties of their classes.
The API reference of the documentation site is generated from these docstrings."""

from __future__ import annotations

import importlib
import inspect

import pytest

numpydoc_validate = pytest.importorskip("numpydoc.validate")

#: The modules whose ``__all__`` is the documented API (docs/reference.md).
PUBLIC_MODULES = (
    "napari_dsp",
    "napari_dsp.generators",
    "napari_dsp.io",
    "napari_dsp.large",
    "napari_dsp.distributed",
)

#: no docstring; a parameter not documented; a documented parameter that does not
#: exist; no Returns section
CHECKS = {"GL08", "PR01", "PR02", "RT01"}


def public_names() -> list[str]:
    names = []
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.ismodule(obj):
                continue
            names.append(f"{module_name}.{name}")
            if inspect.isclass(obj) and obj.__module__.startswith("napari_dsp"):
                for attr, value in vars(obj).items():
                    if attr.startswith("_"):
                        continue
                    if callable(value) or isinstance(value, (property, classmethod)):
                        names.append(f"{module_name}.{name}.{attr}")
    return names


def test_the_public_api_is_what_the_reference_documents():
    assert "napari_dsp.segment" in public_names()
    assert "napari_dsp.Settings.research" in public_names()
    assert len(public_names()) > 50


@pytest.mark.parametrize("name", public_names())
def test_numpydoc_validation(name):
    errors = [
        f"{code}: {message}"
        for code, message in numpydoc_validate.validate(name)["errors"]
        if code in CHECKS
    ]
    assert not errors, "\n".join(errors)
