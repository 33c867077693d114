"""maml._lazy: a module executed at its first attribute read, not at its import."""

from __future__ import annotations

import sys

import pytest

from maml._lazy import lazy_module


def test_the_module_runs_at_its_first_attribute_read(tmp_path, monkeypatch):
    (tmp_path / "maml_lazy_probe.py").write_text(
        "import builtins\nbuiltins.maml_lazy_probe_ran = True\nVALUE = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "maml_lazy_probe", raising=False)
    import builtins

    monkeypatch.setattr(builtins, "maml_lazy_probe_ran", False, raising=False)
    module = lazy_module("maml_lazy_probe")
    assert builtins.maml_lazy_probe_ran is False
    assert module.VALUE == 42
    assert builtins.maml_lazy_probe_ran is True
    assert lazy_module("maml_lazy_probe") is sys.modules["maml_lazy_probe"]
    monkeypatch.delitem(sys.modules, "maml_lazy_probe")


def test_a_missing_module_fails_at_once():
    with pytest.raises(ModuleNotFoundError):
        lazy_module("maml_no_such_module_anywhere")
