"""The fleet journal on Redis: entries, leases with the server's own TTLs, cancels by pub/sub.

The client is redis-py's *sync* client, each call in a worker thread (``anyio.to_thread``).
Measured on the machine this was written on (``GET`` round trips on loopback, 2,000 calls):
redis-py in a thread 307 µs (asyncio) / 347 µs (trio), coredis (anyio-native) 474 / 432 µs.
redis-py's async client is asyncio-only; the sync one works the same under both backends,
its pool is thread-safe, and it is not tied to one event loop. Every socket has a timeout
(``timeout``, 1 s by default) and a call is retried once on a fresh connection (a restarted
server), so no call holds a thread longer than about four timeouts; on a stop path the
caller does not wait that long: the thread is abandoned at grace (``_journal_bound``).

Layout (``prefix`` is ``tether:`` by default):

- ``{prefix}entry:{intent}``: a hash per entry, no TTL (an entry is never lost to expiry);
  ``{prefix}entries``: a sorted set of the intents by creation time.
- ``{prefix}owner:{instance}``: the owner's lease, a key with a TTL of ``lease``
  (``SET ... PX``): when the owner stops renewing, the server expires it.
- ``{prefix}claim:{intent}``: a reaper's claim (``SET NX PX``), taken in one Lua script that
  also checks the owner's lease is gone: two reapers never claim the same entry.
- ``{prefix}cancel``: the pub/sub channel of cancel requests (the payload is the key).

The server's failures: down when a scope opens, the open fails with a
[`JournalError`][tether.JournalError] naming the URL (never its password). Down or slow
mid-run, the stream's calls fail within the timeout (the stream stops rather than run an
unrecorded response), the heartbeat and the listener log, retry and reconnect. A restart
without persistence (or a failover to an empty replica) loses the entries, and every live
owner writes its own again at its next heartbeat: the heartbeat's one pipeline renews the
lease and asks ``EXISTS`` of each entry the owner holds (entries whose owner died meanwhile
are lost: persist, ``appendonly yes``, to keep those too).
A cancel request published while an owner's listener was reconnecting is not delivered:
[`request_cancel`][tether.request_cancel] reports it as not confirmed.
"""

from __future__ import annotations

import json
import time
import weakref
from typing import TYPE_CHECKING, Any, TypeVar, final

import anyio

from ._journal import DEFAULT_LEASE, JournalEntry, JournalError
from ._journal_bound import in_thread
from ._journal_lease import LeasedJournal
from ._redact import redact_url, scrub
from ._validate import check_str

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence


__all__ = ["RedisJournal"]

T = TypeVar("T")

_FIELDS = (
    "intent",
    "key",
    "response_id",
    "model",
    "base_url",
    "host",
    "pid",
    "owner",
    "created_at",
)
_POLL = 0.25  # the listener's longest wait for a message before it checks for cancellation

