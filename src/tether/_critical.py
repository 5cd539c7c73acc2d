"""The one seam for what anyio's shields cannot stop: native asyncio cancellation and Ctrl-C.

Two parts of the cancel protocol must run to their end once started: the open, from the
moment the request leaves until the response's id is known (else the server runs a
response nobody can cancel), and the stop (close, then the server-side cancel within
grace). ``CancelScope(shield=True)`` protects them from anyio's own cancellation, but not
from

- a **native asyncio cancellation**: ``asyncio.timeout()``, ``asyncio.wait_for()``, an
  ``asyncio.TaskGroup`` whose sibling failed, a supervisor's ``task.cancel()``, and Ctrl-C
  under ``asyncio.run``/``anyio.run`` (Python 3.11+ cancels the main task on SIGINT): all
  call ``Task.cancel()``, which anyio cannot shield;
- **Ctrl-C on trio**: ``KeyboardInterrupt`` is raised in the main task at its next
  checkpoint, shielded or not.

Both hit one task: the one running the code. So [`run_critical`][] runs the section in a
child task of its own (structured: a task group bounds it), and the calling task only
waits for it. If that wait is interrupted (an anyio cancellation, a native
``CancelledError``, a ``KeyboardInterrupt``), the section is told (``abort``: the open
gives up if its request has not left yet) and awaited to its end, which is bounded by the
section's own deadline, and only then does the interruption go on, the very same exception
object, so that ``asyncio.timeout`` still raises ``TimeoutError`` and ``Task.cancelling()``
keeps its count (the cancel request is never ``uncancel``-ed here), and ``TaskGroup`` and
``asyncio.run``'s Ctrl-C handling keep their semantics. On trio the child's code is
KI-protected, so a SIGINT arriving while it runs is delivered to the main task's wait,
not into the section.

A wait that loses nothing when it is interrupted (a cancel queued for a free slot) needs no
child task: [`run_critical_queued`][] waits in the calling task, keeps the first interruption
and waits on, bounded by a deadline, then runs what follows as a critical section. A thousand stops queued at once then cost a waiter each,
not a task each (``benchmarks/bench_memory.py``).

**Ctrl-C inside a scope on trio** is the scope's own ([`ctrl_c_cancels`][]). trio raises
``KeyboardInterrupt`` at the very bytecode the main thread runs when it is not KI-protected,
and that may be code whose exceptions the interpreter ignores: a weakref callback, an
``isinstance`` check made from C inside a finalizer ("Exception ignored in: ..."). The
interrupt is then lost: no stop runs and the responses keep generating (the fleet soak,
``tests/fleet_soak.py``, saw it). So while a scope is open on trio (main thread, trio's own
SIGINT handler in place), tether's handler takes SIGINT: it raises nothing where it lands,
only schedules (``TrioToken.run_sync_soon``, signal-safe) the cancellation of every open
scope, each of its streams marked ``interrupted``; each scope raises ``KeyboardInterrupt`` at
its exit, after its stops, as ``asyncio.run`` does on Python 3.11+. A second Ctrl-C, once
every open scope has been told, goes to trio's handler: the way out of a stop that hangs.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Generator
    from types import FrameType

_F = TypeVar("_F", bound="Callable[..., Any]")

__all__ = ["CtrlC", "ctrl_c_cancels", "ki_protected", "run_critical", "run_critical_queued"]

_log = logging.getLogger("tether")


class _Box:
    __slots__ = ("error",)

    def __init__(self) -> None:
        self.error: BaseException | None = None


async def _child(work: Callable[[], Awaitable[None]], box: _Box, done: anyio.Event) -> None:
    try:
        await work()
    except BaseException as exc:  # handed to the waiting task, which re-raises it
        box.error = exc
    finally:
        done.set()


_KI_PROTECTED: list[Callable[..., Any]] = [_child]
_ki_registered = 0  # how many of them trio knows about


def ki_protected(function: _F) -> _F:
    """Mark *function*'s code KI-protected under trio (registered when trio first runs here).

    Ctrl-C then reaches it at one of its awaits (where the code expects interruptions),
    never between two of its lines; elsewhere it changes nothing.
    """
    _KI_PROTECTED.append(function)
    return function


def _protect_on_trio() -> None:
    """Register the KI-protected functions with trio, when first running under trio."""
    global _ki_registered
    trio: Any = sys.modules.get("trio")  # never imported here: only used if already running
    if _ki_registered == len(_KI_PROTECTED) or trio is None:
        return
    try:
        trio.lowlevel.current_task()
    except RuntimeError:  # not running under trio
        return
    for function in _KI_PROTECTED[_ki_registered:]:
        trio.lowlevel.enable_ki_protection(function)
    _ki_registered = len(_KI_PROTECTED)


async def run_critical(
    what: str, work: Callable[[], Awaitable[None]], abort: Callable[[], None] | None = None
) -> None:
    """Run *work* to its end in a child task, even if this task is interrupted meanwhile.

    Args:
        what: What the section does, for the log (``"open"``, ``"stop"``).
        work: The section; it must bound its own waits (deadlines, ``move_on_after``).
        abort: Called once if this task is interrupted before *work* ends (e.g. give up a
            request that has not left yet); *work* still runs to its end. Without it, only
            what anyio cannot shield (native cancellation, Ctrl-C) interrupts the wait.

    Raises:
        BaseException: The interruption (first one, unchanged) if there was one, else
            whatever *work* raised, unwrapped.
    """
    _protect_on_trio()
    box = _Box()
    done = anyio.Event()
    interruption: BaseException | None = None
    async with anyio.create_task_group() as tg:
        tg.start_soon(_child, work, box, done)
        try:
            # Without *abort* there is nothing to do early: anyio's cancellation waits too.
            with anyio.CancelScope(shield=abort is None):
                await done.wait()
        except BaseException as exc:  # anyio or native cancellation, KeyboardInterrupt
            interruption = exc
            _log.debug("interrupted by %r: finishing the %s first", exc, what)
            if abort is not None:
                abort()
            with anyio.CancelScope(shield=True):
                while not done.is_set():
                    try:
                        await done.wait()
                    except BaseException:
                        continue
    if interruption is not None:
        raise interruption
    if box.error is not None:
        raise box.error


@ki_protected
async def run_critical_queued(
    what: str,
    take: Callable[[], Awaitable[None]],
    work: Callable[[bool], Awaitable[None]],
    deadline: float,
) -> None:
    """Wait in this task for *take* until *deadline*, then run *work* like `run_critical`.

    *take* must lose nothing when interrupted and be safe to call again (taking a slot of a
    ``CapacityLimiter``: an interrupted waiter leaves its queue and joins it again), so it
    needs no child task: an interruption (a native asyncio cancellation, Ctrl-C) is kept,
    the first one, and the wait goes on; anyio's own cancellation is shielded. *work* is
    told whether *take* returned in time (it then owns what was taken) and always runs.
    On trio this function's code is KI-protected: Ctrl-C arrives at one of its awaits,
    never between taking the slot and handing it to *work*.

    Raises:
        BaseException: The first interruption, unchanged, once *work* has ended.
    """
    _protect_on_trio()
    interruption: BaseException | None = None
    taken = False
    while True:
        try:
            # anyio tells its own deadline apart from a native cancellation: the scope
            # swallows the first; the second comes out of it, and is kept.
            with anyio.CancelScope(shield=True, deadline=deadline):
                await take()
                taken = True
            break
        except Exception:
            raise
        except BaseException as exc:  # native cancellation or Ctrl-C: keep it, wait on
            if interruption is None:
                interruption = exc
                _log.debug("interrupted by %r: waiting on to %s first", exc, what)
    try:
        await run_critical(what, lambda: work(taken))
    except BaseException as exc:  # the interruption run_critical kept, raised once done
        interruption = interruption or exc
    if interruption is not None:
        raise interruption


# ------------------------------------------------------------------ Ctrl-C in a scope (trio)


class CtrlC:
    """Ctrl-C for one open scope: whether it came, and what it cancels (see `ctrl_c_cancels`)."""

    __slots__ = ("_on_interrupt", "_scope", "interrupted")

    def __init__(self, scope: anyio.CancelScope, on_interrupt: Callable[[], None]) -> None:
        self._scope = scope
        self._on_interrupt = on_interrupt
        self.interrupted = False
        """Whether a SIGINT came while the block ran (the scope must raise ``KeyboardInterrupt``)."""

    def deliver(self) -> None:
        """Say why (``on_interrupt``), then cancel the scope (from the event loop)."""
        self._on_interrupt()
        self._scope.cancel("tether: Ctrl-C (SIGINT)")


_watchers: list[CtrlC] = []  # the open scopes that own SIGINT, in the main thread's trio run
_handed_over: list[Any] = []  # [trio's handler, the run's TrioToken] while tether's is installed


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    """SIGINT while scopes are open: raise nothing here, tell them from the event loop."""
    if not _handed_over:  # reinstalled by someone who saved it, after the last scope left
        signal.default_int_handler(signum, frame)
        return
    previous, token = _handed_over
    told = [watcher for watcher in _watchers if not watcher.interrupted]
    if not told:  # every open scope knows already: a second Ctrl-C is trio's own
        previous(signum, frame)
        return
    for watcher in told:
        watcher.interrupted = True  # from now on, the scope's exit raises KeyboardInterrupt
    try:
        token.run_sync_soon(_deliver, told)
    except RuntimeError:  # the run is finishing (RunFinishedError): trio's own way
        previous(signum, frame)


def _deliver(told: list[CtrlC]) -> None:
    for watcher in told:
        watcher.deliver()


def _take_sigint() -> bool:
    """Install tether's SIGINT handler if this is trio's main-thread run; whether it is in."""
    trio: Any = sys.modules.get("trio")  # never imported here: only used if already running
    if trio is None or threading.current_thread() is not threading.main_thread():
        return False
    try:
        token = trio.lowlevel.current_trio_token()
    except RuntimeError:  # not running under trio
        return False
    if _handed_over:  # another scope of this run took it already
        return _handed_over[1] is token
    previous = signal.getsignal(signal.SIGINT)
    # Only trio's own KI handler is replaced: a handler of the program's stays in charge.
    if not callable(previous) or getattr(previous, "__module__", None) != "trio._core._ki":
        return False
    signal.signal(signal.SIGINT, _on_sigint)
    _handed_over[:] = [previous, token]
    return True


def _give_sigint_back() -> None:
    previous, _ = _handed_over
    _handed_over.clear()
    if signal.getsignal(signal.SIGINT) is _on_sigint:  # unless someone replaced it meanwhile
        signal.signal(signal.SIGINT, previous)


@contextmanager
def ctrl_c_cancels(scope: anyio.CancelScope, on_interrupt: Callable[[], None]) -> Generator[CtrlC]:
    """While the block runs on trio, Ctrl-C cancels *scope* (after ``on_interrupt()``).

    The caller raises ``KeyboardInterrupt`` at the block's end if ``interrupted`` is set
    (*scope* may have been left by then: the cancel is then a no-op). Elsewhere (asyncio, whose runner cancels the main task on SIGINT from Python 3.11;
    a trio run outside the main thread; a SIGINT handler of the program's) this changes
    nothing and ``interrupted`` stays False. Scopes nest and overlap in any order: the first
    one in installs tether's handler, the last one out puts trio's back.
    """
    watcher = CtrlC(scope, on_interrupt)
    if not _take_sigint():
        yield watcher
        return
    _watchers.append(watcher)
    try:
        yield watcher
    finally:
        _watchers.remove(watcher)
        if not _watchers:
            _give_sigint_back()
