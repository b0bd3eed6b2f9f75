"""``bn``, the console script: the command group with every command registered, run with
the process's guards.

Errors raised as :class:`bncli.errors.BnError` become one ``bn: error: ...`` line on stderr
and exit status 1 (2 for usage errors); Ctrl-C exits 130, SIGTERM 143, and a closed stdout
pipe ends quietly (141); :mod:`bncli.cli.exit_codes` names them. Each command is a module of
this package (:mod:`~bncli.cli.stats`, :mod:`~bncli.cli.normalize`, :mod:`~bncli.cli.files`,
:mod:`~bncli.cli.calibrate`, :mod:`~bncli.cli.diff`): it parses what the library does not
and calls :mod:`bncli.api`; :mod:`~bncli.cli.report` renders.
"""

from __future__ import annotations

import functools
import gc
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

import click

from bncli.cli import exit_codes
from bncli.cli.group import StdoutClosed, cli, with_hint
from bncli.errors import BnError


class GuardedStdout:
    """Standard output for ``bn``: a write that fails is a one-line error naming stdout.

    A closed pipe still raises BrokenPipeError (the command then ends quietly with 141);
    a full device, a file-size limit or a closed descriptor (``>&-``) become
    :class:`OutputError`. The binary ``buffer`` is guarded alike.
    """

    def __init__(self, stream):
        self._stream = stream

    def _call(self, method: str, *args: object) -> Any:
        from bncli.errors import OutputError

        if self._stream is None:
            raise OutputError("<stdout>: standard output is closed")
        try:
            return getattr(self._stream, method)(*args)
        except BrokenPipeError:
            raise
        except (OSError, ValueError) as exc:
            if isinstance(exc, OSError):
                from bncli.io.sinks import output_error

                raise output_error("<stdout>", exc) from None
            raise OutputError("<stdout>: standard output is closed") from None

    def write(self, data):
        return self._call("write", data)

    def flush(self):
        return self._call("flush")

    def isatty(self) -> bool:
        try:
            return self._stream is not None and self._stream.isatty()
        except (OSError, ValueError):
            return False

    def fileno(self) -> int:
        return self._call("fileno")

    @property
    def buffer(self):
        return GuardedStdout(None if self._stream is None else self._stream.buffer)

    def __getattr__(self, name):
        return getattr(self._stream, name)


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM so that temporary files are removed."""


def _on_signal(signum, frame):
    """SIGINT and SIGTERM: their exception, raised now or at the output's next checkpoint
    (see bncli.io.interrupts)."""
    from bncli.io import interrupts

    exc = Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
    if not interrupts.arrived(exc):
        raise exc


def _handle_signals(func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        if hasattr(signal, "SIGXFSZ"):
            # Past `ulimit -f` a write then fails with EFBIG, which is reported, instead of
            # the process dying with the temporary file left behind.
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        from bncli.io import interrupts

        with interrupts.quiet_threads():  # OpenBLAS starts its threads as NumPy loads
            import numpy  # noqa: F401
        signal.signal(signal.SIGTERM, _on_signal)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, _on_signal)
        return func(*args, **kwargs)

    return wrapper


@_handle_signals
def main(argv: Sequence[str] | None = None) -> None:
    """Run ``bn``; the console-script entry point."""
    import warnings

    gc.disable()  # for the imports: see _load_library

    # Every NaN or Inf that NumPy would warn about is counted and reported as a finding.
    warnings.simplefilter("ignore", RuntimeWarning)
    # An error raised while a library frees an object (h5py after a failed write) is not
    # the user's to read: the error that matters has been reported.
    sys.unraisablehook = _ignore_unraisable
    if sys.stderr is None:  # 2>&- : nowhere to report, but no crash either
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - for the process's lifetime
    sys.stdout = GuardedStdout(sys.stdout)
    try:
        code = cli.main(args=argv, prog_name="bn", standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt):
        _signal_handled()
        click.echo("bn: interrupted", err=True)
        code = exit_codes.INTERRUPTED
    except Terminated:
        _signal_handled()
        code = exit_codes.TERMINATED
    except click.UsageError as error:
        # one line, as bn's own errors; `bn COMMAND --help` has the usage
        command = f" {error.ctx.info_name}" if error.ctx and error.ctx.parent else ""
        click.echo(f"bn: error: {error.format_message()} (see bn{command} --help)", err=True)
        code = error.exit_code
    except click.ClickException as error:
        error.show()
        code = error.exit_code
    except (BrokenPipeError, StdoutClosed):
        _silence_stdout()
        code = exit_codes.BROKEN_PIPE
    except BnError as error:
        click.echo(f"bn: error: {with_hint(error)}", err=True)
        code = error.exit_code
    except MemoryError:
        click.echo("bn: error: out of memory (try a smaller --chunk-bytes)", err=True)
        code = exit_codes.ERROR
    except Exception as error:  # noqa: BLE001 - no traceback ever reaches a user
        if os.environ.get("BN_DEBUG"):
            raise
        click.echo(f"bn: error: unexpected {type(error).__name__}: {error} "
                   "(set BN_DEBUG=1 for a traceback)", err=True)
        code = exit_codes.ERROR
    if code in (exit_codes.INTERRUPTED, exit_codes.TERMINATED):
        # what is left in stdout's buffer is part of an output cut short: a reader that
        # stopped reading must not keep an interrupted bn waiting to write it
        _silence_stdout()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
        code = exit_codes.BROKEN_PIPE
    except BnError as error:
        if not code:  # an error already reported stands for this one
            click.echo(f"bn: error: {with_hint(error)}", err=True)
            code = error.exit_code
    if isinstance(sys.stdout, GuardedStdout):  # Python's own flush at exit needs no guard
        sys.stdout = sys.stdout._stream or open(os.devnull, "w")  # noqa: SIM115
    gc.freeze()  # nothing is left to collect: spare the interpreter's walk at exit
    gc.enable()  # as it was, for a caller that goes on after SystemExit
    sinks = sys.modules.get("bncli.io.sinks")  # not imported for --help: keep it so
    if sinks is not None and sinks.hdf5_left_broken():
        # the HDF5 library would crash in its shutdown: the error is reported, the
        # temporary file removed, so end here
        sys.stderr.flush()
        os._exit(code or 0)
    sys.exit(code or 0)


def _signal_handled() -> None:
    interrupts = sys.modules.get("bncli.io.interrupts")
    if interrupts is not None:
        interrupts.handled()


def _ignore_unraisable(unraisable: sys.UnraisableHookArgs) -> None:
    if isinstance(unraisable.exc_value, (KeyboardInterrupt, Terminated)):
        # A signal's exception raised inside a finalizer or a weak reference's callback is
        # lost there: the signal is sent again a moment later, once that has returned (the
        # run may be waiting in a read, with no checkpoint to come).
        again = signal.SIGTERM if isinstance(unraisable.exc_value, Terminated) \
            else signal.SIGINT
        timer = threading.Timer(0.01, signal.pthread_kill, (threading.main_thread().ident,
                                                             again))
        timer.daemon = True
        from bncli.io import interrupts

        with interrupts.quiet_threads():
            timer.start()
    if os.environ.get("BN_DEBUG"):
        sys.__unraisablehook__(unraisable)


def _silence_stdout() -> None:
    # Python flushes stdout again at exit; point it at /dev/null so that no second
    # BrokenPipeError is printed.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
