"""The exceptions of bncli.

Every problem a user can cause is raised as a :class:`BnError` (or a subclass) where it is
found, with the file name and the bad value in the message. The command line turns it into
one line on stderr and an exit status; the library never prints.
"""

from __future__ import annotations


class BnError(Exception):
    """A problem with an input, an output or a statistics file (exit status 1).

    Parameters
    ----------
    message : str
        What is wrong and where; it names no command-line flag.
    hint : str, optional
        What to do about it on the command line (``use --force to replace it``), which
        ``bn`` prints after the message.
    """

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


class UsageError(BnError):
    """A bad combination or value of options (exit status 2)."""

    exit_code = 2


class InputError(BnError):
    """An input file that cannot be read as the tensor it claims to be."""


class OutputError(BnError):
    """An output that cannot or may not be written."""


class StatsFileError(BnError):
    """A statistics file that is malformed or does not fit the data."""
