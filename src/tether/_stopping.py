"""The server-side half of a guard's stop: why it stops, and what it then asks the server.

``ResponseGuard.stop`` (``_protocol.py``) is the one way out and says when and how each
step runs: once, bounded by ``grace``, in critical sections, the HTTP stream closed first,
queued when every cancel slot of its client is taken. The steps it runs after the close, in
order, are here, in `StopSteps`, the guard's base class just above the read path
(``StreamReader``, ``_reading.py``):

1. why it stops (``mark_reason``, ``reason_for``): the ``EndReason`` on the outcome;
2. ``_cancel_now``, if the server has anything to stop (``_cancel_needed``): a
   non-background response stops when its connection closes (``_disconnected``); a
   background one is cancelled holding one of its client's cancel slots (``_take_slot``;
   ``_stop_queued`` when it had to queue for one), ``_cancel_in_slot``:
   ``_cancel_on_server`` (``_cancel.cancel_on_server``), then ``_verify``, the read-back of
   a best-effort ``cancelled`` answer, in the same slot;
3. ``_drain``: the SDK's half-run generators finished;
4. ``_forget``: the journal entry removed once the response is known to have stopped.

``_ended_on_its_own`` says whether a stop has anything an interruption could cut short;
when it has not, ``stop`` runs it in its own task, without ``run_critical``'s child task.
A failure of a step is reported on the outcome, never raised (``_cleanup_failed``). The
class holds no state of its own: what it learns (the reason, the receipt, a cleanup error)
is declared with the guard's other facts in ``_facts.py``.
"""

from __future__ import annotations

import anyio
from anyio.lowlevel import cancel_shielded_checkpoint

from . import observe
from ._cancel import (
    cancel_on_server,
    cancel_slots,
    log,
    needs_verifying,
    verify_cancel,
)
from ._compat import cancel_cause, drain_sdk_stream, lean_target, sdk_stream_released
from ._journal_bound import within
from ._lifecycle import State
from ._outcome import CancelReceipt, EndReason
from ._reading import UNKNOWN, StreamReader

__all__ = ["StopSteps"]

_JOURNAL_FLOOR = 0.05  # seconds a journal removal gets even when grace is spent


