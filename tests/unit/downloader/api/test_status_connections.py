"""``GET /v2/download/{id}`` reads the SQLite store over connections kept open per thread:
it still sees other threads' and processes' writes at once."""

from __future__ import annotations

from downloader.jobs.sqlite import SQLiteJobStore
from tests.unit.downloader.conftest import ACER, Api


def test_status_follows_writes_from_other_threads_and_connections(api: Api) -> None:
    job_id = api.get("/v2/download/", params={"rq": ACER}).json()["id"]
    assert api.get(f"/v2/download/{job_id}").json()["records_written"] == 0
    for n in (5, 10, 15):
        api.ctx.jobs.update_progress(job_id, n, 20)
        doc = api.get(f"/v2/download/{job_id}").json()
        assert doc["records_written"] == n and doc["total_records"] == 20
    # A separate connection, as a worker process would have.
    other = SQLiteJobStore(api.ctx.jobs.path)  # type: ignore[attr-defined]
    other.update_progress(job_id, 19, 20)
    other.close()
    assert api.get(f"/status/{job_id}").json()["records_written"] == 19