# KEYS: none (the keys are built from the prefix). ARGV: prefix, ttl ms, include_live, intents.
_CLAIM = """
local claimed = {}
for i = 4, #ARGV do
    local entry = ARGV[1] .. 'entry:' .. ARGV[i]
    local owner = redis.call('HGET', entry, 'owner')
    if owner and (ARGV[3] == '1' or redis.call('EXISTS', ARGV[1] .. 'owner:' .. owner) == 0) then
        if redis.call('SET', ARGV[1] .. 'claim:' .. ARGV[i], '1', 'NX', 'PX', ARGV[2]) then
            table.insert(claimed, redis.call('HGETALL', entry))
        end
    end
end
return claimed
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _fields(entry: JournalEntry) -> dict[str, str]:
    return {
        "intent": entry.intent,
        "key": entry.key or "",
        "response_id": entry.response_id or "",
        "model": entry.model or "",
        "base_url": entry.base_url,
        "host": entry.host,
        "pid": str(entry.pid),
        "owner": entry.owner,
        "created_at": repr(entry.created_at),
    }


def _entry(
    fields: dict[str, str],
    alive: bool,
    lease_until: float | None = None,
    process: str | None = None,
) -> JournalEntry:
    def opt(name: str) -> str | None:
        value = fields.get(name, "")
        return value or None

    return JournalEntry(
        intent=fields["intent"],
        key=opt("key"),
        response_id=opt("response_id"),
        model=opt("model"),
        base_url=fields["base_url"],
        host=fields["host"],
        pid=int(fields["pid"]),
        owner=fields["owner"],
        created_at=float(fields["created_at"]),
        alive=alive,
        lease_until=lease_until,
        owner_process=process,
    )


@final
class RedisJournal(LeasedJournal):
    """A journal on a Redis server, shared by every worker of a fleet, on any machine.

    Needs ``pip install "tether[redis]"`` (redis-py). Nothing connects until first used.

    Args:
        url: ``redis://[:password@]host:port/db``, ``rediss://...`` or ``unix://path``.
        lease: Seconds an owner's entries stay untouchable after its last renewal.
        timeout: Seconds each socket operation may take (connect, read, write).
        prefix: Prepended to every key and to the channel: several journals on one server.

    Example:
        ```python
        journal = tether.open_journal("redis://127.0.0.1:6379/0", lease=10.0)
        async with tether.open_scope(client, journal=journal) as scope: ...
        ```
    """

    def __init__(
        self,
        url: str,
        *,
        lease: float = DEFAULT_LEASE,
        timeout: float = 1.0,
        prefix: str = "tether:",
    ) -> None:
        check_str("url", url)
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {prefix!r}")
        super().__init__(lease=lease, timeout=timeout)
        try:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry
        except ImportError as exc:  # pragma: no cover - the extra is in dev
            raise ImportError(
                'a redis:// journal needs redis-py: pip install "tether[redis]"'
            ) from exc
        self.url = url
        """The server's URL (shown without its password)."""
        self.prefix = prefix
        """What every key and the channel start with."""
        redis_class: Any = redis.Redis
        self._redis: Any = redis_class.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1),
            health_check_interval=0,
        )
        self._claim_script: Any = self._redis.register_script(_CLAIM)
        # A journal dropped without close(): its pooled sockets are closed with it, not left
        # for the garbage collector (which warns about each, and closes them late).
        weakref.finalize(self, self._redis.connection_pool.disconnect)

    def __repr__(self) -> str:
        return f"RedisJournal({redact_url(self.url)!r})"

    def _where(self) -> str:
        return redact_url(self.url)

    def close(self) -> None:
        """Close the pooled connections (more are opened if the journal is used again).

        Example:
            ```python
            journal.close()
            ```
        """
        self._redis.connection_pool.disconnect()

    def _key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    async def _call(self, work: Callable[[], T], *, own_thread: bool = False) -> T:
        def run() -> T:
            try:
                return work()
            except Exception as exc:  # redis.RedisError, OSError: say where, never the password
                message = scrub(str(exc), self.url)
                raise JournalError(
                    f"the journal {self._where()} failed: {type(exc).__name__}: {message}"
                ) from None

        if not own_thread:
            return await in_thread(run)
        # The listener holds its thread for the scope's lifetime: not one of the shared pool's;
        # it sees the cancellation within _POLL and closes its connection before attach exits.
        return await in_thread(run, limiter=anyio.CapacityLimiter(1), settle=self.timeout)

    # ------------------------------------------------------------- the stream's

    async def intend(
        self, intent: str, *, key: str | None, model: str | None, base_url: str
    ) -> None:
        """Record an intent (see [`Journal`][tether.journal.Journal])."""
        entry = self._entry(intent, key=key, model=model, base_url=base_url)
        await self._call(lambda: self._write([entry]))
        self._hold(entry)

    async def started(self, intent: str, response_id: str) -> None:
        """Record a response id (see [`Journal`][tether.journal.Journal])."""
        entry = self._hold_started(intent, response_id)
        if entry is None:  # not this owner's (a handle adopted elsewhere): the field alone
            await self._call(
                lambda: self._redis.hset(self._key("entry", intent), "response_id", response_id)
            )
        else:  # the whole entry: one the store lost (a restart) comes back whole, never half
            await self._call(lambda: self._write([entry]))

    async def finished(self, intent: str) -> None:
        """Forget an entry (see [`Journal`][tether.journal.Journal])."""
        self._unhold(intent)

        def work() -> None:
            with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(self._key("entry", intent), self._key("claim", intent))
                pipe.zrem(self._key("entries"), intent)
                pipe.execute()

        await self._call(work)

    def _write(self, entries: Sequence[JournalEntry]) -> None:
        """Write *entries* whole (from a worker thread): one transaction, one round trip."""
        with self._redis.pipeline(transaction=True) as pipe:
            for entry in entries:
                pipe.hset(self._key("entry", entry.intent), mapping=_fields(entry))
                pipe.zadd(self._key("entries"), {entry.intent: entry.created_at})
            pipe.execute()

    # --------------------------------------------------------------- the fleet's

    async def check(self) -> None:
        """Fail unless the server answers (see [`Journal`][tether.journal.Journal])."""
        await self._call(self._redis.ping)

    async def entries(self) -> list[JournalEntry]:
        """Every entry not yet finished (see [`Journal`][tether.journal.Journal])."""

        def work() -> list[JournalEntry]:
            intents = [_text(i) for i in self._redis.zrange(self._key("entries"), 0, -1)]
            with self._redis.pipeline(transaction=False) as pipe:
                for intent in intents:
                    pipe.hgetall(self._key("entry", intent))
                rows = [{_text(k): _text(v) for k, v in row.items()} for row in pipe.execute()]
            rows = [row for row in rows if row]  # finished meanwhile
            owners = sorted({row["owner"] for row in rows})
            with self._redis.pipeline(transaction=False) as pipe:
                for owner in owners:
                    pipe.get(self._key("owner", owner))
                    pipe.pttl(self._key("owner", owner))
                answers = pipe.execute()
            now = time.time()
            leases: dict[str, tuple[float | None, str | None]] = {}
            for owner, record, millis in zip(owners, answers[::2], answers[1::2], strict=True):
                if record is None:
                    leases[owner] = (None, None)
                    continue
                process = json.loads(_text(record)).get("process")
                until = now + int(millis) / 1000 if int(millis) >= 0 else None
                leases[owner] = (until, None if process is None else str(process))
            return [
                _entry(row, leases[row["owner"]][0] is not None, *leases[row["owner"]])
                for row in rows
            ]

        return await self._call(work)

    async def claim(
        self, intents: Sequence[str], *, ttl: float, include_live: bool = False
    ) -> list[JournalEntry]:
        """Claim reapable entries in one Lua script (see [`Journal`][tether.journal.Journal])."""
        args = [self.prefix, str(max(1, int(ttl * 1000))), "1" if include_live else "0"]

        def work() -> list[JournalEntry]:
            claimed: list[JournalEntry] = []
            for start in range(0, len(intents), 500):
                chunk = list(intents[start : start + 500])
                for flat in self._claim_script(keys=[], args=[*args, *chunk]):
                    pairs = [_text(x) for x in flat]
                    claimed.append(_entry(dict(zip(pairs[::2], pairs[1::2], strict=True)), False))
            return claimed

        return await self._call(work)

    async def release(self, intent: str) -> None:
        """Drop a claim (see [`Journal`][tether.journal.Journal])."""
        await self._call(lambda: self._redis.delete(self._key("claim", intent)))

    async def request(self, key: str) -> int:
        """Publish a cancel request (see [`Journal`][tether.journal.Journal])."""
        return int(await self._call(lambda: self._redis.publish(self._key("cancel"), key)))

    # ------------------------------------------------------------ lease, listener

    async def _renew(self, intents: Sequence[str]) -> list[str]:
        owner = self.owner
        record = json.dumps({"host": owner.host, "pid": owner.pid, "process": owner.process})
        millis = max(1, int(self.lease * 1000))
        wanted = list(intents)

        def work() -> list[str]:
            # One round trip: the lease, and whether each held entry is still there.
            with self._redis.pipeline(transaction=False) as pipe:
                pipe.set(self._key("owner", owner.instance), record, px=millis)
                for intent in wanted:
                    pipe.exists(self._key("entry", intent))
                _, *there = pipe.execute()
            return [intent for intent, n in zip(wanted, there, strict=True) if not n]

        return await self._call(work)

    async def _restore(self, entries: Sequence[JournalEntry]) -> None:
        def work() -> None:
            held = self._holding()  # an entry finished meanwhile is not written back
            self._write([held[e.intent] for e in entries if e.intent in held])

        await self._call(work)

    async def _drop_owner(self) -> None:
        await self._call(lambda: self._redis.delete(self._key("owner", self.owner.instance)))

    async def _listen(self, post: Callable[[str | None], None]) -> None:
        channel = self._key("cancel")

        def listen() -> None:
            pubsub = self._redis.pubsub()
            try:
                pubsub.subscribe(channel)
                # subscribe() only sends: wait for the server's confirmation before "started".
                deadline = time.monotonic() + 2 * self.timeout
                while pubsub.get_message(timeout=_POLL) is None:
                    anyio.from_thread.check_cancelled()
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"no answer to SUBSCRIBE within {2 * self.timeout}s")
                anyio.from_thread.run_sync(post, None)
                while True:
                    anyio.from_thread.check_cancelled()
                    message = pubsub.get_message(timeout=_POLL)
                    if message is not None and message.get("type") == "message":
                        anyio.from_thread.run_sync(post, _text(message["data"]))
            finally:
                pubsub.close()

        await self._call(listen, own_thread=True)
