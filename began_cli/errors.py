"""Errors a user can cause. The CLI prints them as one `error:` line and a
`hint:` line, with a documented exit code, and no traceback."""

from __future__ import annotations

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
