"""Ctrl-C, SIGTERM and SIGHUP in the driver: one handler for every phase, so an interrupt is never lost.

Python raises KeyboardInterrupt wherever the main thread happens to be; when that is a
finalizer or a weakref callback (SQLAlchemy, PyTorch), the exception is printed as "Exception
ignored in ..." and dropped, and the driver carries on. :func:`install` therefore also records
the press, and :func:`check` (called between epochs of the judge and between phases) raises it
again; the "ignored" report of such a KeyboardInterrupt is suppressed, every other one kept.

SIGTERM (how Slurm, Kubernetes, preemption and ``timeout`` stop a process) and SIGHUP (a closed
terminal or ssh session) are handled as Ctrl-C: each calls whatever handles SIGINT at that
moment (Tune's graceful stop during the trials, :func:`_on_sigint` elsewhere, nothing while a
clean-up step ignores SIGINT), and the first one received decides the exit status (128 + its
number). Ray replaces the SIGTERM handler in ``ray.init``, so :func:`install` runs again after it.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import Any

_pressed = threading.Event()
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)  # handled as Ctrl-C
_received: list[int] = []  # the stop signals received since install(), first first
NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP"}


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    _pressed.set()
    raise KeyboardInterrupt


def _on_stop(signum: int, frame: FrameType | None) -> None:
    """SIGTERM/SIGHUP: remember it, then do what SIGINT does now."""
    _received.append(signum)
    handler = signal.getsignal(signal.SIGINT)
    if handler is signal.SIG_IGN:  # a clean-up step that must finish: it ends as interrupted anyway
        _pressed.set()
        return
    if callable(handler):  # Tune's stop during the trials (it restores ours), else _on_sigint
        handler(signal.SIGINT, frame)
        _pressed.set()
        return
    _pressed.set()
    raise KeyboardInterrupt


def _unraisable(default: Any) -> Any:
    def hook(info: Any) -> None:
        if not (isinstance(info.exc_type, type) and issubclass(info.exc_type, KeyboardInterrupt)):
            default(info)

    return hook


def install() -> None:
    """Make SIGINT raise KeyboardInterrupt and remember it (also when the driver was started
    with SIGINT ignored, e.g. by ``nohup``). Only from the main thread; elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        return
    _pressed.clear()
    _received.clear()
    signal.signal(signal.SIGINT, _on_sigint)
    install_stop_signals()
    if getattr(sys.unraisablehook, "__name__", "") != "hook":
        sys.unraisablehook = _unraisable(sys.unraisablehook)


def install_stop_signals() -> None:
    """Handle SIGTERM and SIGHUP as Ctrl-C (again after ``ray.init``, which replaces SIGTERM's)."""
    if threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            signal.signal(signum, _on_stop)


def signal_number() -> int:
    """The signal that stopped the driver: the first SIGTERM/SIGHUP received, else SIGINT."""
    return _received[0] if _received else int(signal.SIGINT)


def cause() -> str:
    """How the driver was stopped, for its messages: ``Ctrl-C``, ``SIGTERM`` or ``SIGHUP``."""
    return NAMES.get(signal_number(), f"signal {signal_number()}")


def pressed() -> bool:
    """Whether Ctrl-C was pressed since :func:`install`."""
    return _pressed.is_set()


def check() -> None:
    """Raise KeyboardInterrupt if Ctrl-C was pressed (an interrupt Python may have dropped)."""
    if _pressed.is_set():
        raise KeyboardInterrupt


def ignore() -> Any:
    """Ignore SIGINT (for clean-up that must finish); returns the handler to restore."""
    return signal.signal(signal.SIGINT, signal.SIG_IGN)
