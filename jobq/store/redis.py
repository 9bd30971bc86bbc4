"""The Redis store: every job in Redis, shared by any number of jobq processes.

The verbs and their rules are those of every shared store (:mod:`jobq.store.shared`);
here each primitive is one Lua script (:mod:`jobq.store.redisscripts`), atomic on
the server, loaded by its SHA and loaded again if Redis forgot it (a restart).

- **Keys** of one deployment share one hash slot (the prefix is a hash tag,
  ``{jobq}``): a script never spans slots, and on a Redis Cluster all of jobq runs
  on the master that owns the slot. Two deployments with different prefixes
  (``?prefix=``) may live on different masters.
- **Time** is the Redis server's (``TIME``), unless a clock is injected (tests).
- **Wake-ups and events** come by pub/sub on ``{prefix}:events``, one message per
  script that changed anything; idle leases also poll every ``POLL_SECONDS``.
- **Workflows** (:mod:`jobq.workflow`): whatever script ends a job resolves the children
  still waiting on it in the same script, cascading down (see :mod:`jobq.store.redisscripts`);
  the children it moved come back with its answer, and this node reports them as it reports
  its own changes (it skips its own messages on the channel).
- **Flow control** is applied inside the claim script, so a queue's limits and rates
  (kept in Redis) hold across every node; an idle lease held back by a rate looks again
  when the rate allows, and one held back by a limit when a run of its queue ends
  (on another node, the run's message lists the queue as ready).
- **Once-only maintenance** (retention, and reporting the store-wide gauges) runs on
  the node holding ``{prefix}:leader`` (``SET NX PX``, renewed every second; another
  node takes over within ``LEADER_MS`` when it stops).
- **Durability** is what Redis gives: at open, jobq reads the server's persistence and
  logs a warning when an accepted job could be lost. With ``?replicas=N``, each write
  waits (``WAIT``) until N replicas have it, and fails (503) if they do not within
  ``?replica_timeout=`` seconds (5).
- **Redis going away** makes verbs raise StoreUnavailable (503 with Retry-After);
  the client reconnects by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
from pydantic_core import from_json, to_json
from redis import exceptions as redis_errors
from redis.asyncio.cluster import RedisCluster

from jobq.errors import InvalidTransition, JobNotFound, JobqError, StoreFull, StoreUnavailable
from jobq.flow import FlowState, QueueFlow
from jobq.job import PENDING, PROCESSING, Job, JobStatus
from jobq.store import memory
from jobq.store.base import Settlement, StoredSchedule, StoreOptions, StoreStats
from jobq.store.memory import ADD, STATE
from jobq.store.redisscripts import ROW, SCRIPTS
from jobq.store.rows import COLUMNS, STATE_COLUMNS, STATUSES, dump, job_from_row, job_values
from jobq.store.shared import MAX_PER_ROUND, Fence, SharedStore, stale

log = logging.getLogger("jobq.store")

POOL_MAX = 20  # connections per jobq process (and per cluster node)
CONNECT_SECONDS = 5.0  # a connection not made by then fails (503): Redis is away
COMMAND_SECONDS = 30.0  # a command not answered by then fails (503)
RECONNECT_SECONDS = 1.0  # how soon the subscriber tries again once its connection is lost
CLOSE_SECONDS = 5.0  # the most each step of closing waits for Redis
LEADER_MS = 5000  # how long the maintenance lock lasts unless its holder renews it (every second)
INTS = frozenset({"seq", "priority", "attempts", "max_attempts", "concurrency_limit", "parents_left"})
FLOATS = frozenset(
    {"timeout", "created_at", "run_at", "started_at", "finished_at", "lease_expires_at", "progress", "ready_at"}
    | {"unique_until"}
)
WRITTEN = (*STATE_COLUMNS, "ready_at")  # what a change of state writes
UNSTORED = {"on_parent_failure": "cancel", "parents_left": 0}  # an add leaves these out at these values (rows'
# defaults): a job without parents costs nothing more; the add script sets parents_left for one with parents


@dataclass(frozen=True, slots=True)
class RedisUrl:
    """What a ``redis://`` (or ``rediss://``) store URL says, beyond where the server is."""

    url: str  # for the client: the URL without jobq's own query parameters
    prefix: str = "jobq"  # the keys' prefix (a hash tag): one deployment's keys
    replicas: int = 0  # replicas each write waits for (WAIT)
    replica_timeout: float = 5.0  # seconds a write waits for them


