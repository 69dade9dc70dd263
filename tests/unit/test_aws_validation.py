"""Argument checks made before any AWS Batch call (batchcrew.aws.validation)."""

from __future__ import annotations

import pytest

from batchcrew.aws.validation import (
    JOB_STATUSES,
    check_command,
    check_definition_reference,
    check_int,
    check_job_ids,
    check_job_name,
    check_optional_bool,
    check_platform,
    check_priority,
    check_queue_reference,
    check_resource_name,
    check_role_arn,
    check_statuses,
    check_string_map,
    check_text,
    environment_list,
    shared_request_fields,
    timeout_request,
)


@pytest.mark.parametrize("name", ["a", "job-1", "Fit_model-2", "x" * 128, "9lives"])
def test_valid_job_names(name: str) -> None:
    assert check_job_name(name) == name


@pytest.mark.parametrize("name", ["", "-leading", "_leading", "has space", "dot.ted", "x" * 129])
def test_invalid_job_names_say_the_rule(name: str) -> None:
    with pytest.raises(ValueError, match="name"):
        check_job_name(name)


def test_definition_names_allow_a_leading_underscore_but_no_colon() -> None:
    assert check_resource_name("job_definition", "_private-def") == "_private-def"
    with pytest.raises(ValueError, match="job_definition must have 1 to 128"):
        check_resource_name("job_definition", "defn:3")


ACCOUNT_ARN = "arn:aws:batch:us-east-1:123456789012"


@pytest.mark.parametrize(
    "reference",
    [
        "defn",
        "_defn-2",
        "defn:3",
        f"{ACCOUNT_ARN}:job-definition/defn:3",
        f"{ACCOUNT_ARN}:job-definition/defn",
        "arn:aws-us-gov:batch:us-gov-west-1:123456789012:job-definition/defn:12",
    ],
)
def test_definition_references_by_name_revision_or_arn(reference: str) -> None:
    assert check_definition_reference(reference) == reference


@pytest.mark.parametrize(
    "reference",
    ["my definition", "defn:0", "defn:x", "defn:3:4", f"{ACCOUNT_ARN}:job-queue/defn", "d" * 129],
)
def test_bad_definition_references_say_what_is_allowed(reference: str) -> None:
    with pytest.raises(ValueError, match="job_definition must be a name of 1 to 128 letters"):
        check_definition_reference(reference)


def test_queue_references_by_name_or_arn() -> None:
    assert check_queue_reference("q_1") == "q_1"
    assert check_queue_reference(f"{ACCOUNT_ARN}:job-queue/q1") == f"{ACCOUNT_ARN}:job-queue/q1"
    for bad in ("my queue", "q:1", f"{ACCOUNT_ARN}:job-definition/q1"):
        with pytest.raises(ValueError, match=r"job_queue must be a name of .* or a job queue ARN"):
            check_queue_reference(bad)


def test_text_refuses_empty_padded_and_non_strings() -> None:
    assert check_text("job_queue", "q") == "q"
    with pytest.raises(ValueError, match="job_queue"):
        check_text("job_queue", "")
    with pytest.raises(ValueError, match="job_queue"):
        check_text("job_queue", " q ")
    with pytest.raises(TypeError, match="job_queue must be a string, not int"):
        check_text("job_queue", 3)


def test_job_ids_one_or_many_without_repeats() -> None:
    assert check_job_ids("a") == ["a"]
    assert check_job_ids(("b", "a", "b")) == ["b", "a"]
    with pytest.raises(TypeError, match="ids must be a job id or a list"):
        check_job_ids(42)
    with pytest.raises(ValueError, match="ids"):
        check_job_ids(["a", ""])


def test_a_command_is_a_list_of_strings() -> None:
    assert check_command(("echo", "hi")) == ["echo", "hi"]
    with pytest.raises(TypeError, match="not the string 'echo hi'"):
        check_command("echo hi")
    with pytest.raises(ValueError, match="non-empty list"):
        check_command([])
    with pytest.raises(TypeError, match="only strings"):
        check_command(["sleep", 3])
    with pytest.raises(ValueError, match="empty strings"):
        check_command(["echo", ""])


