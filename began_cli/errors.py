"""Errors a user can cause. The CLI prints them as one `error:` line and a
`hint:` line, with a documented exit code, and no traceback."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

# Exit codes (documented in the README).
EXIT_OK = 0
EXIT_FATAL = 1  # the command could not do its job
EXIT_USAGE = 2  # bad arguments (also Typer/Click's own usage errors)
EXIT_PARTIAL = 3  # some outputs failed, others were written
EXIT_INTERRUPTED = 130  # Ctrl-C
EXIT_TERMINATED = 143  # SIGTERM


class BeganError(Exception):
    def __init__(self, message: str, hint: str | None = None, exit_code: int = EXIT_FATAL):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code


class UsageError(BeganError):
    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message, hint, EXIT_USAGE)


class StdoutError(BeganError):
    """stdout is closed or cannot be written (a full disk): the output cannot be delivered."""


class Terminated(SystemExit):
    """SIGTERM, turned into an exception so the command unwinds (temp files removed,
    workers stopped, locks released) and exits 143 with whole files only."""

    def __init__(self) -> None:
        super().__init__(EXIT_TERMINATED)


@contextlib.contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """Raise Terminated in the main thread on SIGTERM, if no one else handles it (the
    training loop installs its own handler later). Once: a second SIGTERM while the
    first unwinds is ignored, so it cannot cut the cleanup short."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
        yield
        return

    def handle(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated()

    signal.signal(signal.SIGTERM, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
