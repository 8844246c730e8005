"""schemathesis against a live ``downloader serve``, from the service's own OpenAPI contract.

The test starts ``serve`` on a free port over a small store (two of the bundled sample
archives), checks that it serves the contract of :mod:`downloader.api.openapi`, and lets
schemathesis generate requests for every documented operation (query strings, JSON and form
bodies, path parameters, tokens and Basic credentials). Each answer must be no 5xx, a
documented status code with the documented content type and headers, and a body valid
against its schema. A second, stateful test follows the contract's links (a download's
answer -> its status, job, archive and cancel with its cancel_token; a GBIF key -> its
Download object and file), so generated calls also meet real jobs in every state.

Why schemathesis's pytest integration (``schema.parametrize()`` and ``as_state_machine``)
rather than the ``st`` CLI in a subprocess: one test per operation in the suite's own
report, failures shown with the request that caused them as a curl line, and the examples
bounded by hypothesis ``settings`` like the rest of the suite. Only positive generation
(requests the contract says are valid) is checked: negative cases would test the fuzzer's
idea of "invalid" against parameters that are deliberately lenient, like iDigBio's; a run
with negative cases too (about 1,500 requests) found no 5xx and nothing off the contract.

The limits are loose in this serve (100,000 new jobs per minute) so that the fuzzing reaches
the handlers instead of meeting 429s; 429 and 503 are in the contract all the same.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from downloader.api.openapi import document
from tests.support.serve import Serve

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = [
    ROOT / "tests" / "fixtures" / "dwca" / "dwca-simple-test-archive.zip",
    ROOT / "tests" / "fixtures" / "dwca" / "gbif-results.zip",
]
#: Generated requests per operation (about 35 operations): bounded so the whole run stays
#: around a minute on two busy cores. ``FUZZ_EXAMPLES=200 FUZZ_NEGATIVE=1`` runs deeper
#: (invalid requests too, checked for 5xx and answers outside the contract).
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "10"))
MODES = list(GenerationMode) if os.environ.get("FUZZ_NEGATIVE") else [GenerationMode.POSITIVE]
#: Scenarios of linked calls (each up to 6 steps) in the stateful test.
STATEFUL_SCENARIOS = int(os.environ.get("FUZZ_SCENARIOS", "8"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

#: Answers seen, by status code (reported at the end of the module, and checked to be
#: more than a pile of 404s).
SEEN: dict[int, int] = {}


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    from downloader.ingest.load import ingest_paths

    data = tmp_path_factory.mktemp("fuzz")
    _, failures = ingest_paths(data, SAMPLES)
    assert not failures, failures
    server = Serve(
        data,
        DOWNLOADER_WORKERS="1",
        DOWNLOADER_NEW_JOBS_PER_MINUTE="100000",
        DOWNLOADER_ACTIVE_JOBS_PER_REQUESTER="0",
        DOWNLOADER_EMAILS_PER_ADDRESS_PER_DAY="0",
        DOWNLOADER_ADMIN_TOKENS="fuzz-admin-token",
        DOWNLOADER_SHUTDOWN_GRACE_SECONDS="2",
    )
    try:
        yield server
    finally:
        server.stop()
    log = server.log_text()
    assert "Traceback" not in log, log[-4000:]


#: The contract, built in this process: collection needs it before any server runs
#: (schemathesis's lazy ``from_fixture`` loader fails under pytest 9). The served
#: document is checked to be this one in :func:`test_the_served_contract_is_the_one_fuzzed`.
schema = schemathesis.openapi.from_dict(document())
schema.config.generation.update(modes=MODES, max_examples=EXAMPLES)


def test_the_served_contract_is_the_one_fuzzed(serve: Serve) -> None:
    assert serve.get("/openapi.json").json() == document(server_url=serve.url)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_the_service_keeps_its_contract(case: schemathesis.Case, serve: Serve) -> None:
    response = case.call_and_validate(base_url=serve.url, checks=CHECKS, timeout=60)
    SEEN[response.status_code] = SEEN.get(response.status_code, 0) + 1


def test_sequences_of_calls_along_the_contract_links_keep_it(serve: Serve) -> None:
    # Stateful: the links of the contract (a download's answer -> its status, job, archive
    # and cancel with its cancel_token; a GBIF key -> its Download object and file) chain
    # generated calls on real jobs, which the per-operation test only meets by chance.
    contract = schemathesis.openapi.from_url(serve.url + "/openapi.json").include(
        operation_id=[
            "post_v2_download_",
            "get_v2_download_id",
            "delete_v2_download_id",
            "get_v1_jobs_id",
            "get_archives_id",
            "post_v1_occurrence_download_request",
            "get_v1_occurrence_download_key",
            "get_v1_occurrence_download_request_key",
        ]
    )
    contract.config.generation.update(modes=[GenerationMode.POSITIVE])
    steps: dict[str, int] = {}

    class Machine(contract.as_state_machine()):  # type: ignore[misc]  # a generated class
        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, object]:
            return {"base_url": serve.url, "timeout": 60}

        def after_call(self, response: schemathesis.Response, case: schemathesis.Case) -> None:
            label = f"{case.method} {case.path} {response.status_code}"
            steps[label] = steps.get(label, 0) + 1
            SEEN[response.status_code] = SEEN.get(response.status_code, 0) + 1

        def validate_response(
            self,
            response: schemathesis.Response,
            case: schemathesis.Case,
            additional_checks: object = None,
            **kwargs: object,
        ) -> None:
            case.validate_response(response, checks=CHECKS)

    Machine.run(
        settings=settings(
            max_examples=STATEFUL_SCENARIOS,
            stateful_step_count=6,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
    )
    print("schemathesis stateful steps:", dict(sorted(steps.items())))
    # The links were followed: a job the scenario asked for was then read by its id. Its
    # archive may not be built yet when the link is followed (409: the job was found, it is
    # still pending), as when this test runs alone on a fresh store.
    followed = (
        "GET /v2/download/{id} 200",
        "GET /v1/jobs/{id} 200",
        "GET /archives/{id} 200",
        "GET /archives/{id} 409",
    )
    assert any(k in steps for k in followed), steps


def test_the_fuzzing_reached_the_handlers() -> None:
    # Runs after the parametrized test (file order): the generated requests must have got
    # past routing and validation often enough to mean something.
    if not SEEN:
        pytest.skip("the fuzzing tests of this module did not run in this session")
    total = sum(SEEN.values())
    print(f"schemathesis: {total} requests, by status: {dict(sorted(SEEN.items()))}")
    assert total >= 100
    assert sum(n for code, n in SEEN.items() if 200 <= code < 300) >= 20
    assert not [code for code in SEEN if code >= 500]
