"""The one loader of a user's objects: ``"module:name"``, ``"module:factory()"`` and
``"path/to/file.py:name"``, as rule files, models, case builders, layer kinds and
explainers are named on the command line and in snapshots.

A user's files load as they would run: a file's folder is put first on ``sys.path`` (as
``python file.py`` does), and a module that is not importable as it stands is looked for
in the current directory too (as ``python -m`` would)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any


def load_object(spec: str) -> Any:
    """``"package.module:name"``, ``"package.module:factory()"`` or ``"path/to/file.py:name"``
    → the object (called when the name ends with ``()``).

    A user's files load as they would run: a file's folder is put on ``sys.path`` (first,
    as ``python file.py`` does), so that it can import its siblings; a module that is not
    importable as it stands is looked for in the current directory too (as ``python -m``
    would), so that ``mycases:make`` works without ``PYTHONPATH=.``."""
    if ":" not in spec:
        raise ValueError(f"expected 'module:name' or 'path/to/file.py:name', got {spec!r}")
    where, _, name = spec.rpartition(":")
    call = name.endswith("()")
    name = name[:-2] if call else name
    if where.endswith(".py") or "/" in where or "\\" in where:
        path = Path(where).expanduser().resolve()
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {path}")
        module = load_file(path)
    else:
        module = _import(where)
    obj = module
    for part in name.split("."):
        if not hasattr(obj, part):
            raise AttributeError(f"{where!r} has no attribute {name!r}")
        obj = getattr(obj, part)
    return obj() if call else obj


def _on_path(folder: Path) -> None:
    """Put ``folder`` first on sys.path (once)."""
    entry = str(folder)
    if entry not in sys.path:
        sys.path.insert(0, entry)


def _import(name: str):
    """``importlib.import_module(name)``; when its top-level package is not found, again
    with the current directory on sys.path."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        top = name.partition(".")[0]
        here = Path.cwd()
        if e.name != top or not ((here / f"{top}.py").is_file() or (here / top).is_dir()):
            raise
    _on_path(here)
    return importlib.import_module(name)


FILE_MODULES: dict[str, Path] = {}
"""Modules loaded from a file path by :func:`load_object`: module name → file."""


def load_file(path: Path):
    """The module of the Python file ``path``, loaded once under a name of its own, with its
    folder on ``sys.path`` (so that ``import sibling`` works now and later)."""
    name = "nrm_user_" + "".join(c if c.isalnum() else "_" for c in str(path.with_suffix("")))[-80:]
    if name in sys.modules:
        return sys.modules[name]
    _on_path(path.parent)  # `import sibling` inside the file, now and when its functions run later
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    FILE_MODULES[name] = path
    return module
