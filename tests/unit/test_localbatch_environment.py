"""What a local Batch job sees of the host and of AWS."""

from __future__ import annotations

import os

from batchcrew.localbatch.environment import host_environment, job_environment


def test_jobs_never_see_the_hosts_aws_configuration() -> None:
    host = {"PATH": "/usr/bin", "HOME": "/home/me", "AWS_PROFILE": "production", "TOKEN": "t"}
    base = host_environment(host, "/venv/bin/python")
    env = job_environment(base, ["MOTO_HTTP_ENDPOINT=http://host.docker.internal:5000"])
    assert "AWS_PROFILE" not in env and "TOKEN" not in env
    assert env["AWS_CONFIG_FILE"] == env["AWS_SHARED_CREDENTIALS_FILE"] == os.devnull
    assert env["AWS_EC2_METADATA_DISABLED"] == "true"
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == ("testing", "testing")
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:5000"


def test_a_jobs_own_settings_win() -> None:
    base = host_environment({"PATH": "/bin"}, "/venv/bin/python")
    env = job_environment(base, ["AWS_ENDPOINT_URL=http://127.0.0.1:9", "MOTO_HTTP_ENDPOINT=x"])
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9"
