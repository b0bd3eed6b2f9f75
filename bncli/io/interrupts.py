"""Ctrl-C and SIGTERM, raised where a run can stop cleanly.

A signal handler's exception is raised wherever the main thread happens to be: inside a
weak reference's callback or an object's finalizer (the HDF5 library's objects have many)
it is printed as "ignored" and lost, and the run went on to write its output and exit 0;
and between the rename that puts an output in place and the bookkeeping after it, the run
would report a failure with the output already in place. So the command line's handlers
give the exception to :func:`arrived`, which keeps it until it reaches the top of the
command (:func:`handled`):

- outside a held section it is raised at once, and again at the next :func:`checkpoint`
  (one after every block read or written) should it have been lost;
- inside a held section (an output being put in place or removed) it waits, and once the
  outputs are in place the run is complete: it ends with its status as if the signal had
  come a moment later.

Only the main thread runs signal handlers and enters sections. Every other thread, bn's
workers and the libraries' (:func:`quiet_threads`), starts with the two signals blocked, so
that the kernel delivers them to the main thread and a read it is waiting in is interrupted
(delivered to another thread, a signal left the main thread waiting on a stalled pipe for
ever).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

_pending: BaseException | None = None
_depth = 0


def arrived(exc: BaseException) -> bool:
    """Keep the exception of a signal; True when it must wait for a checkpoint (a critical
    section is open), False when the handler raises it now."""
    global _pending
    _pending = exc
    return _depth > 0


def checkpoint() -> None:
    """Raise the exception of a signal that arrived and has not reached the command's top."""
    global _pending
    exc, _pending = _pending, None
    if exc is not None:
        raise exc


def handled() -> None:
    """The exception of a signal reached the top of the command: nothing is pending."""
    global _pending
    _pending = None


@contextlib.contextmanager
def critical() -> Iterator[None]:
    """A section where a signal waits: a file being put in place or removed."""
    global _depth
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1


class Section:
    """A stretch of work whose end is critical from :meth:`hold` on (see :func:`section`)."""

    def __init__(self) -> None:
        self.held = False

    def hold(self) -> None:
        """From now to the end of the section, signals wait."""
        global _depth
        if not self.held:
            self.held = True
            _depth += 1


@contextlib.contextmanager
def section() -> Iterator[Section]:
    """Writing outputs and then putting them in place: signals stop the writing, and wait
    once :meth:`Section.hold` is called (after the last :func:`checkpoint`). A signal that
    waited until the outputs were in place is dropped: the run is complete."""
    global _depth
    held = Section()
    try:
        yield held
    finally:
        if held.held:
            _depth -= 1
            handled()


@contextlib.contextmanager
def quiet_threads() -> Iterator[None]:
    """Threads that libraries start inside (OpenBLAS's when NumPy is imported, zarr's event
    loop) block SIGINT and SIGTERM, as bn's workers do: threads start with the signal mask
    of the thread that made them."""
    if not hasattr(signal, "pthread_sigmask") or (
            threading.current_thread() is not threading.main_thread()):
        yield
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def start_zarr_quietly() -> None:
    """Start zarr's event-loop thread (made at its first use) with the signals blocked."""
    try:
        from zarr.core import sync
    except ImportError:
        return
    start = getattr(sync, "_get_loop", None)
    if start is not None:
        with quiet_threads():
            start()
