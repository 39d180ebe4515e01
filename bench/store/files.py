"""Files written safely by several processes: temporary names that say who wrote them, stale ones
removed, and locks.

A file or folder is built under ``partial_name(path)`` (``<path>.partial@<host>@<pid>``) and
renamed into place when complete, so a reader never sees half of it. A process killed mid-write
leaves its partial behind; :func:`remove_stale_partials` deletes the partials of processes of this
host that no longer run (partials of other hosts, on a shared file system, are left to them).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
from typing import Callable

_logger = logging.getLogger(__name__)
_PARTIAL = re.compile(r"\.partial@(?P<host>[^@/]+)@(?P<pid>\d+)")


def _host() -> str:
    return socket.gethostname().replace("@", "_") or "localhost"


def partial_name(path: str) -> str:
    """Return the temporary name ``path`` is written under by this process."""
    return f"{path}.partial@{_host()}@{os.getpid()}"


def write_atomically(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(temporary path)``, then rename the temporary file to ``path`` (creating its folder): the one way
    every file of a study is written, so a reader never sees half of one.

    Raises:
        OSError: the folder cannot be created or written; whatever ``write`` raises (the partial is removed).
    """
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    partial = partial_name(path)
    try:
        write(partial)
        os.replace(partial, path)
    except BaseException:
        if os.path.exists(partial):
            os.unlink(partial)
        raise


def pid_alive(pid: int) -> bool:
    """Return whether a process with ``pid`` runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


def remove_stale_partials(folder: str) -> list[str]:
    """Delete the partial files and folders in ``folder`` left by dead processes of this host; return their paths."""
    if not os.path.isdir(folder):
        return []
    removed = []
    host = _host()
    for name in os.listdir(folder):
        match = _PARTIAL.search(name)
        if not match or match["host"] != host or pid_alive(int(match["pid"])):
            continue
        path = os.path.join(folder, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue
        _logger.warning("removed %s, left by a process (pid %s) that was killed while writing it", path, match["pid"])
        removed.append(path)
    return removed


def file_lock(path: str, timeout: float = -1):
    """Return an inter-process lock on ``path + '.lock'`` (a ``filelock.FileLock``; use as a context manager).

    ``timeout`` < 0 waits forever; 0 tries once. The lock is released when its holder exits, even
    when killed, so a crash never leaves a study locked.
    """
    from filelock import FileLock

    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    return FileLock(f"{path}.lock", timeout=timeout)


def check_writable(folder: str, what: str = "results folder", flag: str = "--results-dir") -> None:
    """Create ``folder`` if needed and check that files can be written in it (``what`` and ``flag`` name it in the error).

    Raises:
        PermissionError: ``folder`` (or a parent) cannot be created or written; the message names it.
    """
    try:
        os.makedirs(folder, exist_ok=True)
        probe = partial_name(os.path.join(folder, ".write-test"))
        with open(probe, "w", encoding="utf-8") as handle:
            handle.write("ok")
        os.unlink(probe)
    except OSError as exc:
        raise PermissionError(f"{what} {folder!r} is not writable ({exc.strerror or exc}); pick another with {flag}") from None


def write_text_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all (:func:`write_atomically`)."""

    def write(partial: str) -> None:
        with open(partial, "w", encoding="utf-8") as handle:
            handle.write(text)

    write_atomically(path, write)


def json_value(value):
    """Return ``value`` as JSON can hold it (``json.dumps(default=json_value)``): NumPy scalars as numbers, arrays and
    tuples as lists, anything else as its text."""
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (np.ndarray, tuple)):
        return list(value) if isinstance(value, tuple) else value.tolist()
    return str(value)


def write_json_atomic(path: str, value, indent: int | None = 1) -> None:
    """Write ``value`` as JSON to ``path`` whole or not at all (values JSON cannot hold go through :func:`json_value`)."""
    write_text_atomic(path, json.dumps(value, indent=indent, default=json_value))
