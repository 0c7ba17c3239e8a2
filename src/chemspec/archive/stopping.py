"""Ctrl-C, SIGTERM and SIGHUP stop a pull cleanly: the folder it was assembling is removed and the command exits
130. Each signal raises KeyboardInterrupt where it lands; code running then may swallow it (a finalizer, whose
exceptions Python ignores, or a library's own handler), so the pull asks again between its steps."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator

SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


@contextlib.contextmanager
def stoppable() -> Iterator[Callable[[], None]]:
    """Yield a check that raises KeyboardInterrupt once any of SIGNALS has arrived inside the block; outside the
    main thread, where Python delivers no signals, the check does nothing."""
    caught: list[int] = []

    def stop(signum: int, _frame) -> None:
        caught.append(signum)
        raise KeyboardInterrupt

    def check() -> None:
        if caught:
            raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield check
        return
    previous = {number: signal.signal(number, stop) for number in SIGNALS}
    try:
        yield check
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
