"""Background responses: queued at once, run in the server, polled, cancelled and resumed.

`POST /responses` with `background: true` plans, fits and reserves like any turn, stores the
response as `queued` and answers at once; the turn then runs in the app's task group (not in the
request) through the same streaming path as a streamed turn, so it ends the same ways: charged
what it produced, the hold released when nothing was. Its events are written to the database as
they come, so any process can replay them (`GET /responses/{id}?stream=true&starting_after=N`).

Ownership across processes: the process that queued a response runs it and beats for it every
`SESSIONARY_BACKGROUND_HEARTBEAT_SECONDS`; a cancel from any process sets a flag that the owner
reads within a quarter of a second (at once when the cancel reaches the owner itself). A response
whose owner was not heard of for three beats (its process died) is failed by any process, and its
hold released then rather than at the hold's TTL.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar, cast

import anyio
import anyio.lowlevel
import anyio.to_thread
import structlog
from anyio.abc import TaskGroup

from sessionary.accounts.identity import Principal
from sessionary.assistant.background_output import SeenOutput
from sessionary.assistant.streaming import stream_turn
from sessionary.assistant.turn_billing import TurnStream, produced_tokens
from sessionary.assistant.turns import Turn
from sessionary.billing.ledger import Ledger
from sessionary.billing.metering import LIVE_HOLDS, Meter
from sessionary.conversations.background import TERMINAL_EVENTS, BackgroundResponses, Snapshot
from sessionary.conversations.service import ConversationService
from sessionary.kit.db import Database
from sessionary.kit.errors import NotFound, ServiceUnavailable
from sessionary.kit.models import utcnow
from sessionary.providers.base import Usage

if TYPE_CHECKING:
    from sessionary.assistant.service import AssistantService

log = structlog.get_logger("sessionary.assistant")
T = TypeVar("T")

FLUSH_SECONDS = 0.1  # events are written in batches at most this old
TAIL_SECONDS = 0.1  # how often a replaying stream looks for new events
CANCEL_WAIT_SECONDS = 10.0  # how long a cancel waits for the owner to stop
STOPPED = {"code": "server_error", "message": "The server stopped during this response."}


@dataclass
class TurnQueued:
    """A background turn, queued: its `queued` payload, and the hold its headers announce."""

    payload: dict[str, Any]
    reserved_micro: int
    remaining_micro: int


@dataclass
class _Job:
    response_id: str
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    reason: str | None = None  # "cancelled" (asked to stop) or "lost" (failed elsewhere)

    def stop(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        self.scope.cancel()


def process_name() -> str:
    """Unique to this process's life: host, pid, and a boot id (pids are reused)."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def _parse(chunk: bytes) -> tuple[str, dict[str, Any]]:
    head, _, rest = chunk.decode().partition("\n")
    return head.removeprefix("event: "), json.loads(rest.removeprefix("data: "))


def _read(
    b: BackgroundResponses, response_id: str, after: int
) -> tuple[Snapshot | None, list[tuple[int, str, str]]]:
    snap = b.status_of(response_id)  # read before the events: none can be missed
    rows = b.events_after(response_id, after)
    return snap, [(r.sequence_number, r.kind, r.data) for r in rows]


