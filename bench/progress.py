"""The one progress contract of library code, which never prints.

A ``progress`` argument is a factory with tqdm's interface: ``progress(total=N, desc="...")``
returns a bar with ``update(n)``, ``set_postfix(**values)`` and ``close()``. The CLI passes a
tqdm factory; ``None`` means no progress reporting (:func:`null_progress`).
"""

from __future__ import annotations


class _NullBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **values) -> None:
        pass

    def close(self) -> None:
        pass


def null_progress(total=None, desc=None, **_) -> _NullBar:
    """Return a bar that reports nothing (the default when no ``progress`` factory is given)."""
    return _NullBar()
