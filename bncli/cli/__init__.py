"""The command line: click commands, rendering (rich) and plots (matplotlib)."""

from bncli.cli.main import cli, main

__all__ = ["cli", "main"]
