"""Argument types and checks shared by the sub-commands, so that a bad argument is one line
on stderr and exit status 2 — from argparse itself, before any work is done.

``positive_int`` and friends are ``type=`` functions (argparse turns their
``ArgumentTypeError`` into ``nrm-verify CMD: error: argument --x: …``);
:func:`output_problem` says why a file cannot be written at a path, before a long run
would find out; :class:`UsageError` is a bad argument that only shows once the command
reads it (a file that is missing or of the wrong kind).
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path


class UsageError(Exception):
    """A bad argument found after parsing (a missing file, a model that does not fit):
    the command prints it as one line and exits with status 2."""


def _number(text: str, kind):
    try:
        return kind(text)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None


def positive_int(text: str) -> int:
    """A whole number ≥ 1."""
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def nonnegative_int(text: str) -> int:
    """A whole number ≥ 0."""
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = _number(text, float)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def nonnegative_float(text: str) -> float:
    """A finite number ≥ 0."""
    value = _number(text, float)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def output_problem(path: str | os.PathLike, create_folders: bool = False) -> str:
    """Why a file cannot be written at ``path`` ('' when it looks writable): it is a folder,
    its folder is missing (unless ``create_folders``: then the nearest existing ancestor
    must be a writable folder), is a file, or is not writable."""
    p = Path(path)
    if p.is_dir():
        return f"{path} is a folder; give a file name"
    parent = p.parent
    if not create_folders and not parent.exists():
        return f"the folder {parent} does not exist; create it first"
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"{parent} is a file, not a folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"the folder {parent} is not writable"
    if p.exists() and not os.access(p, os.W_OK):
        return f"{path} is not writable"
    return ""


def output_file(text: str) -> str:
    """A ``type=`` for a file to write, in a folder that exists."""
    problem = output_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def output_folder(text: str) -> Path:
    """``--out``: the folder, created; a :class:`UsageError` when it cannot be created or written."""
    out = Path(text)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--out {text}: cannot create the folder ({e.strerror})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise UsageError(f"--out {text}: the folder is not writable")
    return out


def one_line(text: str) -> str:
    """A message as one line (exception texts may hold newlines)."""
    return " ".join(str(text).split())