class BackgroundRuns:
    """This process's background responses: it runs them, beats for them, and sweeps others'."""

    def __init__(self, database: Database) -> None:
        settings = database.settings
        self.database = database
        self.process = process_name()
        self.heartbeat = settings.background_heartbeat_seconds
        self.retention = timedelta(seconds=settings.background_events_retention_seconds)
        self.write_timeout = settings.stream_write_timeout_seconds
        self.jobs: dict[str, _Job] = {}
        self.group: TaskGroup | None = None

    async def _db(self, work: Callable[[BackgroundResponses], T]) -> T:
        def run() -> T:
            with self.database.session() as db:
                return work(BackgroundResponses(db))

        return await anyio.to_thread.run_sync(run)

    # Queueing and running

    async def queue(
        self, service: AssistantService, turn: Turn, meter: Meter
    ) -> TurnQueued | TurnStream:
        """Store the response as queued and start it; the hold is released if that fails."""
        group = self.group
        queued = service.payload(
            turn, session_id=turn.session_id, status="queued", output=[], usage=None
        )
        try:
            if group is None:
                raise ServiceUnavailable("Background responses are not running yet; retry.")
            remaining = await meter.remaining()
            await self.database.in_worker(lambda: self._store_queued(turn, meter, queued))
        except BaseException:
            await meter.release()
            raise
        turn.session_exists = True
        job = _Job(turn.response_id)
        self.jobs[turn.response_id] = job
        group.start_soon(self._run, service, turn, meter, job)
        reserved = meter.reservation.amount_micro
        if turn.request.stream:
            return TurnStream(
                self.replay(turn.response_id, -1),
                reserved_micro=reserved,
                remaining_micro=remaining,
                write_timeout_seconds=self.write_timeout,
            )
        return TurnQueued(queued, reserved, remaining)

    def _store_queued(self, turn: Turn, meter: Meter, payload: dict[str, Any]) -> None:
        now = utcnow()
        with self.database.session() as db:
            if not turn.session_exists:
                ConversationService(db).create_session(
                    turn.caller, kind=turn.session_kind, session_id=turn.session_id
                )
            BackgroundResponses(db).queue(
                {
                    **turn.response_columns(),
                    "status": "queued",
                    "payload_json": json.dumps(payload),
                    "input_message_ids": "[]",
                    "has_image": False,
                    "created_at": now,
                    "background": True,
                    "owner_process": self.process,
                    "heartbeat_at": now,
                    "cancel_requested": False,
                    "reservation_id": meter.reservation.id,
                }
            )

    async def _run(self, service: AssistantService, turn: Turn, meter: Meter, job: _Job) -> None:
        """The turn, its events written as they come; always ends the response and its hold.

        The job's own writes are shielded, so a stop lands only while the model is being waited
        for: the deltas it has produced are then exactly those written, and those charged.
        """
        events = cast(AsyncGenerator[bytes], stream_turn(service, turn, meter))
        seen = SeenOutput()
        pending: list[tuple[int, str, str]] = []
        flushed = time.monotonic()
        try:
            with job.scope:
                await anyio.lowlevel.checkpoint()  # cancelled while queued: the model is not called
                running = service.payload(
                    turn, session_id=turn.session_id, status="in_progress", output=[], usage=None
                )
                with anyio.CancelScope(shield=True):
                    await self._db(lambda b: b.set_status(turn.response_id, running, self.process))
                async for chunk in events:
                    kind, data = _parse(chunk)
                    if kind == "response.created":
                        data["response"]["status"] = "queued"
                    seen.note(kind, data)
                    pending.append((data["sequence_number"], kind, json.dumps(data)))
                    if kind in TERMINAL_EVENTS or time.monotonic() - flushed > FLUSH_SECONDS:
                        with anyio.CancelScope(shield=True):
                            await self._flush(turn.response_id, pending)
                        flushed = time.monotonic()
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await events.aclose()  # a stopped turn is charged what it produced here
                    if meter.reservation.id in LIVE_HOLDS:  # neither settled nor released
                        await meter.release()
                    await self._flush(turn.response_id, pending)
                    await self._end(service, turn, meter, job, seen)
                except Exception:
                    log.exception("background_end_failed", response_id=turn.response_id)
                finally:
                    self.jobs.pop(turn.response_id, None)

    async def _flush(self, response_id: str, pending: list[tuple[int, str, str]]) -> None:
        if pending:
            batch = list(pending)
            pending.clear()
            await self._db(lambda b: b.add_events(response_id, batch))

    async def _end(
        self, service: AssistantService, turn: Turn, meter: Meter, job: _Job, seen: SeenOutput
    ) -> None:
        """Write the response's end, unless it ended already (stored with its transcript, or
        failed by another process that took this one for dead)."""
        if seen.final is not None:
            payload = {k: v for k, v in seen.final.items() if k != "credits"}
        else:
            status = "cancelled" if job.reason == "cancelled" else "failed"
            produced = produced_tokens(service.providers.chat(), seen.produced)
            usage = Usage(turn.input_tokens, produced) if meter.settlement is not None else None
            payload = service.payload(
                turn,
                session_id=turn.session_id,
                status=status,
                output=seen.output(),
                usage=usage,
                error=STOPPED if status == "failed" else None,
            )
        await self._db(lambda b: b.set_status(turn.response_id, payload, self.process))

    # Reading, replaying and cancelling (from any process)

    async def read(self, caller: Principal, response_id: str) -> dict[str, Any]:
        """The stored response as it stands (any response, background or not)."""
        return (await self._db(lambda b: b.read(caller, response_id))).payload

    async def replay_of(
        self, caller: Principal, response_id: str, after: int
    ) -> AsyncIterator[bytes]:
        """The response's events after `after` (400 when they are no longer kept), then its
        new ones as they come, until it ends."""
        await self._db(lambda b: b.replayable(caller, response_id, after))
        return self.replay(response_id, after)

    async def replay(self, response_id: str, after: int) -> AsyncIterator[bytes]:
        quiet_since: float | None = None
        while True:
            snap, rows = await self._db(partial(_read, response_id=response_id, after=after))
            for number, kind, data in rows:
                yield f"event: {kind}\ndata: {data}\n\n".encode()
                after = number
                if kind in TERMINAL_EVENTS:
                    return
            if rows:
                quiet_since = None
                continue
            if snap is None or snap.status in ("cancelled", "failed"):
                return  # its last events were written before its status
            if not snap.running:  # stored as ended; its last event follows in a moment
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since > max(2.0, 2 * self.heartbeat):
                    return
            await anyio.sleep(TAIL_SECONDS)

    async def cancel(self, caller: Principal, response_id: str) -> dict[str, Any]:
        """Stop a background response and answer it as it ended (cancelled, or already ended)."""
        snap = await self._db(lambda b: b.request_cancel(caller, response_id))
        if not snap.running:
            return snap.payload
        job = self.jobs.get(response_id)
        if job is not None:
            job.stop("cancelled")
        deadline = time.monotonic() + CANCEL_WAIT_SECONDS
        while time.monotonic() < deadline:
            await anyio.sleep(0.05)
            now = await self._db(lambda b: b.status_of(response_id))
            if now is None:
                raise NotFound(f"No response '{response_id}'.", param="response_id")
            snap = now
            if not snap.running:
                break
        return snap.payload

    # The loop

    async def finished(self, timeout: float) -> int:
        """Wait at most `timeout` seconds for the background responses this process runs to
        end (a stopping server's grace); how many are left."""
        deadline = anyio.current_time() + timeout
        while self.jobs and anyio.current_time() < deadline:
            await anyio.sleep(0.05)
        return len(self.jobs)

    def attach(self, group: TaskGroup) -> None:
        self.group = group

    async def run(self) -> None:
        """Forever (until the app stops): cancel flags every quarter second; beats, the sweep of
        dead owners' responses and the purge of old events every heartbeat."""
        beat = purge = float("-inf")
        poll = min(0.25, self.heartbeat)
        while True:
            try:
                if self.jobs:
                    wanted = await self._db(lambda b: b.cancel_requested(list(self.jobs)))
                    for response_id in wanted:
                        if job := self.jobs.get(response_id):
                            job.stop("cancelled")
                if time.monotonic() - beat >= self.heartbeat:
                    beat = time.monotonic()
                    await self.beat()
                if time.monotonic() - purge >= 60:
                    purge = time.monotonic()
                    await self._db(lambda b: b.purge_events(utcnow() - self.retention))
            except Exception:  # a database hiccup: the next round tries again
                log.warning("background_tick_failed", exc_info=True)
            await anyio.sleep(poll)

    async def beat(self) -> int:
        """`tick` in a worker thread, then the responses it found failed elsewhere stopped
        here: a job's cancel scope belongs to the event loop (cancelling it from the worker
        raised, and the lost job ran on). How many responses of dead owners were failed."""
        lost, failed = await anyio.to_thread.run_sync(self.tick)
        for response_id in lost:
            if (job := self.jobs.get(response_id)) is not None:
                job.stop("lost")
        return failed

    def tick(self) -> tuple[set[str], int]:
        """Beat for this process's responses, then fail the responses of dead owners and
        release their holds: the ids of this process's responses no longer its own (failed
        elsewhere), and how many were failed."""
        ids = list(self.jobs)
        with self.database.session() as db:
            lost = set(ids) - set(BackgroundResponses(db).heartbeat(self.process, ids))
        before = utcnow() - timedelta(seconds=3 * self.heartbeat)
        with self.database.session() as db:
            holds = BackgroundResponses(db).fail_stale(before, keep=set(self.jobs))
            ledger = Ledger(db)
            for hold in holds:
                ledger.release(hold)
        if holds:
            log.info("background_owner_died", failed=len(holds))
        return lost, len(holds)
