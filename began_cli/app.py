"""The `began` command: a Typer app with one module per verb under `commands/`.

`main()` owns the process contract: human text on stderr, one `error:` line
and a `hint:` for errors a user can cause, and documented exit codes
(see errors.py). `--version` answers before Typer, onnxruntime or torch load.
"""

from __future__ import annotations

import os
import sys

from . import __version__
from .errors import EXIT_FATAL, EXIT_INTERRUPTED, EXIT_USAGE, BeganError, StdoutError

# Set by the global -v option; tracebacks of unexpected errors only with -vv.
VERBOSITY = {"level": 0}


def _plain_flags() -> None:
    """Typer 0.2x prints a type after every parameter: `<bool>` after flags (--json, --help),
    which take no value, and `<list[str]>` after arguments whose metavar already says what
    they are. Show neither, as click does. A no-op where Typer's internals differ."""
    from typer import core

    plain = {"TyperOption": lambda p: getattr(p, "is_flag", False) and not p.count,
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


def make_app():
    import typer

    _plain_flags()

    from .commands import export, info, interpolate, invert, plot, sample, score, train
    from .commands import eval as eval_cmd

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
        verbose: int = typer.Option(0, "--verbose", "-v", count=True,
                                    help="More detail on stderr; -vv shows tracebacks."),
        version: bool = typer.Option(False, "--version", help="Print the version and exit."),
    ) -> None:
        VERBOSITY["level"] = verbose
        if version:
            print(f"began {__version__}")
            raise typer.Exit()

    app.command("sample")(sample.sample)
    app.command("interpolate")(interpolate.interpolate)
    app.command("invert", no_args_is_help=True)(invert.invert)
    app.command("score", no_args_is_help=True)(score.score)
    app.command("info")(info.info)
    app.command("train", no_args_is_help=True)(train.train)
    app.command("plot", no_args_is_help=True)(plot.plot)
    app.command("export", no_args_is_help=True)(export.export)
    app.command("eval", no_args_is_help=True)(eval_cmd.eval_)
    return app


def error_lines(message: str, hint: str | None) -> str:
    return f"error: {message}" + (f"\nhint: {hint}" if hint else "")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv in (["--version"], ["-V"]):  # instant: no Typer, no onnxruntime, no torch
        print(f"began {__version__}")
        return 0
    code = run(argv)
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
    """Run the app and map every outcome to an exit code."""
    import typer

    try:  # typer >= 0.2x vendors click; older releases depend on it
        from typer._click.exceptions import UsageError as ClickUsageError
    except ImportError:
        from click.exceptions import UsageError as ClickUsageError

    try:
        # standalone_mode=False: click returns typer.Exit's code instead of exiting.
        rv = make_app()(args=argv, prog_name="began", standalone_mode=False)
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
        if VERBOSITY["level"] >= 2:
            raise
        _print_error(f"unexpected {type(e).__name__}: {e}",
                     "rerun with -vv for the traceback and report it")
        return EXIT_FATAL


def _print_error_free(line: str) -> None:
    if sys.stderr is not None:
        print(line, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