def split_url(url: str) -> RedisUrl:
    """Read ``?prefix=``, ``?replicas=`` and ``?replica_timeout=`` off a store URL (ValueError naming a bad one);
    every other query parameter is the client's."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    prefix = query.pop("prefix", "jobq")
    if not prefix or any(char in prefix for char in "{}: \t\n"):
        raise ValueError(f"key prefix {prefix!r} is not valid: a word without braces, colons or spaces")
    try:
        replicas = int(query.pop("replicas", "0"))
        timeout = float(query.pop("replica_timeout", "5"))
    except ValueError:
        raise ValueError("replicas is a whole number and replica_timeout a number of seconds") from None
    if replicas < 0 or not timeout > 0:
        raise ValueError("replicas must be 0 or more, and replica_timeout above 0")
    return RedisUrl(urlunsplit(parts._replace(query=urlencode(query))), prefix, replicas, timeout)


def where(url: str) -> str:
    """A Redis URL without its password, to name in messages and logs."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or 'localhost'}:{parts.port or 6379}{parts.path or ''}"


def storage_error(exc: BaseException, place: str) -> JobqError:
    """The jobq error for a failed Redis call: full (out of memory), or unavailable."""
    if isinstance(exc, JobqError):
        return exc
    if isinstance(exc, redis_errors.ResponseError) and str(exc).startswith("OOM"):
        return StoreFull(f"{place}: Redis is out of memory (maxmemory)")
    return StoreUnavailable(f"{place} is unavailable: {type(exc).__name__}: {exc}")


def durability_warning(persistence: dict[str, Any], appendfsync: str | None) -> str | None:
    """What an accepted job may lose on this Redis (from ``INFO persistence`` and ``appendfsync``), or None."""
    if str(persistence.get("aof_enabled", "0")) != "1":
        return (
            "Redis keeps no append-only file (appendonly no): a job answered 202 is lost if Redis stops before "
            "its next snapshot, if it makes any; set appendonly yes and appendfsync always for jobs that must survive"
        )
    if appendfsync == "everysec":
        return "Redis syncs its append-only file every second: a job answered 202 up to a second before a crash is lost"
    if appendfsync == "no":
        return "Redis leaves syncing its append-only file to the OS: jobs answered 202 can be lost in a crash"
    return None


def text(value: Any) -> str:
    """A column's value as stored in the job's hash: floats exactly (repr), everything else as ``str``."""
    return repr(value) if isinstance(value, float) else str(value)


CONVERT = [int if name in INTS else float if name in FLOATS else None for name in ROW]


