"""Stopping the driver: Ctrl-C, SIGTERM and SIGHUP, one handler for every phase so that an
interrupt is never lost, and :class:`Interrupted`, the one line a stopped sweep ends with.

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

import argparse
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

from sweep.cli import rerun_command

if TYPE_CHECKING:
    from sweep.config import SweepConfig

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


def quietly(fn: Callable[[], Any]) -> None:
    """Run a clean-up step with Ctrl-C ignored, so a second Ctrl-C cannot cut it short."""
    previous = ignore()
    try:
        fn()
    finally:
        signal.signal(signal.SIGINT, previous)


class Interrupted(Exception):
    """A stopped sweep: ``message`` says what was kept; ``resume`` whether ``--resume`` continues it."""

    def __init__(self, cfg: SweepConfig, args: argparse.Namespace, message: str, resume: bool = False):
        super().__init__(message)
        self.cfg, self.cli, self.message, self.resume = cfg, args, message, resume  # (Exception owns .args)

    def line(self) -> str:
        """The one line the driver prints: what was kept and the exact command that continues."""
        by = "" if signal_number() == signal.SIGINT else f"by {cause()} "
        verb = "continue with" if self.resume else "start it again with"
        command = rerun_command(self.cfg, self.cli, self.resume)
        return f"sweep {self.cfg.name!r} interrupted {by}{self.message}; {verb}: {command}"

    def exit(self) -> int:
        """Print :meth:`line`; the exit status: 130 Ctrl-C, 143 SIGTERM, 129 SIGHUP."""
        print(f"\n{self.line()}", flush=True)
        return 128 + signal_number()


