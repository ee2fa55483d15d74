"""Modules loaded at first use, not at start: the daemon's start-up memory (issue 22).

`lazy_module("redis")` returns a stand-in at once; the module is imported (importlib, under the
import system's own lock: two threads never see it half-run) when an attribute of it is first
read. A module that a configuration may never need (Redis without a Redis URL, the fallback
regex engine without a pattern that needs it) then costs no memory in a daemon that does not
use it: redis alone is ~23 MB of RSS. (importlib.util.LazyLoader is not used: on Python 3.11 a
second thread may read the module while the first still runs it.)

Write the import for mypy under `if TYPE_CHECKING:` and the lazy one in its `else:`, so that the
names keep their types:

    if TYPE_CHECKING:
        import redis
    else:
        redis = lazy_module("redis")

A module whose code runs something at import (a monkeypatch, a constant built from it) stays an
ordinary import: a stand-in would only move that to a first use in a mail thread.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import Any


class _Lazy(ModuleType):
    """Stands for a module until an attribute of it is read; then every read goes to the module."""

    def __getattr__(self, attr: str) -> Any:  # called only for what the stand-in itself lacks
        module = self.__dict__.get("_module")
        if module is None:
            module = importlib.import_module(self.__name__)
            self.__dict__["_module"] = module
        return getattr(module, attr)


def lazy_module(name: str) -> ModuleType:
    """The module `name`, imported when it is first used (the module itself if it is loaded already)."""
    return sys.modules.get(name) or _Lazy(name)


def loaded(name: str) -> bool:
    """True when the module has been imported."""
    return name in sys.modules
