"""The public facade: ``import tmln`` is cheap, and each public name is the object of its module."""

from __future__ import annotations

import subprocess
import sys

import pytest

import tmln


def test_import_tmln_is_cheap():
    code = ("import sys, tmln; heavy = sorted(m for m in ('torch', 'pandas', 'shapely', 'cv2', 'openslide', "
            "'tmln.slide', 'tmln.cohort') if m in sys.modules); print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


@pytest.mark.parametrize("name, module", sorted(tmln._LAZY.items()))
def test_public_names(name, module):
    import importlib

    assert getattr(tmln, name) is getattr(importlib.import_module(module), name)
    assert name in tmln.__all__ and name in dir(tmln)


def test_all_is_the_lazy_names():
    assert set(tmln.__all__) - set(tmln._LAZY) == {"__version__", "TmlnError", "SlideError", "MissingMppError",
                                                  "AnnotationError"}
    assert set(tmln._LAZY) <= set(tmln.__all__)


def test_unknown_name():
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        tmln.nothing  # noqa: B018