def pairs(flat: Sequence[str]) -> dict[str, str]:
    """A flat ``[name, value, ...]`` answer (HGETALL) as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def row_job(row: Sequence[str | None]) -> Job:
    """The job a row holds (its fields in ROW's order, None where absent), as a job of its own."""
    values = [value if value is None or kind is None else kind(value) for value, kind in zip(row, CONVERT, strict=True)]
    job = job_from_row(values[: len(COLUMNS)])
    job.history = list(job.history)
    if values[-1] is not None:
        job.ready_at = values[-1]
    return job


def stored_as(job: Job, answer: Sequence[Any]) -> int:
    """Bring a job with parents to the state the add script stored it in (``[seq, status, parents_left, error,
    finished_at, ready_at]``); its seq."""
    seq, status, parents_left, error, finished_at, ready_at = answer
    job.status = STATUSES[status]
    job.parents_left = int(parents_left or 0)
    job.error = error
    if finished_at is not None:
        job.finished_at = float(finished_at)
    if ready_at is not None:
        job.ready_at = float(ready_at)
    return int(seq)


class RedisStore(SharedStore):
    """Jobs in Redis, shared by every jobq process that uses the same server (or cluster) and prefix."""

    def __init__(self, url: str, options: StoreOptions | None = None) -> None:
        super().__init__(options)
        settings = split_url(url)
        self.url, self.replicas, self.replica_timeout = settings.url, settings.replicas, settings.replica_timeout
        self.prefix = "{" + settings.prefix + "}"  # a hash tag: every key of this deployment in one slot
        self.place = where(self.url) + f" (prefix {settings.prefix})"
        self._own = '{"node":"' + self.node + '"'  # how this node's messages start (see redisscripts.publish)
        self._client: Any = None  # redis.asyncio.Redis, or RedisCluster
        self._scripts: dict[str, Any] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False  # set by close: the listener and leader loops end (whatever a cancel meets)
        self._heard_from = asyncio.Event()

    # -- lifecycle -------------------------------------------------------------
    async def open(self) -> None:
        """Connect (to a cluster if the server is one), warn about durability, and start listening and leading."""
        options = {"decode_responses": True, "socket_connect_timeout": CONNECT_SECONDS}
        options["socket_timeout"] = COMMAND_SECONDS
        try:
            probe = aioredis.Redis.from_url(self.url, **options)
            try:
                cluster = (await probe.info("cluster")).get("cluster_enabled") == 1
                persistence = await probe.info("persistence")
                try:
                    appendfsync = (await probe.config_get("appendfsync")).get("appendfsync")
                except redis_errors.ResponseError:  # CONFIG is often disabled on managed Redis
                    appendfsync = None
            finally:
                await probe.aclose()
            if cluster:
                self._client = RedisCluster.from_url(self.url, max_connections=POOL_MAX, **options)
            else:  # at most POOL_MAX connections: a call waits for one rather than fail
                pool = aioredis.BlockingConnectionPool.from_url(
                    self.url, max_connections=POOL_MAX, timeout=COMMAND_SECONDS, **options
                )
                self._client = aioredis.Redis.from_pool(pool)  # closing the client closes the pool
            self._scripts = {name: self._client.register_script(source) for name, source in SCRIPTS.items()}
            self._reporting = bool(await self._run("lead", LEADER_MS))  # fails here if Redis cannot run scripts
        except BaseException as exc:
            await self.close()
            if isinstance(exc, redis_errors.RedisError | OSError):
                raise storage_error(exc, self.place) from None
            raise
        warning = durability_warning(persistence, appendfsync)
        if warning:
            log.warning("%s: %s", self.place, warning)
        self._tasks = [
            asyncio.create_task(self._listen(), name="jobq-store-listener"),
            asyncio.create_task(self._lead(), name="jobq-store-leader"),
        ]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CONNECT_SECONDS):
                await self._heard_from.wait()
        kind = "a Redis Cluster" if cluster else "Redis"
        replicas = f", each write on {self.replicas} replicas too" if self.replicas else ""
        log.info("opened %s on %s%s", self.place, kind, replicas)

    async def close(self) -> None:
        """Hand back the runs leased through this node that still run (lost: jobq stopped), then disconnect.

        Each step is bounded (``CLOSE_SECONDS``): a Redis that does not answer never holds a stop up.
        """
        self._closing = True
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_SECONDS):
                await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._client is not None:
            with contextlib.suppress(TimeoutError, JobqError):
                async with asyncio.timeout(CLOSE_SECONDS):
                    await self._stop_background()
                    if self._reporting:
                        await self._run("resign")  # the next node takes over at once, not after LEADER_MS
            await self._client.aclose()
            self._client = None

    # -- calls ---------------------------------------------------------------------
    async def _call(self, command: Any) -> Any:
        """Await a Redis command; its errors leave as jobq errors (StoreUnavailable, mostly)."""
        try:
            return await command
        except (redis_errors.RedisError, OSError) as exc:
            raise storage_error(exc, self.place) from None

    async def _run(self, name: str, *args: Any) -> Any:
        """Run a script with the common arguments (prefix, node, time); with ?replicas=N, wait for them too."""
        if self._client is None:
            raise StoreUnavailable(f"the store {self.place} is not open")
        clock = self._clock_arg()
        argv = [self.prefix, self.node, "" if clock is None else repr(clock), *args]
        keys = [f"{self.prefix}:seq"]  # routes the call to the slot's master on a cluster
        script = self._scripts[name]
        if not self.replicas:
            return await self._call(script(keys=keys, args=argv))
        pipe = self._client.pipeline(transaction=False)
        await script(keys=keys, args=argv, client=pipe)  # queued: it runs with the WAIT below
        pipe.execute_command("WAIT", self.replicas, int(self.replica_timeout * 1000))
        answer, acknowledged = await self._call(pipe.execute())
        if acknowledged < self.replicas:
            raise StoreUnavailable(
                f"{self.place}: only {acknowledged} of {self.replicas} replicas took the write "
                f"within {self.replica_timeout:g} s"
            )
        return answer

    # -- nodes -------------------------------------------------------------------
    async def announce(self, card: dict[str, Any], ttl: float) -> None:
        await self._run("announce", to_json(card).decode(), repr(ttl))

    async def withdraw(self) -> None:
        await self._run("withdraw")

    async def nodes(self) -> list[dict[str, Any]]:
        cards = []
        for entry in await self._run("nodes"):
            if entry:  # withdrawn between the two reads of the script: gone
                seen_at, _, card = entry.partition("\t")
                cards.append({**from_json(card), "seen_at": float(seen_at)})
        return sorted(cards, key=lambda card: card.get("id", ""))

    # -- schedules ---------------------------------------------------------------
    async def put_schedule(self, name: str, definition: dict[str, Any], *, new: bool = False) -> bool:
        return bool(await self._run("put_schedule", name, to_json(definition).decode(), "1" if new else ""))

    async def delete_schedule(self, name: str) -> bool:
        return bool(await self._run("delete_schedule", name))

    async def schedules(self) -> list[StoredSchedule]:
        definitions, fired = await self._run("schedules")
        ticks = dict(zip(fired[::2], fired[1::2], strict=True))
        return sorted(
            (
                StoredSchedule(name, from_json(definition), float(ticks[name]) if name in ticks else None)
                for name, definition in zip(definitions[::2], definitions[1::2], strict=True)
            ),
            key=lambda schedule: schedule.name,
        )

    async def fired(self, name: str, tick: float) -> None:
        await self._run("fired", name, repr(tick))

    # -- listening and leading -----------------------------------------------------
    async def _listen(self) -> None:
        """Subscribe to the events channel; subscribe again whenever the connection is lost."""
        channel = f"{self.prefix}:events"
        while not self._closing:
            subscriber = aioredis.Redis.from_url(  # on a cluster, any node hears every PUBLISH
                self.url, decode_responses=True, socket_connect_timeout=CONNECT_SECONDS
            )
            pubsub = subscriber.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(channel)
                if self._down is not None or not self._heard_from.is_set():
                    self._listening_again()
                self._heard_from.set()
                while not self._closing:
                    message = await pubsub.get_message(timeout=RECONNECT_SECONDS)
                    if message is not None and message["type"] == "message":
                        self._heard(message["data"])
            except (redis_errors.RedisError, OSError) as exc:
                if self._down is None:
                    log.error("%s: lost the events channel (%s); subscribing again", self.place, exc)
                self._down = f"Redis at {self.place} is unreachable: {exc}"
            except Exception as exc:  # never the end of listening: log it, and subscribe again
                log.exception("%s: listening failed", self.place)
                self._down = f"listening to {self.place} failed: {exc}"
            finally:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(CLOSE_SECONDS):
                        await pubsub.aclose()
                        await subscriber.aclose()
            if not self._closing:
                await asyncio.sleep(RECONNECT_SECONDS)

    async def _lead(self) -> None:
        """Hold (or take) the maintenance lock, renewing it every second; ``reports_totals`` says whether it is held."""
        while not self._closing:
            try:
                self._reporting = bool(await self._run("lead", LEADER_MS))
            except JobqError:
                self._reporting = False
            await asyncio.sleep(1.0)

    def _heard_log(self, message: dict[str, Any]) -> None:
        job_id, at, line = message["log"]
        if job_id in self._followed:
            self._publish_log(job_id, float(at), line)

    # -- the primitives -----------------------------------------------------------
    async def _insert(self, jobs: Sequence[Job], *, together: bool = False) -> dict[str, int | str]:
        """Store the new jobs (see SharedStore._insert) in one script call; with ``together``, all or none.

        A job with parents is stored as the script settles it (waiting, pending or cancelled): the
        caller's job is brought to that state, since it becomes the outcome.
        """
        if not jobs:
            return {}
        encoded = []
        for job in jobs:
            fields = {
                name: text(value)
                for name, value in zip(COLUMNS, job_values(job, ADD), strict=True)
                if value is not None and name != "seq" and UNSTORED.get(name) != value
            }
            if job.ready_at:
                fields["ready_at"] = text(job.ready_at)
            encoded.append(to_json({"id": job.id, "queue": job.queue, "status": job.status.value, "fields": fields}))
        answers = await self._run("add", self.options.max_waiting, "1" if together else "", *encoded)
        inserted: dict[str, int | str] = {}
        for job, answer in zip(jobs, answers, strict=True):
            if isinstance(answer, list):
                answer = stored_as(job, answer)
            if isinstance(answer, str) or answer > 0:
                inserted[job.id] = answer
        return inserted

    async def _read(self, job_ids: Sequence[str]) -> list[Job]:
        if not job_ids:
            return []
        pipe = self._client.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hmget(f"{self.prefix}:job:{job_id}", ROW)
        found = await self._call(pipe.execute())
        return [row_job(row) for row in found if row[0] is not None]  # no id: no such job

    async def _read_at(self, job_ids: Sequence[str]) -> tuple[float, list[Job]]:
        if self._fixed_clock is not None:
            return self._fixed_clock(), await self._read(job_ids)
        seconds, micros = await self._call(self._client.time())
        return seconds + micros / 1_000_000, await self._read(job_ids)

    async def _write(self, changes: Sequence[tuple[Job, Fence]]) -> set[str]:
        encoded = []
        for job, (was, lease) in changes:
            values = (*job_values(job, STATE), job.ready_at or None)
            updates = {name: text(value) for name, value in zip(WRITTEN, values, strict=True) if value is not None}
            cleared = [name for name, value in zip(WRITTEN, values, strict=True) if value is None]
            encoded.append(to_json({"id": job.id, "was": was.value, "lease": lease, "set": updates, "del": cleared}))
        written, moved = await self._run("write", *encoded)
        self._cascaded(moved)
        return set(written)

    def _cascaded(self, moved: Sequence[Any]) -> None:
        """Report the children a script moved as their parents ended (``[before, row]`` each).

        The script's message names this node, which skips its own messages, so it reports them
        itself: to listeners and subscribers, just after the change that moved them (which the
        caller reports as soon as the script's answer is back: it was made first).
        """
        if not moved:
            return
        changes = [(row_job(flat), STATUSES[before]) for before, flat in moved]
        if any(job.status is PENDING for job, _ in changes):
            self._wake()  # an idle lease here need not wait for a poll
        asyncio.get_running_loop().call_soon(self._changed, changes)

    async def _claim_jobs(
        self,
        max_jobs: int,
        lease_seconds: float,
        queues: Sequence[str] | None,
        worker: str | None,
        types: Collection[str] | None,
        lease_ids: list[str],
    ) -> list[Job]:
        wanted = "" if queues is None else to_json(list(queues)).decode()
        kinds = "" if types is None else to_json(list(types)).decode()
        args = (max_jobs, repr(float(lease_seconds)), worker or "", wanted, kinds, to_json(lease_ids).decode())
        taken, wake_at, turning = await self._run("claim", *args)
        self._flowing = frozenset(turning)  # a run ending in one of them wakes idle leases here (_changed)
        if wake_at:  # a rate held jobs back: an idle lease here looks again once it lets one start
            due = self._next_due
            self._next_due = float(wake_at) if due is None else min(due, float(wake_at))
        return [row_job(flat) for flat in taken]

    async def _extend(self, leases: Sequence[tuple[str, str]], lease_seconds: float) -> dict[str, Job]:
        pairs = [part for lease in leases for part in lease]
        extended = await self._run("heartbeat", repr(float(lease_seconds)), *pairs)
        return {job.id: job for job in await self._read(extended)}

    async def _complete(self, settlements: Sequence[Settlement]) -> list[Job]:
        args: list[str] = []
        for item in settlements:
            result = "" if item.result is None else dump(item.result)
            args += [item.id, item.lease_id, result, "0" if self._holds(item) else "1"]
        by_id = {item.id: item for item in settlements}
        done, moved = await self._run("complete", *args)
        self._cascaded(moved)
        return [
            row_job(answer) if isinstance(answer, list) else self._held_answer(by_id[job_id], float(answer))
            for job_id, answer in done
        ]

    async def _expiring(self) -> tuple[float, list[Job]]:
        at, found = await self._run("expiring", MAX_PER_ROUND)
        return float(at), [row_job(flat) for flat in found]

    # -- the rest of the verbs ----------------------------------------------------------
    async def set_progress(self, job_id: str, lease_id: str | None, fraction: float, note: str | None) -> None:
        progress = min(max(float(fraction), 0.0), 1.0)
        if not await self._run("progress", job_id, lease_id or "", repr(progress), note or ""):
            raise stale(job_id, lease_id, await self.get(job_id))

    async def delete(self, job_id: str) -> Job:
        answer = await self._run("delete", job_id)
        if answer is None:
            raise JobNotFound(job_id)
        if answer == "processing":
            raise InvalidTransition(job_id, PROCESSING, "deleted (cancel it first)")
        flat, moved = answer
        self._cascaded(moved)
        return row_job(flat)

    async def peek(self, queue: str) -> Job | None:
        first = await self._run("peek", queue)
        jobs = await self._read([first]) if first else []
        return jobs[0] if jobs else None

    async def append_log(self, job_id: str, message: str, lease_id: str | None = None) -> None:
        answer = await self._run("log", job_id, lease_id or "", message, memory.MAX_LOG_LINES)
        if answer == "missing":
            raise JobNotFound(job_id)
        if answer == "stale":
            raise stale(job_id, lease_id, await self.get(job_id))
        if answer != "full":  # a job keeps its first MAX_LOG_LINES lines
            self._publish_log(job_id, float(answer), message)

    async def logs(self, job_id: str) -> list[dict[str, Any]]:
        pipe = self._client.pipeline(transaction=False)
        pipe.exists(f"{self.prefix}:job:{job_id}")
        pipe.lrange(f"{self.prefix}:logs:{job_id}", 0, -1)
        exists, lines = await self._call(pipe.execute())
        if not exists:
            raise JobNotFound(job_id)
        return [{"at": float(at), "message": message} for at, message in map(from_json, lines)]

    async def stats(self) -> StoreStats:
        counts, paused, heads = await self._run("stats")
        by_status: Counter[str] = Counter()
        by_queue: dict[str, dict[str, int]] = {}
        for key, value in zip(counts[::2], counts[1::2], strict=True):
            queue, status = key.split("\t")
            if int(value) and status in STATUSES:
                by_status[status] += int(value)
                by_queue.setdefault(queue, {})[status] = int(value)
        since = {queue: float(at) for queue, at in zip(heads[::2], heads[1::2], strict=True)}
        return StoreStats(dict(by_status), by_queue, sorted(paused), since)

    async def list_jobs(
        self,
        *,
        status: JobStatus | None = None,
        queue: str | None = None,
        job_type: str | None = None,
        owner: str | None = None,
        workflow: str | None = None,
        parent: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[Job], str | None]:
        before = cursor or str(2**63 - 1)
        filters = ("" if status is None else status.value, queue or "", job_type or "", owner or "")
        filters += (workflow or "", parent or "")
        found, bound = await self._run("list", before, memory.MAX_SCANNED, limit, *filters)
        page = [row_job(flat) for flat in found[:limit]]
        if len(found) > limit:
            return page, str(page[-1].seq)
        return page, None if not bound else str(int(float(bound)) + 1)

    async def set_paused(self, queue: str, paused: bool) -> None:
        await self._run("set_paused", queue, "1" if paused else "0")
        if not paused:
            self._wake()

    async def clear(self, queue: str) -> int:
        deleted, moved = await self._run("clear", queue)
        self._cascaded(moved)
        return int(deleted)

    async def set_flow(self, queue: str, flow: QueueFlow | None) -> None:
        await self._run("set_flow", queue, "" if flow is None else to_json(flow.to_dict()).decode())
        self._wake()  # a limit raised or removed may let held jobs start

    async def flows(self) -> dict[str, FlowState]:
        at, found = await self._run("flows")
        now = float(at)
        states = {}
        for queue, text, running, keys_running, queue_tat, key_tats in sorted(found, key=lambda entry: entry[0]):
            flow = QueueFlow.from_dict(from_json(text))
            rate, key_rate = flow.rate, flow.key_rate
            states[queue] = FlowState(
                flow=flow,
                running=int(running),
                keys_running={key: int(count) for key, count in pairs(keys_running).items()},
                next_start=None if rate is None or queue_tat is None else rate.next_start(float(queue_tat), now),
                keys_next_start={
                    key: start
                    for key, tat in pairs(key_tats).items()
                    if key_rate is not None and (start := key_rate.next_start(float(tat), now)) > now
                },
            )
        return states

    async def promote_due(self) -> int:
        promoted, next_due = await self._run("promote", MAX_PER_ROUND)
        self._next_due = None if not next_due else float(next_due)
        changes = [(row_job(flat), STATUSES[before]) for before, flat in promoted]
        if changes:
            self._wake()
        self._changed(changes)
        return len(changes)

    async def purge(self) -> int:
        """Delete finished jobs past retention, on the node that holds the maintenance lock."""
        if not self._reporting:
            return 0
        retention = self.options.retention
        return int(await self._run("purge", repr(retention.max_age), retention.max_count, MAX_PER_ROUND * 10))
