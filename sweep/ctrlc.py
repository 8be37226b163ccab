"""Ctrl-C in the driver: one handler for every phase, so an interrupt is never lost.

Python raises KeyboardInterrupt wherever the main thread happens to be; when that is a
finalizer or a weakref callback (SQLAlchemy, PyTorch), the exception is printed as "Exception
ignored in ..." and dropped, and the driver carries on. :func:`install` therefore also records
the press, and :func:`check` (called between epochs of the judge and between phases) raises it
again; the "ignored" report of such a KeyboardInterrupt is suppressed, every other one kept.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import Any

_pressed = threading.Event()


def _on_sigint(signum: int, frame: FrameType | None) -> None:
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
    signal.signal(signal.SIGINT, _on_sigint)
    if getattr(sys.unraisablehook, "__name__", "") != "hook":
        sys.unraisablehook = _unraisable(sys.unraisablehook)


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
