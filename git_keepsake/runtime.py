"""The recording process's policy: strict mode, stderr lines, the exit and at-fork handlers, and
the guard that keeps keepsake from breaking a training script.

Everything here is process-wide and owned once: the one exit handler stops this process's
running experiments and then waits for its writers, in that order, whatever was imported first;
the one at-fork handler makes a forked child forget both (a data-loader worker must neither
wait on writes only the parent will do, nor tidy away the parent's staging folder).
"""

from __future__ import annotations

import atexit
import functools
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from .errors import InvalidArgument, KeepsakeError
from .text import printable

PREFIX = "git-keepsake"


def strict() -> bool:
    """GIT_KEEPSAKE_STRICT=1 turns warnings about failed writes into exceptions (the test suite
    sets it), so a failure can't hide behind a line on stderr."""
    return os.environ.get("GIT_KEEPSAKE_STRICT", "") not in ("", "0")


def say(message: str) -> None:
    """One line on stderr, for the user running the script. Messages quote file names, params
    and storage contents: escaped, so none can steer the terminal or forge a line."""
    print(f"{PREFIX}: {printable(message)}", file=sys.stderr, flush=True)


def warn(message: str) -> None:
    say(f"warning: {message}")


def warn_or_raise(error: KeepsakeError, consequence: str = "") -> None:
    """A failure training survives: raised in strict mode, else one warning line."""
    if strict():
        raise error
    warn(f"{error.message}{consequence}")


# Refusals told lately, per repository: one refusal is one line, however many writes it
# refuses, and whichever thread (the writer, the heartbeat) meets it first. Told again after
# a while: a notebook may record into a refusing repository for hours.
TELL_AGAIN_SECONDS = 600.0
_told: dict[tuple[str, str], float] = {}
_told_lock = threading.Lock()


def tell_once(error: BaseException, message: str, repository_url: str) -> None:
    """Warn `message` about a failed write, unless the same refusal by the same repository
    was told in the last TELL_AGAIN_SECONDS."""
    key = (repository_url, root_cause(error))
    now = time.monotonic()
    with _told_lock:
        if now - _told.get(key, -TELL_AGAIN_SECONDS) < TELL_AGAIN_SECONDS:
            return
        _told[key] = now
    warn(message)


def root_cause(error: BaseException) -> str:
    """What a failure comes down to, the same for every file refused the same way: an OS
    error's errno, not its message (a read-only folder names each key's own path)."""
    while error.__cause__ is not None:
        error = error.__cause__
    if isinstance(error, OSError) and error.errno is not None:
        return f"{type(error).__name__}:{error.errno}"
    return str(error)


# --- the guard around public recording calls ---

F = TypeVar("F", bound=Callable[..., Any])


def never_breaks_training(method: F) -> F:
    """Keepsake should never break your training: a recording call that fails, or is called
    wrongly, says so in one line on stderr and returns None, and the script goes on (as
    Keepsake 0.4.2 did). Strict mode raises instead."""

    @functools.wraps(method)
    def guarded(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except InvalidArgument as e:  # the caller's mistake: nothing was recorded
            if strict():
                raise
            say(f"error: {e}; nothing recorded, training goes on")
        except (KeepsakeError, OSError) as e:
            if strict():
                raise
            warn(f"{e}; training goes on")
        except Exception as e:  # a bug of ours: the script must outlive it
            if strict():
                raise
            warn(f"internal error in {method.__qualname__}: {e!r}; training goes on")
        return None

    return guarded  # type: ignore[return-value]


# --- what this process records: stopped and flushed at exit, forgotten in a forked child ---


class Stoppable(Protocol):
    def stop(self) -> None: ...


class Flushable(Protocol):
    def flush(self, timeout: float | None = None) -> bool: ...

    def close_session(self) -> None: ...

    def report_interrupted(self) -> None: ...


running: set[Stoppable] = set()  # experiments started here and not stopped yet
writers: weakref.WeakSet = weakref.WeakSet()  # every background writer of this process
_interrupted = False


def interrupted() -> bool:
    """Whether Ctrl-C ended a wait for writes: this process waits for none from then on."""
    return _interrupted


def interrupt_waiting() -> None:
    """Ctrl-C while stop() or exit waits for writes (an outage can make that long): stop
    waiting, for good, and let each writer say what it leaves staged (one line each)."""
    global _interrupted
    if _interrupted:
        return
    _interrupted = True
    for writer in list(writers):
        writer.report_interrupted()


def _at_exit() -> None:
    """Stop every running experiment (each waits for its writes), then wait for whatever else
    is queued and remove the session folders that are empty. Ctrl-C ends the wait."""
    try:
        for experiment in list(running):
            try:
                experiment.stop()
            except KeyboardInterrupt:
                raise
            except Exception as e:  # exit must not turn into a traceback
                warn(str(e))
        for writer in list(writers):
            writer.flush()
            writer.close_session()
    except KeyboardInterrupt:
        interrupt_waiting()


def _in_forked_child() -> None:
    running.clear()
    writers.clear()


def _register_exit_handler() -> None:
    """Run `_at_exit` before the interpreter shuts down thread pools. concurrent.futures stops
    taking work at the start of shutdown (threading's own exit hooks, which run before atexit's)
    and boto3 and google-cloud-storage upload through such pools: a plain atexit handler found
    them closed, and every write left at exit failed ("cannot schedule new futures after
    interpreter shutdown") and was retried for minutes. threading's hooks run last-registered
    first, so ours goes in after concurrent.futures' own."""
    import concurrent.futures.thread  # noqa: F401  (registers its hook first)

    register = getattr(threading, "_register_atexit", None)
    if register is None:  # not CPython's threading: the best we can do
        atexit.register(_at_exit)
    else:
        register(_at_exit)


_register_exit_handler()
os.register_at_fork(after_in_child=_in_forked_child)
