"""The `began` command: a Typer app with one module per verb under `commands/`.

`main()` owns the process contract: human text on stderr, one `error:` line
and a `hint:` for errors a user can cause, and documented exit codes
(see errors.py). `--version` answers before Typer, onnxruntime or torch load.
-v and -q work before or after the verb (voice.py); -vv shows tracebacks.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import signal
import sys

from . import __version__, voice
from .errors import (EXIT_FATAL, EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_USAGE, BeganError,
                     StdoutError, Terminated, sigterm_unwinds)


def _plain_flags() -> None:
    """Typer 0.2x prints a type after every parameter: `<bool>` after flags (--json, --help)
    and `<int>` after counted ones (-v), which take no value, and `<list[str]>` after
    arguments whose metavar already says what they are. Show none, as click does. A no-op
    where Typer's internals differ."""
    from typer import core

    plain = {"TyperOption": lambda p: getattr(p, "is_flag", False) or p.count,
             "TyperArgument": lambda p: p.metavar is not None}
    for name, hide in plain.items():
        cls = getattr(core, name, None)
        shown = getattr(cls, "display_type_rich", None)
        if shown is None or getattr(cls, "_began_plain", False):
            continue

        def display_type_rich(self, ctx, shown=shown, hide=hide):
            return None if hide(self) else shown(self, ctx)

        cls.display_type_rich = display_type_rich
        cls._began_plain = True


def _with_voice(verb):
    """The verb with the root's -v as its own option too (counts add up: `began -v sample
    -v` is -vv), and its own -q (where it has one) also set by the root's -q. Done here,
    once, so every verb takes them after its name without a parameter of its own."""
    import typer

    sig = inspect.signature(verb, eval_str=True)
    loud = inspect.Parameter("began_verbose", inspect.Parameter.KEYWORD_ONLY, annotation=int,
                             default=typer.Option(0, "--verbose", "-v", count=True,
                                                  show_default=False,
                                                  help="More detail on stderr (the provider "
                                                       "line); -vv shows tracebacks."))

    @functools.wraps(verb)
    def run_verb(*args, began_verbose: int = 0, **kwargs):
        voice.louder(began_verbose)
        if "quiet" in kwargs:
            kwargs["quiet"] = kwargs["quiet"] or voice.quiet()
            if kwargs["quiet"]:
                voice.hush()
        return verb(*args, **kwargs)

    run_verb.__signature__ = sig.replace(parameters=[*sig.parameters.values(), loud])
    return run_verb


# name: (function in commands/<name>.py, needs arguments). A verb that needs arguments
# prints its help when it has none (no `error:` line); sample and info do their job without.
VERBS = {"sample": ("sample", False), "interpolate": ("interpolate", True),
         "invert": ("invert", True), "score": ("score", True), "info": ("info", False),
         "train": ("train", True), "plot": ("plot", True), "export": ("export", True),
         "eval": ("eval_", True)}


def _verbs(argv: list[str] | None) -> dict[str, tuple[str, bool]]:
    """Only the verb the command line names is imported (each verb's imports cost up to
    ~0.1 s, and `began sample` is the job that must start fast); every verb for the root's
    help or a name that is not a verb, so click lists them or suggests the nearest. The
    root's options are all flags, so the verb is the first word not starting with '-'."""
    word = next((a for a in argv or [] if not a.startswith("-")), None)
    return {word: VERBS[word]} if word in VERBS else VERBS


def make_app(argv: list[str] | None = None):
    import typer

    _plain_flags()

    app = typer.Typer(
        name="began",
        help="BEGAN: train on your images, export to ONNX, sample from the command line.",
        add_completion=False,
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )

    @app.callback()
    def _root(
        verbose: int = typer.Option(0, "--verbose", "-v", count=True, show_default=False,
                                    help="More detail on stderr (the provider line); -vv "
                                         "shows tracebacks. Also after the verb."),
        quiet: bool = typer.Option(False, "--quiet", "-q",
                                   help="Only errors on stderr. Also after the verb."),
        version: bool = typer.Option(False, "--version", help="Print the version and exit."),
    ) -> None:
        voice.reset(verbose, quiet)  # each command starts from its own flags
        if version:
            print(f"began {__version__}")
            raise typer.Exit()

    for name, (func, needs_args) in _verbs(argv).items():
        verb = getattr(importlib.import_module(f".commands.{name}", __package__), func)
        app.command(name, no_args_is_help=needs_args)(_with_voice(verb))
    return app


