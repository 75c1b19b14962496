"""Work that rank 0 alone does under torchrun, with its result (or error) shared."""

from __future__ import annotations

from typing import Callable

from began.errors import BeganError

from .distributed import Dist


def on_main(d: Dist, fn: Callable[[], object]) -> object:
    """Run `fn` on rank 0 only; every rank gets its result, or raises its error."""
    result, error = None, None
    if d.is_main:
        try:
            result = fn()
        except BeganError as e:
            error = (e.message, e.hint, e.exit_code)
    result, error = d.broadcast((result, error))
    if error:
        raise BeganError(*error)
    return result
