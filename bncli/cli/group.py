"""The ``bn`` command group: the library's errors turned into click's, with their exit
status; the library imported with the collector paused."""

from __future__ import annotations

import gc
import importlib
from typing import IO, Any

import click

from bncli._version import __version__
from bncli.cli.options import CONTEXT_SETTINGS
from bncli.errors import BnError


class BnCommandError(click.ClickException):
    """A :class:`BnError` carried through click, printed as ``bn: error: ...``."""

    def __init__(self, error: BnError):
        super().__init__(with_hint(error))
        # click declares exit_code a ClassVar; an instance's own code is what main() reads
        self.exit_code = error.exit_code  # type: ignore[misc]

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"bn: error: {self.format_message()}", err=True)


def with_hint(error: BnError) -> str:
    """The library's message, and what to do about it on the command line."""
    hint = getattr(error, "hint", None)
    return f"{error} ({hint})" if hint else str(error)


class StdoutClosed(Exception):
    """The reader of stdout went away; click would otherwise exit 1 on EPIPE itself."""


# Each command by the module of this package that defines it: a module is imported when its
# command is run (or listed by --help), so a command pays for its own options only.
COMMANDS = {"info": "files", "stats": "stats", "normalize": "normalize", "merge": "files",
            "export": "files", "calibrate": "calibrate", "diff": "diff"}


class BnGroup(click.Group):
    """Turns library errors into click errors with the right exit status; finds each
    command in its module (:data:`COMMANDS`)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands:
            # its module registers it; for a name that is no command, every module, so that
            # click can say which names are
            modules = [COMMANDS[cmd_name]] if cmd_name in COMMANDS else set(COMMANDS.values())
            for module in modules:
                importlib.import_module(f"bncli.cli.{module}")
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx):
        _load_library()
        try:
            return super().invoke(ctx)
        except BnError as error:
            raise BnCommandError(error) from None
        except BrokenPipeError:
            raise StdoutClosed() from None


def _load_library() -> None:
    """Import the library (NumPy and bn's core) before a command runs.

    Where :func:`main` has paused the garbage collector for the start-up, what the imports
    made is then frozen (tens of thousands of objects that live as long as the process, which
    every full collection, and the one at exit, would otherwise walk again) and the
    collector resumed for the command itself.
    """
    from bncli import api  # noqa: F401

    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def _print_version(ctx, param, value):
    if not value or ctx.resilient_parsing:
        return
    from bncli.core.kernel import DESCRIPTION

    click.echo(f"bn {__version__} (kernel: {DESCRIPTION})")
    ctx.exit()


@click.group(cls=BnGroup, context_settings=CONTEXT_SETTINGS)
@click.option("--version", is_flag=True, expose_value=False, is_eager=True,
              callback=_print_version, help="Show the version and the active kernel, and exit.")
def cli():
    """Per-channel moments and batch normalization of .npy and HDF5 files.

    INPUT is a .npy file, an HDF5 dataset as file.h5:/group/dataset (file.h5 alone if it
    holds one numeric dataset), or - for a .npy stream on stdin.

    \b
      bn info acts.npy
      bn stats acts.npy --axes 0,1,2
      bn normalize acts.npy -o normed.npy
      bn merge part*.json -o all.json
    """