class StopSteps(StreamReader):
    """The server-side half of a guard's stop (internal): the steps ``stop`` runs."""

    __slots__ = ()

    # ------------------------------------------------------------ the reason

    def mark_lost(self) -> None:
        """Mark this stream as the loser of a race, before its scope is cancelled."""
        self.mark_reason("race_lost")

    def mark_reason(self, reason: EndReason) -> None:
        """Say why the stream will stop, before the cancellation that stops it arrives."""
        if self._reason is None:
            self._reason = reason

    def reason_for(self, exc: BaseException | None) -> EndReason:
        if self._reason is not None:
            return self._reason
        if self._stall is not None:
            return "stalled"
        if exc is None:
            if self._finished == "cancelled":
                return "cancelled"
            if self._finished is not None:
                return "completed" if self._finished == "completed" else self._finished  # type: ignore[return-value]
            return "break"
        if isinstance(exc, anyio.get_cancelled_exc_class()):
            return "deadline" if cancel_cause(exc) == "deadline" else "scope_cancelled"
        if isinstance(exc, KeyboardInterrupt):
            return "interrupted"
        if isinstance(exc, GeneratorExit):  # an async generator around the block was closed
            return "break"
        return "exception"

    # ------------------------------------------------------------ the server

    def _ended_on_its_own(self) -> bool:
        """Whether this stop has nothing that an interruption could cut short.

        True when the response finished (its final event read), its events were read to
        their end, nothing was journaled, and the SDK's own close of the stream completed
        (its connection is back in its pool). The stop then has no cancel to send and no
        entry to remove, and its close and drain do not wait, so it runs in this task.
        ``run_critical``'s child task (some 40-60 us on this machine) is for the stops
        that have a cancel or a journal entry to finish.
        """
        return (
            self._state is State.STOPPING
            and self._reached is State.EXHAUSTED
            and self._finished is not None
            and self._intent is None
            and sdk_stream_released(self._sdk)
        )

    def _cancel_needed(self) -> bool:
        return (
            self._finished is None and self._response_id is not None and self._reason != "detached"
        )

    def _take_slot(self) -> bool:
        try:
            cancel_slots(self._scope.client).acquire_on_behalf_of_nowait(self)
        except anyio.WouldBlock:
            return False
        return True

    def _disconnected(self) -> None:
        # The server stops a non-background response when its connection closes; what it
        # last reported (in_progress) is no longer true, and nothing says more.
        self._status = None
        self._receipt = CancelReceipt(
            response_id=self._response_id or "", kind="disconnect", status=None
        )

    async def _cancel_now(self, deadline: float) -> bool:
        """Stop the response on the server if it runs there: ``False`` when every cancel
        slot of its client is taken (``stop`` then queues for one, and ``_stop_queued``
        runs ``_cancel_in_slot`` once it has it)."""
        if not self._cancel_needed():
            return True
        if not self._background:
            self._disconnected()
        elif not self._take_slot():
            return False
        else:
            # One turn of the loop first: when many streams stop at once, their closes then
            # run before the cancels, which otherwise pay for every still-open connection in
            # the pool's assignment pass (100 race losers: 2.8x one cancel with it, 3.1x
            # without).
            await cancel_shielded_checkpoint()
            await self._cancel_in_slot(deadline)
        return True

    async def _cancel_in_slot(self, deadline: float) -> None:
        """The cancel and its read-back, in the cancel slot taken for them (released after)."""
        try:
            await self._cancel_on_server(deadline)
            await self._verify(deadline)
        finally:
            cancel_slots(self._scope.client).release_on_behalf_of(self)

    async def _cancel_on_server(self, deadline: float) -> None:
        """The server-side cancel, holding one of the client's cancel slots."""
        response_id = self._response_id or ""
        watched = observe.watched()
        if watched:
            observe.emit(
                observe.StreamEvent.CancelStarted(
                    id=self.node, response_id=response_id, reason=self._reason or ""
                )
            )
        client = self._scope.client
        sdk = self._sdk
        self._receipt = await cancel_on_server(
            client,
            response_id,
            grace=max(deadline - anyio.current_time(), 1e-3),
            lean=None if sdk is None else lean_target(client, sdk),
            slot_held=True,
        )
        if watched:
            observe.emit(observe.StreamEvent.CancelEnded(id=self.node, receipt=self._receipt))
        if self._receipt.status:
            self._status = self._receipt.status

    async def _verify(self, deadline: float) -> None:
        """A ``cancelled`` answer is best effort: read back what the server finally did,
        within what is left of grace (one ``retrieve`` when the cancel was honoured), still
        holding the cancel slot: the slots bound the stop's whole talk with the server (a
        thousand read-backs sent at once made a thousand stops 1.2x slower; docs/benchmarks.md).
        Until it is read, the journal keeps the entry (``_forget``). Not with
        ``confirm=False``: the scope trusts the answer."""
        receipt = self._receipt
        if not self._scope.confirm or receipt is None or not needs_verifying(receipt):
            return
        client = self._scope.client
        sdk = self._sdk
        verified = await verify_cancel(
            client,
            receipt,
            deadline=deadline,
            lean=None if sdk is None else lean_target(client, sdk),
        )
        self._receipt = verified
        if verified.status:
            self._status = verified.status
        if verified.status not in ("cancelled", "gone") and observe.watched():
            observe.emit(observe.StreamEvent.CancelOverruled(id=self.node, receipt=verified))

    # ------------------------------------------------------- after the cancel

    async def _drain(self) -> None:
        if self._sdk is not None:
            # After the cancel: finish the SDK's half-run generators (never waits).
            await drain_sdk_stream(
                self._sdk, None if self._sdk_inner is UNKNOWN else self._sdk_inner
            )

    async def _forget(self, deadline: float) -> None:
        """Remove the journal entry once the response is known to have stopped, within grace.

        Kept (for ``tether reap``): a response whose cancel was not confirmed, a request whose
        ``response.created`` never came (the server may have started it), and an entry the
        journal could not remove in time (the failure is on the outcome and in the log).
        """
        journal = self._scope.journal
        if journal is None or self._intent is None:
            return
        receipt = self._receipt
        if self._scope.confirm and needs_verifying(receipt):
            return  # the server's final word was not read: it may still be generating
        if not (
            self._finished is not None
            or self._reason == "detached"
            or (receipt is not None and receipt.stopped)
            or (self._response_id is None and self._stall != "first_event")
        ):
            return
        intent = self._intent
        problem = await within(
            max(deadline, anyio.current_time() + _JOURNAL_FLOOR), lambda: journal.finished(intent)
        )
        if problem is not None:
            message = f"journal: could not remove the entry of {self._response_id} ({problem}); it stays for reap"
            self._cleanup_error = self._cleanup_error or message
            log.warning("%s", message)

    def _cleanup_failed(self, exc: Exception) -> None:
        self._cleanup_error = f"{type(exc).__name__}: {exc}"
        log.warning("cleanup of response %s failed: %s", self._response_id, exc)
