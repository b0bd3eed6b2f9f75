"""The exit statuses of ``bn``, in one place (as fd's ``exit_codes.rs``). The library's
errors carry theirs (``BnError.exit_code``: ERROR, and USAGE for a ``UsageError``)."""

# A problem with an input, an output or a statistics file: bncli.errors.BnError.
ERROR = 1
# A usage error: an option or argument that cannot be taken (bncli.errors.UsageError too).
USAGE = 2
# --fail-on found what it was asked to: the run itself succeeded.
FINDINGS = 3
# Ctrl-C, as a shell reports a command ended by SIGINT.
INTERRUPTED = 130
# The reader of stdout went away, as a shell reports a command ended by SIGPIPE (as cat).
BROKEN_PIPE = 141
# SIGTERM, as a shell reports a command ended by it.
TERMINATED = 143