def test_string_maps() -> None:
    assert check_string_map("tags", None) is None
    assert check_string_map("tags", {"a": "1"}) == {"a": "1"}
    with pytest.raises(TypeError, match=r"tags\['a'\] must be a string, not int"):
        check_string_map("tags", {"a": 1})
    with pytest.raises(ValueError, match="tags keys"):
        check_string_map("tags", {"": "x"})
    with pytest.raises(TypeError, match="tags must be a mapping"):
        check_string_map("tags", [("a", "b")])


def test_environment_refuses_the_reserved_aws_batch_prefix() -> None:
    assert environment_list({"A": "1", "B": "2"}) == [
        {"name": "A", "value": "1"},
        {"name": "B", "value": "2"},
    ]
    with pytest.raises(ValueError, match="'AWS_BATCH_JOB_ID' is reserved"):
        environment_list({"AWS_BATCH_JOB_ID": "x"})


def test_timeout_follows_the_aws_minimum_of_60_seconds() -> None:
    assert timeout_request(None) is None
    assert timeout_request(60) == {"attemptDurationSeconds": 60}
    with pytest.raises(ValueError, match="seconds_timeout must be at least 60, not 59"):
        timeout_request(59)
    with pytest.raises(TypeError, match="seconds_timeout must be an int"):
        timeout_request(60.5)


def test_integers_with_ranges() -> None:
    assert check_int("scheduling_priority", 9999, 0, 9999) == 9999
    with pytest.raises(ValueError, match="at least 0 and at most 9999, not 10000"):
        check_int("scheduling_priority", 10000, 0, 9999)
    with pytest.raises(TypeError, match="revision must be an int, not bool"):
        check_int("revision", True, 1)
    numpy = pytest.importorskip("numpy")
    assert check_int("revision", numpy.int64(3), minimum=1) == 3  # as read from a DataFrame
    assert type(check_int("revision", numpy.int64(3), minimum=1)) is int


def test_optional_booleans() -> None:
    assert check_optional_bool("propagate_tags", None) is None
    assert check_optional_bool("propagate_tags", False) is False
    with pytest.raises(TypeError, match="propagate_tags must be True, False or None"):
        check_optional_bool("propagate_tags", "yes")


def test_role_arns() -> None:
    arn = "arn:aws:iam::123456789012:role/path/batch"
    assert check_role_arn("job_role_arn", arn) == arn
    assert check_role_arn("job_role_arn", "arn:aws-cn:iam::123456789012:role/r")
    with pytest.raises(ValueError, match="job_role_arn must be an IAM role ARN"):
        check_role_arn("job_role_arn", "batch-role")


def test_statuses_come_back_in_lifecycle_order_lower_case() -> None:
    assert check_statuses(None) == list(JOB_STATUSES)
    assert check_statuses("RUNNING") == ["running"]
    assert check_statuses(["failed", "submitted"]) == ["submitted", "failed"]
    with pytest.raises(ValueError, match="status must be one of submitted, pending"):
        check_statuses("done")
    with pytest.raises(ValueError, match="at least one"):
        check_statuses([])


def test_platforms() -> None:
    assert check_platform("ec2") == "EC2"
    with pytest.raises(ValueError, match="platform_capabilities must be one of EC2, FARGATE"):
        check_platform("EKS")


def test_fields_shared_by_register_and_submit_leave_out_what_was_not_given() -> None:
    assert shared_request_fields(None, None, None, None) == {}
    assert shared_request_fields(120, {"a": "b"}, False, {"p": "v"}) == {
        "timeout": {"attemptDurationSeconds": 120},
        "tags": {"a": "b"},
        "propagateTags": False,
        "parameters": {"p": "v"},
    }
    with pytest.raises(TypeError, match=r"parameters\['p'\] must be a string"):
        shared_request_fields(None, None, None, {"p": 1})


def test_priorities() -> None:
    assert check_priority("scheduling_priority", None) is None
    assert check_priority("scheduling_priority", 0) == 0
    with pytest.raises(ValueError, match="scheduling_priority must be at least 0 and at most 9999"):
        check_priority("scheduling_priority", -1)