def error_lines(message: str, hint: str | None) -> str:
    return f"error: {message}" + (f"\nhint: {hint}" if hint else "")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    _hold_closed_std_fds()
    if argv in (["--version"], ["-V"]):  # instant: no Typer, no onnxruntime, no torch
        print(f"began {__version__}")
        return 0
    code = run(argv)
    if code in (EXIT_INTERRUPTED, EXIT_TERMINATED):
        # The command has stopped and cleaned up; a second Ctrl-C landing in the
        # interpreter's own exit (torch's atexit finalizers) would only print a traceback
        # there. SIGTERM still ends a stuck exit.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        if sys.stdout is not None:
            sys.stdout.flush()
    except OSError as e:  # stdout's disk is full, or its reader left: said once, no trace
        _silence_stdout()
        if not isinstance(e, BrokenPipeError):
            _print_error(f"cannot write to stdout ({e.strerror or e})",
                         "redirect stdout to a file on a disk with space")
        return code or 1
    return code


def _hold_closed_std_fds() -> None:
    """A closed stdin, stdout or stderr (`2>&-`) gets /dev/null on its fd, so no file
    opened later takes fd 0-2 (a library's write to fd 2 would land in a checkpoint).
    A closed stderr then just says nothing: the work goes on. A closed stdout stays
    None in sys.stdout, so what needs it (--json, --out -) is refused before any work."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
            continue
        except OSError:
            pass
        try:
            devnull = os.open(os.devnull, os.O_RDWR)
        except OSError:
            continue
        if devnull != fd:
            os.dup2(devnull, fd)
            os.close(devnull)
        if fd == 2:
            sys.stderr = open(2, "w", encoding="utf-8", errors="replace", closefd=False)


def _print_error(message: str, hint: str | None) -> None:
    if sys.stderr is not None:
        print(error_lines(message, hint), file=sys.stderr, flush=True)


def _silence_stdout() -> None:
    """Point fd 1 at /dev/null, so the interpreter's own flush at exit cannot fail again
    (and print a traceback of its own)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
    except OSError:
        pass


def run(argv: list[str]) -> int:
    """Run the app and map every outcome to an exit code. SIGTERM unwinds as an exception
    (exit 143), so every verb leaves whole files only, as Ctrl-C does."""
    with sigterm_unwinds():
        try:
            code = _run(argv)
        except Terminated:
            _print_error_free("terminated")
            code = EXIT_TERMINATED
    if code in (EXIT_INTERRUPTED, EXIT_TERMINATED):
        from . import files

        files.discard_temps()  # a write the signal cut short (the writers remove their own)
    return code


def _run(argv: list[str]) -> int:
    import typer

    try:  # typer >= 0.2x vendors click; older releases depend on it
        from typer._click.exceptions import UsageError as ClickUsageError
    except ImportError:
        from click.exceptions import UsageError as ClickUsageError

    try:
        # standalone_mode=False: click returns typer.Exit's code instead of exiting.
        rv = make_app(argv)(args=argv, prog_name="began", standalone_mode=False)
        if rv == EXIT_INTERRUPTED:  # Typer turns Ctrl-C into a silent Exit(130)
            _print_error_free("interrupted")
        return rv if isinstance(rv, int) else 0
    except ClickUsageError as e:
        message = e.format_message().strip()
        if not message:  # no arguments at all: the help was shown, that is the answer
            return EXIT_USAGE
        where = e.ctx.command_path if e.ctx else "began"
        _print_error(message, f"see '{where} --help'")
        return EXIT_USAGE
    except typer.Abort:
        _print_error_free("interrupted")
        return EXIT_INTERRUPTED
    except BeganError as e:
        if isinstance(e, StdoutError):
            _silence_stdout()
        _print_error(e.message, e.hint)
        return e.exit_code
    except KeyboardInterrupt:
        _print_error_free("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `began ... | head`: the reader left; not an error worth a line.
        _silence_stdout()
        return EXIT_FATAL
    except MemoryError:
        _print_error("out of memory", "ask for less at once: a smaller -n, --batch-size or "
                                      "--max-images")
        return EXIT_FATAL
    except Exception as e:  # a bug, not a user error: say so, traceback with -vv
        if voice.verbose() >= 2:
            raise
        _print_error(f"unexpected {type(e).__name__}: {e}",
                     "rerun with -vv for the traceback and report it")
        return EXIT_FATAL


def _print_error_free(line: str) -> None:
    if sys.stderr is not None:
        print(line, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
