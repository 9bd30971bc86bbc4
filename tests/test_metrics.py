"""Prometheus metrics: scrape, run jobs, scrape again, and compare."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import grpc
import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from jobq import __version__, metrics
from jobq.api import METRICS, SERVICE
from jobq.app import create_app
from jobq.handlers import Registry
from jobq.job import Job, JobStatus
from jobq.rpc.gen import jobq_pb2 as pb
from jobq.rpc.gen import jobq_pb2_grpc as pb_grpc
from jobq.rpc.server import start_grpc_server
from jobq.store import Added
from jobq.store.sqlite import SQLiteStore
from jobq.tally import CounterFamily, HistogramFamily
from tests.conftest import TEST_CONFIG, FakeClock, MakeClient, wait_for_status

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(client: TestClient) -> Samples:
    """Every sample of ``GET /metrics``, by name and labels."""
    response = await client.get("/metrics")
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    samples: Samples = {}
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def enqueue(client: TestClient, body: dict[str, Any], wait: float = 0) -> dict[str, Any]:
    response = await client.post(f"/enqueue?wait={wait}" if wait else "/enqueue", json=body)
    assert response.status in (200, 202), await response.text()
    return await response.json()


async def test_metrics_follow_jobs_as_they_flow(make_client: MakeClient, backend: str) -> None:
    client = await make_client(workers=2, retry_base=0.01, retry_cap=0.01)
    before = await scrape(client)
    for n in range(3):
        assert (await enqueue(client, {"type": "echo", "payload": {"n": n}}, wait=10))["status"] == "completed"
    dead = await enqueue(client, {"type": "fail", "max_attempts": 2}, wait=10)
    failed = await enqueue(client, {"type": "fail"}, wait=10)
    assert (dead["status"], failed["status"]) == ("dead", "failed")
    later = await enqueue(client, {"type": "echo", "queue": "later", "delay": 3600})
    assert (await client.post(f"/jobs/{later['id']}/cancel")).status == 200
    assert (await client.get("/status/nope")).status == 404
    after = await scrape(client)

    assert delta(before, after, "jobq_jobs_enqueued_total", queue="default", type="echo") == 3
    assert delta(before, after, "jobq_jobs_enqueued_total", queue="default", type="fail") == 2
    assert delta(before, after, "jobq_jobs_enqueued_total", queue="later", type="echo") == 1
    finished = "jobq_jobs_finished_total"
    assert delta(before, after, finished, queue="default", type="echo", outcome="completed") == 3
    assert delta(before, after, finished, queue="default", type="fail", outcome="dead") == 1
    assert delta(before, after, finished, queue="default", type="fail", outcome="failed") == 1
    assert delta(before, after, finished, queue="later", type="echo", outcome="cancelled") == 1
    assert delta(before, after, "jobq_jobs_retried_total", queue="default", type="fail") == 1
    attempts = 3 + 2 + 1
    assert delta(before, after, "jobq_job_wait_seconds_count", queue="default") == attempts
    assert delta(before, after, "jobq_job_run_seconds_count", queue="default") == attempts
    assert value(after, "jobq_job_run_seconds_bucket", queue="default", le="+Inf") == attempts
    assert delta(before, after, "jobq_http_requests_total", method="POST", route="/enqueue", code="200") == 5
    assert delta(before, after, "jobq_http_requests_total", method="POST", route="/enqueue", code="202") == 1
    assert delta(before, after, "jobq_http_requests_total", method="GET", route="/status/{id}", code="404") == 1
    assert delta(before, after, "jobq_http_requests_total", method="GET", route="/metrics", code="200") == 1
    duration = "jobq_http_request_duration_seconds_count"
    assert delta(before, after, duration, method="POST", route="/enqueue", code="200") == 5
    assert delta(before, after, duration, method="GET", route="/status/{id}", code="404") == 1
    assert value(after, "jobq_queue_depth", queue="later", state="scheduled") == 0
    assert value(after, "jobq_workers", state="busy") + value(after, "jobq_workers", state="idle") == 2
    assert value(after, "jobq_build_info", version=__version__) == 1
    commits = delta(before, after, "jobq_store_commit_seconds_count")
    assert commits > 0 if backend == "sqlite" else commits == 0
    job_ids = {dead["id"], failed["id"], later["id"]}
    assert not any(v in job_ids for _, labels in after for _, v in labels), "a job id became a label value"


async def test_depth_running_and_paused_are_read_at_scrape(make_client: MakeClient) -> None:
    client = await make_client(workers=0)
    for _ in range(2):
        await enqueue(client, {"type": "echo", "queue": "mail"})
    await enqueue(client, {"type": "echo", "queue": "mail", "delay": 3600})
    await client.post("/queues/mail/pause")
    samples = await scrape(client)
    assert value(samples, "jobq_queue_depth", queue="mail", state="pending") == 2
    assert value(samples, "jobq_queue_depth", queue="mail", state="scheduled") == 1
    assert value(samples, "jobq_queue_paused", queue="mail") == 1
    assert value(samples, "jobq_queue_oldest_job_age_seconds", queue="mail") > 0
    await client.post("/queues/mail/resume")
    leased = await client.post("/workers/lease", json={"queues": ["mail"], "max_jobs": 1})
    assert leased.status == 200
    await client.delete("/queues/mail/jobs")
    samples = await scrape(client)
    assert value(samples, "jobq_jobs_running", queue="mail") == 1
    assert value(samples, "jobq_queue_paused", queue="mail") == 0
    assert value(samples, "jobq_queue_oldest_job_age_seconds", queue="mail") == 0  # nothing waits any more
    # an emptied queue stays listed at 0 rather than vanishing
    assert ("jobq_queue_depth", frozenset({"queue": "mail", "state": "pending"}.items())) in samples
    assert value(samples, "jobq_queue_depth", queue="mail", state="pending") == 0


async def test_oldest_job_age_is_the_wait_of_the_job_next_in_line(make_client: MakeClient) -> None:
    clock = FakeClock()
    client = await make_client(workers=0, clock=clock)
    first = await enqueue(client, {"type": "echo", "queue": "mail"})
    clock.advance(120.0)  # it has been waiting two minutes
    await enqueue(client, {"type": "echo", "queue": "mail"})
    assert value(await scrape(client), "jobq_queue_oldest_job_age_seconds", queue="mail") == 120.0
    clock.advance(30.0)
    leased = await client.post("/workers/lease", json={"queues": ["mail"], "max_jobs": 1})
    [job] = (await leased.json())["jobs"]
    assert job["id"] == first["id"]
    assert value(await scrape(client), "jobq_queue_oldest_job_age_seconds", queue="mail") == 30.0  # the second
    released = await client.post(f"/jobs/{job['id']}/release", json={"lease_id": job["lease_id"]})
    assert released.status == 200
    # next in line again, but waiting only since its release, not since its creation 150 s ago
    assert value(await scrape(client), "jobq_queue_oldest_job_age_seconds", queue="mail") == 0.0


def test_every_family_follows_the_prometheus_naming_rules() -> None:
    collected = metrics.Metrics()
    collected.series("default", "echo").enqueued.inc()
    collected.http_observe("POST", "/enqueue", 202, 0.001)
    families = {family.name: family for family in collected.registry.collect()}
    expected = {  # the families queue exporters have (prometheus_client names counters without _total)
        "jobq_jobs_enqueued": "counter",
        "jobq_jobs_finished": "counter",
        "jobq_jobs_retried": "counter",
        "jobq_leases_expired": "counter",
        "jobq_queue_depth": "gauge",
        "jobq_queue_oldest_job_age_seconds": "gauge",
        "jobq_job_wait_seconds": "histogram",
        "jobq_job_run_seconds": "histogram",
        "jobq_workers": "gauge",
        "jobq_http_requests": "counter",
        "jobq_http_request_duration_seconds": "histogram",
        "jobq_build": "info",
    }
    assert {name: families[name].type for name in expected if name in families} == expected
    for name, family in families.items():
        assert name.startswith("jobq_"), name
        if family.type == "counter":
            assert {s.name for s in family.samples} <= {f"{name}_total", f"{name}_created"}, name
        if family.type == "histogram":
            assert name.endswith("_seconds"), f"{name}: durations are in base units"
        labels = {label for sample in family.samples for label in sample.labels}
        assert not labels & {"id", "job_id"}, f"{name} is labelled by job"
    assert next(s.name for s in families["jobq_jobs_enqueued"].samples) == "jobq_jobs_enqueued_total"


async def test_an_expired_lease_is_counted(make_client: MakeClient) -> None:
    clock = FakeClock()
    client = await make_client(workers=0, clock=clock)
    await enqueue(client, {"type": "echo", "id": "slow", "max_attempts": 2})
    before = await scrape(client)
    leased = await client.post("/workers/lease", json={"max_jobs": 1, "lease": 5})
    assert leased.status == 200
    clock.advance(5.0)
    [lost] = await client.app[SERVICE].store.expire_leases()
    assert lost.status is JobStatus.PENDING  # a lost run: re-delivered, not a failed attempt
    after = await scrape(client)
    assert delta(before, after, "jobq_leases_expired_total", queue="default", type="echo") == 1
    assert delta(before, after, "jobq_jobs_retried_total", queue="default", type="echo") == 0
    assert delta(before, after, "jobq_job_run_seconds_count", queue="default") == 1


async def test_schedule_ticks_are_counted_fired_or_skipped(make_client: MakeClient) -> None:
    clock = FakeClock()
    client = await make_client(workers=0, clock=clock)
    for name, missed in (("often", "skip"), ("hourly", "skip")):
        every = 60 if name == "often" else 3600
        body = {"name": name, "every": every, "missed": missed, "job": {"type": "echo"}}
        assert (await client.post("/schedules", json=body)).status == 201
    schedules = client.app[SERVICE].schedules
    clock.advance(3600 + 120)  # often: its latest tick is due now; hourly: its tick was missed by 2 minutes
    await schedules.fire_due()
    samples = await scrape(client)  # (the node's own check, once a second, may have fired them: counted alike)
    assert value(samples, "jobq_schedule_ticks_total", schedule="often", outcome="fired") == 1
    assert value(samples, "jobq_schedule_ticks_total", schedule="hourly", outcome="skipped") == 1


AGED = 100.0  # seconds a test ages a job by: a wait counted from its creation would include them


async def test_a_delayed_job_waits_from_its_due_time_not_its_creation(make_client: MakeClient) -> None:
    clock = FakeClock()
    client = await make_client(workers=1, clock=clock)
    before = await scrape(client)
    job = await enqueue(client, {"type": "echo", "delay": AGED})
    clock.advance(AGED)  # due now, created AGED seconds ago
    await client.app[SERVICE].store.promote_due()
    await wait_for_status(client, job["id"], "completed")
    after = await scrape(client)
    assert delta(before, after, "jobq_job_wait_seconds_count", queue="default") == 1
    assert 0 <= delta(before, after, "jobq_job_wait_seconds_sum", queue="default") < AGED / 2


async def test_a_rerun_by_hand_counts_as_retried_and_waits_from_then(make_client: MakeClient) -> None:
    clock = FakeClock()
    client = await make_client(workers=1, clock=clock)
    job = await enqueue(client, {"type": "fail"}, wait=10)
    clock.advance(AGED)
    before = await scrape(client)
    assert (await client.post(f"/jobs/{job['id']}/retry")).status == 200
    await wait_for_status(client, job["id"], "failed")
    after = await scrape(client)
    assert delta(before, after, "jobq_jobs_retried_total", queue="default", type="fail") == 1
    assert delta(before, after, "jobq_job_wait_seconds_count", queue="default") == 1
    assert delta(before, after, "jobq_job_wait_seconds_sum", queue="default") < AGED / 2


async def test_grpc_calls_are_counted_by_method_and_code(make_client: MakeClient) -> None:
    client = await make_client(workers=0)
    before = await scrape(client)
    server = await start_grpc_server(client.app[SERVICE], "127.0.0.1", 0, metrics=client.app[METRICS])
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            jobs = pb_grpc.JobServiceStub(channel)
            await jobs.Enqueue(pb.EnqueueRequest(type="echo"))
            with pytest.raises(grpc.aio.AioRpcError):
                await jobs.GetJob(pb.GetJobRequest(id="nope"))
            with pytest.raises(grpc.aio.AioRpcError):
                await jobs.WatchJob(pb.WatchJobRequest(id="nope")).read()
    finally:
        await server.stop(0)
    after = await scrape(client)
    requests = "jobq_grpc_requests_total"
    assert delta(before, after, requests, method="jobq.v1.JobService/Enqueue", code="OK") == 1
    assert delta(before, after, requests, method="jobq.v1.JobService/GetJob", code="NOT_FOUND") == 1
    assert delta(before, after, requests, method="jobq.v1.JobService/WatchJob", code="NOT_FOUND") == 1
    duration = "jobq_grpc_request_duration_seconds_count"
    assert delta(before, after, duration, method="jobq.v1.JobService/Enqueue", code="OK") == 1
    assert delta(before, after, "jobq_jobs_enqueued_total", queue="default", type="echo") == 1


async def test_children_are_cached_so_a_job_costs_no_label_lookup(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await make_client(workers=2)
    await enqueue(client, {"type": "echo"}, wait=10)  # warm: every child this flow needs now exists
    await scrape(client)
    calls: list[tuple[Any, ...]] = []
    for family in (CounterFamily, HistogramFamily, MetricWrapperBase):
        real = family.labels

        def counting(self: Any, *args: Any, real: Any = real, **kwargs: Any) -> Any:
            calls.append(args)
            return real(self, *args, **kwargs)

        monkeypatch.setattr(family, "labels", counting)
    for _ in range(20):
        await enqueue(client, {"type": "echo"}, wait=10)
    assert calls == []


async def test_client_chosen_labels_are_bounded(make_client: MakeClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "MAX_LABEL_SETS", 2)
    client = await make_client(workers=0)  # no in-process workers: any job type is accepted
    for job_type in ("a", "b", "c", "d"):
        await enqueue(client, {"type": job_type, "queue": f"q-{job_type}"})
    samples = await scrape(client)
    assert value(samples, "jobq_jobs_enqueued_total", queue="q-a", type="a") == 1
    assert value(samples, "jobq_jobs_enqueued_total", queue="q-b", type="b") == 1
    assert value(samples, "jobq_jobs_enqueued_total", queue=metrics.OTHER, type=metrics.OTHER) == 2
    assert not any(name == "jobq_jobs_enqueued_total" and ("type", "c") in labels for name, labels in samples)


async def test_unmatched_paths_and_odd_methods_do_not_grow_labels(make_client: MakeClient) -> None:
    client = await make_client(workers=0)
    for n in range(3):
        assert (await client.get(f"/no/such/path/{n}")).status == 404
    assert (await client.request("PROPFIND", "/enqueue")).status == 405
    samples = await scrape(client)
    assert value(samples, "jobq_http_requests_total", method="GET", route="(unmatched)", code="404") == 3
    assert value(samples, "jobq_http_requests_total", method="other", route="(unmatched)", code="405") == 1


async def test_each_app_counts_alone(aiohttp_client: Any, registry: Registry) -> None:
    first = await aiohttp_client(create_app(replace(TEST_CONFIG, workers=0), handlers=registry))
    second = await aiohttp_client(create_app(replace(TEST_CONFIG, workers=0), handlers=registry))
    await enqueue(first, {"type": "echo"})
    assert value(await scrape(first), "jobq_jobs_enqueued_total", queue="default", type="echo") == 1
    assert value(await scrape(second), "jobq_jobs_enqueued_total", queue="default", type="echo") == 0


async def test_metrics_can_be_turned_off(aiohttp_client: Any, registry: Registry) -> None:
    client = await aiohttp_client(create_app(replace(TEST_CONFIG, workers=0, metrics=False), handlers=registry))
    assert METRICS not in client.app
    response = await client.get("/metrics")
    assert response.status == 404
    assert response.content_type == "application/problem+json"


async def test_openmetrics_is_served_when_asked_for(client: TestClient) -> None:
    response = await client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert (await response.text()).rstrip().endswith("# EOF")


async def test_a_failing_commit_observer_never_stops_the_store(tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    store = SQLiteStore(str(tmp_path / "jobq.db"))

    def broken(seconds: float) -> None:
        raise RuntimeError("observer down")

    store.on_commit = broken
    await store.open()
    try:
        [added] = await store.add([Job(id="kept", type="echo", payload={})])
        assert isinstance(added, Added) and added.created
    finally:
        await store.close()
    assert "the on_commit hook failed" in caplog.text
