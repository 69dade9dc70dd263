"""Throttling and other faults against a real HTTP server on 127.0.0.1: AWSConfig's clients
retry, log it, and say which failed attempts AWS may have carried out.

The server answers like AWS Batch does when throttled (HTTP 429, TooManyRequestsException) a
set number of times, then succeeds. botocore's Stubber cannot show this: it skips retries.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from batchcrew.aws.config import AWSConfig, failed_attempts
from batchcrew.aws.monitor import Monitor
from batchcrew.errors import AWSError
from tests.support.faulty_endpoint import Fault, FaultyEndpoint

KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@dataclass
class Script:
    """What the fake Batch endpoint answers: `throttles` 429s first, then `final`."""

    throttles: int = 0
    final_status: int = 200
    final_body: dict[str, object] = field(default_factory=lambda: {"jobSummaryList": []})
    final_error: str = ""
    paths: list[str] = field(default_factory=list)


class FakeBatch(BaseHTTPRequestHandler):
    script: Script

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        self.rfile.read(length)
        self.script.paths.append(self.path)
        if len(self.script.paths) <= self.script.throttles:
            self.reply(429, {"message": "Too Many Requests"}, "TooManyRequestsException")
        else:
            self.reply(self.script.final_status, self.script.final_body, self.script.final_error)

    def reply(self, status: int, body: dict[str, object], error_type: str) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if error_type:
            self.send_header("x-amzn-ErrorType", error_type)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        """Keep the test output quiet."""


@pytest.fixture
def fake_batch(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Script]]:
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    script = Script()
    handler = type("ScriptedBatch", (FakeBatch,), {"script": script})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", script
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_throttled_twice_then_served_succeeds_and_logs_each_retry(
    fake_batch: tuple[str, Script], caplog: pytest.LogCaptureFixture
) -> None:
    endpoint_url, script = fake_batch
    script.throttles = 2
    aws = AWSConfig(region="us-east-1", endpoint_url=endpoint_url, credentials=KEYS)
    monitor = Monitor("defn", "q1", aws=aws)
    with caplog.at_level(logging.INFO, logger="batchcrew.aws.config"):
        frame = monitor.running()
    assert frame.empty
    assert script.paths == ["/v1/listjobs"] * 3
    retries = [record.getMessage() for record in caplog.records if "retrying" in record.message]
    assert retries == [
        "retrying ListJobs in us-east-1 (attempt 2 of 10) after HTTP 429 TooManyRequestsException",
        "retrying ListJobs in us-east-1 (attempt 3 of 10) after HTTP 429 TooManyRequestsException",
    ]


def test_when_attempts_run_out_the_error_names_operation_region_and_queue(
    fake_batch: tuple[str, Script],
) -> None:
    endpoint_url, script = fake_batch
    script.throttles = 100
    aws = AWSConfig(region="us-east-1", endpoint_url=endpoint_url, max_attempts=2, credentials=KEYS)
    with pytest.raises(AWSError) as caught:
        Monitor("defn", "q1", aws=aws).running()
    assert len(script.paths) == 2
    assert str(caught.value) == (
        "ListJobs in us-east-1 on job queue q1 failed: TooManyRequestsException: Too Many Requests"
    )


def test_a_client_error_is_not_retried(fake_batch: tuple[str, Script]) -> None:
    endpoint_url, script = fake_batch
    script.final_status = 400
    script.final_body = {"message": "jobQueue q1 does not exist"}
    script.final_error = "ClientException"
    aws = AWSConfig(region="us-east-1", endpoint_url=endpoint_url, credentials=KEYS)
    with pytest.raises(AWSError, match="ClientException: jobQueue q1 does not exist"):
        Monitor("defn", "q1", aws=aws).running()
    assert len(script.paths) == 1


@pytest.mark.parametrize(
    ("fault", "problem", "carried_out"),
    [
        (Fault("throttle", count=1), "HTTP 429 TooManyRequestsException", False),
        (Fault("server_error", count=1), "HTTP 500 ServerException", True),
        (Fault("reset", count=1), "ConnectionClosedError", True),
    ],
    ids=["throttled", "server error", "reset"],
)
def test_failed_attempts_say_whether_aws_may_have_carried_them_out(
    fake_batch: tuple[str, Script], fault: Fault, problem: str, carried_out: bool
) -> None:
    endpoint_url, script = fake_batch
    with FaultyEndpoint(endpoint_url) as endpoint:
        endpoint.inject("/v1/listjobs", fault)
        aws = AWSConfig(region="us-east-1", endpoint_url=endpoint.url, credentials=KEYS)
        with failed_attempts() as failed:
            assert Monitor("defn", "q1", aws=aws).running().empty
    assert len(failed) == 1 and len(script.paths) == 1  # one failed, the retry served
    assert failed[0].operation == "ListJobs"
    assert failed[0].problem.startswith(problem)
    assert failed[0].carried_out is carried_out


def test_failed_attempts_go_to_the_block_they_happen_in_when_blocks_nest() -> None:
    aws = AWSConfig(
        region="us-east-1", endpoint_url="http://127.0.0.1:1", max_attempts=1, credentials=KEYS
    )
    batch = aws.client("batch")
    with failed_attempts() as outer:
        with failed_attempts() as inner:
            pass  # nothing failed in here
        with pytest.raises(AWSError):
            aws.call("ListJobs", "job queue q", batch.list_jobs, jobQueue="q")
    assert inner == [] and [attempt.operation for attempt in outer] == ["ListJobs"]
