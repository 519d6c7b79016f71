"""Lazy public names of a package: each is imported from its submodule on first use.

A package's ``__init__`` lists its public names and the submodule defining each, and hands
them to :func:`lazy_names`, which gives the package a module ``__getattr__`` and ``__dir__``
(PEP 562). So importing the package imports none of its submodules, and the packages of
the pipeline's stages can name one another's modules without importing them all.

A function named like its submodule (``streamdet.engine.detect`` the function, defined in
the submodule ``streamdet.engine.detect``) stays the package's attribute even once the
submodule has been imported (which binds the submodule there).
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Mapping
from typing import Any

__all__ = ["lazy_names"]


class _Package(types.ModuleType):
    """A package module that keeps its functions named like their submodules."""

    _shadowed: frozenset[str] = frozenset()

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._shadowed and isinstance(value, types.ModuleType):
            value = getattr(value, name)
        super().__setattr__(name, value)


def lazy_names(package: str, where: Mapping[str, str]) -> None:
    """Give the package ``package`` its public names lazily.

    Parameters
    ----------
    package : str
        The package's ``__name__`` (it is in ``sys.modules``: call this from its
        ``__init__``, after its ``__all__``).
    where : mapping of str to str
        Public name -> the submodule defining it, relative to the package
        (``"detect"``, ``"engine.detect"``).
    """
    module = sys.modules[package]
    namespace = vars(module)

    def __getattr__(name: str) -> Any:
        submodule = where.get(name)
        if submodule is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{submodule}", package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace["__all__"]) | {k for k in namespace if k.startswith("__")})

    namespace["__getattr__"] = __getattr__
    namespace["__dir__"] = __dir__
    # functions named like their submodule: ``package.detect`` is the function, as it
    # always was, even once the submodule ``package.detect`` has been imported
    namespace["_shadowed"] = frozenset(name for name, sub in where.items() if name == sub)
    module.__class__ = _Package
