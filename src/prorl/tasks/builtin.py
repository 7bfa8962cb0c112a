"""Imports every task module in this package so their ``@register_task`` decorators run.

Discovered with pkgutil so adding a task family is adding a file, nothing else.
"""

from __future__ import annotations

import importlib
import pkgutil

import prorl.tasks as _pkg

_SKIP = {"base", "builtin"}

for _info in pkgutil.iter_modules(_pkg.__path__):
    if _info.name not in _SKIP and not _info.name.startswith("_"):
        importlib.import_module(f"prorl.tasks.{_info.name}")
