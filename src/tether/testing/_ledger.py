"""The emulator's ledger: what the server did, readable by tests while it runs.

The server thread writes the records (through the ledger's book, `_book.py`); tests read
them from any thread and wait on them with
[`ResponsesEmulator.wait_for`][tether.testing.ResponsesEmulator.wait_for], which is woken on
every change, on asyncio or trio, without polling.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, Literal, final

import attrs

from ._book import LedgerBook

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["Ledger"]

Status = Literal["queued", "in_progress", "completed", "failed", "incomplete", "cancelled"]


@final
class Ledger:
    """Every response the emulator created, and counters over all requests.

    One [`Ledger.Record`][tether.testing.Ledger.Record] per response. Written by the server
    thread, read by tests from any thread. Use `ResponsesEmulator.wait_for` to wait for a
    condition on it.

    Example:
        >>> def no_orphans(ledger: Ledger) -> bool:
        ...     return not ledger.orphans() and ledger.cancels_in_flight == 0
    """

    @final
    @attrs.define(kw_only=True, eq=False)
    class Record:
        """What happened to one response on the emulated server.

        The server thread updates the record as the response runs; reading a field from
        another thread is safe (each one is a single atomic write). Times are
        `time.monotonic()` seconds.

        Example:
            >>> def stopped_on_cancel(record: Ledger.Record) -> bool:
            ...     return record.status == "cancelled" and record.stopped_by == "cancel"
        """

        id: str
        """The response id (`resp_...`)."""

        model: str
        """The model name it was created with."""

        background: bool
        """Whether it was created with `background=true`."""

        stream: bool
        """Whether it was created with `stream=true`."""

        status: Status = "queued"
        """The current status, as `GET /v1/responses/{id}` reports it."""

        tokens_generated: int = 0
        """Output tokens generated so far."""

        tokens_after_cancel: int = 0
        """Output tokens generated after the first cancel request for it arrived."""

        cancel_calls: int = 0
        """Cancel requests received for it."""

        cancel_statuses: list[int] = attrs.field(factory=list[int])
        """The HTTP status of each cancel answered, in order."""

        created_at: float = attrs.field(factory=time.monotonic)
        """When the create request was accepted."""

        cancel_requested_at: float | None = None
        """When the first cancel request for it arrived."""

        finished_at: float | None = None
        """When it reached a final status."""

        listeners: int = 0
        """Clients currently connected to it (streams, and blocking non-stream requests)."""

        created_sent: bool = False
        """Whether `response.created` was emitted (False while held by `hold("created")`)."""

        stopped_by: Literal["cancel", "disconnect"] | None = None
        """What stopped it early: a cancel request, or its client disconnecting."""

        tokens_planned: int = 0
        """The output tokens it would have generated had nobody stopped it (its text and
        function call arguments, capped by `max_output_tokens` and by an error fault)."""

        cancel_reported_status: Status | None = None
        """The `status` the first cancel answered with 200 said (`"cancelled"`), whatever
        happened next: with `Faults(cancel_best_effort=...)` the response goes on and may
        end `completed`, which `status` then shows."""

        request_id: str = ""
        """The `x-request-id` of the create request that made it (`req_...`)."""

        store: bool = True
        """Whether it was created with `store` (the default); a `store=false` response
        answers 404 to retrieve, resume, cancel, delete and input_items."""

        deleted: bool = False
        """Whether `DELETE /v1/responses/{id}` removed it (it then answers 404 everywhere)."""

        cancel_headers: dict[str, str] = attrs.field(factory=dict[str, str], repr=False)
        """The headers of the last cancel request it got (names lower-cased)."""

        frames: list[bytes] = attrs.field(factory=list[bytes], repr=False)
        """The stored SSE frames, one per event (internal: read `events`)."""

        @property
        def generating(self) -> bool:
            """True while the response is queued or in progress.

            Example:
                >>> Ledger.Record(id="resp_1", model="m", background=True, stream=True).generating
                True
            """
            return self.status in ("queued", "in_progress")

        @property
        def tokens_saved(self) -> int:
            """Output tokens a stop saved: those it would have generated, minus those it did.

            "Saved" is `tokens_planned - tokens_generated` for a response stopped early
            (by a cancel that took effect, or by its client disconnecting); 0 for one that
            ran to its end, or still runs. A best-effort cancel that the response outran
            (`Faults(cancel_best_effort=...)`, ended `completed`) saves only the tokens it
            cut from the text.

            Example:
                >>> record = Ledger.Record(id="r", model="m", background=True, stream=True)
                >>> record.tokens_planned, record.tokens_generated = 100, 30
                >>> record.status, record.stopped_by = "cancelled", "cancel"
                >>> record.tokens_saved
                70
            """
            if self.generating or (self.stopped_by is None and self.cancel_reported_status is None):
                return 0
            return max(0, self.tokens_planned - self.tokens_generated)

        @property
        def events(self) -> list[dict[str, Any]]:
            """The stored events, decoded, in sequence order.

            Example:
                >>> Ledger.Record(id="resp_1", model="m", background=True, stream=True).events
                []
            """
            frames = list(self.frames)
            return [json.loads(f[f.index(b"\ndata: ") + 7 :]) for f in frames]

    def __init__(self, book: LedgerBook | None = None) -> None:
        """A view of *book* (the emulator passes its own; a new empty one by default)."""
        self._book = LedgerBook() if book is None else book

    @property
    def request_count(self) -> int:
        """POST /v1/responses requests received, rejected ones included."""
        return self._book.request_count

    @property
    def cancel_requests(self) -> int:
        """Cancel requests received, for any id."""
        return self._book.cancel_requests

    @property
    def cancels_in_flight(self) -> int:
        """Cancel requests received and not answered yet."""
        return self._book.cancels_in_flight

    @property
    def max_concurrent_cancels(self) -> int:
        """The most cancel requests ever in flight at once."""
        return self._book.max_concurrent_cancels

    @property
    def requests(self) -> int:
        """The same as `request_count` (an older name, kept for now: it reads as a list).

        Example:
            >>> Ledger().requests
            0
        """
        return self.request_count

    def tokens_after_cancel(self, response_id: str | None = None) -> int:
        """Output tokens generated after a cancel arrived: for one response, or all of them.

        Raises:
            KeyError: No response has this id.

        Example:
            >>> Ledger().tokens_after_cancel()
            0
        """
        if response_id is not None:
            return self[response_id].tokens_after_cancel
        return sum(record.tokens_after_cancel for record in self.responses)

    def tokens_saved(self, response_id: str | None = None) -> int:
        """Output tokens that stops saved: for one response, or all of them.

        A response's saving is what it would have generated had nobody stopped it,
        minus what it generated (see `Ledger.Record.tokens_saved`).

        Raises:
            KeyError: No response has this id.

        Example:
            >>> Ledger().tokens_saved()
            0
        """
        if response_id is not None:
            return self[response_id].tokens_saved
        return sum(record.tokens_saved for record in self.responses)

    @property
    def responses(self) -> list[Ledger.Record]:
        """The records of every response created, in creation order.

        Example:
            >>> Ledger().responses
            []
        """
        with self._book.lock:
            return list(self._book.records.values())

    def __getitem__(self, response_id: str) -> Ledger.Record:
        """The record of one response.

        Raises:
            KeyError: No response has this id.

        Example:
            >>> "resp_x" in Ledger()
            False
        """
        with self._book.lock:
            return self._book.records[response_id]

    def __contains__(self, response_id: object) -> bool:
        with self._book.lock:
            return response_id in self._book.records

    def __iter__(self) -> Iterator[Ledger.Record]:
        return iter(self.responses)

    def __len__(self) -> int:
        with self._book.lock:
            return len(self._book.records)

    def orphans(self) -> list[Ledger.Record]:
        """Responses still generating (queued or in progress) with no client listening.

        Each one is compute the caller pays for and never reads: what tether prevents.

        Example:
            >>> Ledger().orphans()
            []
        """
        return [r for r in self.responses if r.generating and r.listeners == 0]
