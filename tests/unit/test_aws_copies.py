"""The copies of a launch a retried SubmitJob made: the launch's own job chosen, copies no
worker can have started ended at once, the others with the launch (aws.copies)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from batchcrew.aws.config import FailedAttempt
from batchcrew.aws.copies import Copies
from batchcrew.aws.jobs import SubmittedJob
from batchcrew.errors import AWSError

NAME = "batchcrew-crew-a1b2"
CUT = FailedAttempt("SubmitJob", "ConnectionClosedError: cut", True)


class FakeJobs:
    """Jobs as the local Batch would list, describe and end them."""

    def __init__(self, jobs: dict[str, dict[str, Any]], broken: bool = False) -> None:
        self.jobs = jobs
        self.broken = broken
        self.ended: list[str] = []

    def named(self, name: str, job_queue: str) -> list[dict[str, Any]]:
        if self.broken:
            raise AWSError("ListJobs", "us-east-1", f"job queue {job_queue}", "HTTP 503")
        return [{"jobId": job_id, **job} for job_id, job in self.jobs.items()]

    def describe(self, job_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        return {job_id: self.jobs[job_id] for job_id in job_ids}

    def end(self, job_ids: Sequence[str], reason: str) -> list[str]:
        self.ended += job_ids
        return list(job_ids)


def copies_of(jobs: FakeJobs) -> tuple[Copies, list[str]]:
    said: list[str] = []
    copies = Copies(jobs, "queue", lambda operation, text, job: said.append(text), "ended")
    return copies, said


def test_the_answered_job_is_kept_and_copies_not_started_are_ended_at_once() -> None:
    jobs = FakeJobs(
        {
            "first": {"status": "RUNNABLE", "createdAt": 1},
            "running": {
                "status": "PENDING",
                "createdAt": 2,
                "arrayProperties": {"statusSummary": {"RUNNING": 1}},
            },
            "answered": {"status": "SUBMITTED", "createdAt": 3},
        }
    )
    copies, said = copies_of(jobs)
    answered = SubmittedJob("answered", NAME, None)
    assert copies.reconciled("a1b2", NAME, answered, [CUT, CUT]) is answered
    assert jobs.ended == ["first"]  # the array whose child runs may hold the launch's worker
    assert "made 2 more job(s)" in said[0] and "ended the 1 not started" in said[0]
    assert len(copies) == 1
    jobs.jobs["first"]["status"] = "FAILED"
    assert copies.active("a1b2") == ["running", "answered"]  # for the launch's end
    assert len(copies) == 0


def test_a_failed_submit_job_that_made_a_job_gives_the_launch_that_job() -> None:
    jobs = FakeJobs({"made": {"status": "RUNNABLE", "createdAt": 1, "jobArn": "arn:made"}})
    copies, said = copies_of(jobs)
    error = AWSError("SubmitJob", "us-east-1", "queue", "ReadTimeoutError", transient=True)
    made = copies.reconciled("a1b2", NAME, None, [CUT], error)
    assert made == SubmittedJob("made", NAME, "arn:made")
    assert "SubmitJob failed" in said[0] and "made no other job" in said[0]
    assert len(copies) == 0


def test_a_failed_submit_job_that_made_nothing_raises_its_error() -> None:
    error = AWSError("SubmitJob", "us-east-1", "queue", "ReadTimeoutError", transient=True)
    for jobs in (FakeJobs({}), FakeJobs({"x": {"status": "RUNNABLE"}}, broken=True)):
        copies, said = copies_of(jobs)
        with pytest.raises(AWSError) as raised:
            copies.reconciled("a1b2", NAME, None, [CUT], error)
        assert raised.value is error and said == []


def test_copies_that_cannot_be_looked_for_are_looked_for_again_at_the_end() -> None:
    jobs = FakeJobs({"answered": {"status": "RUNNABLE"}}, broken=True)
    copies, said = copies_of(jobs)
    answered = SubmittedJob("answered", NAME, None)
    assert copies.reconciled("a1b2", NAME, answered, [CUT]) is answered
    assert "could not be looked for" in said[0]
    assert len(copies) == 1
    assert copies.active("a1b2") == []  # still broken: said, not raised
    assert "its copies are unknown" in said[1]
