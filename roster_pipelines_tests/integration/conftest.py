"""Servers for the drop-zone integration tests (session-scoped; fail, never skip)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from roster_pipelines_tests.integration.servers import (
    S3Server,
    ServiceUnavailable,
    SSHServer,
    moto_s3_server,
    openssh_server,
)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    try:
        with moto_s3_server() as server:
            yield server
    except ServiceUnavailable as err:
        pytest.fail(f"the S3-compatible test server could not start: {err}")


@pytest.fixture(scope="session")
def ssh_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHServer]:
    folder: Path = tmp_path_factory.mktemp("sshd")
    try:
        with openssh_server(folder) as server:
            yield server
    except ServiceUnavailable as err:
        pytest.fail(f"the OpenSSH test server could not start: {err}")
