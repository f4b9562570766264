"""Real servers for the drop-zone tests and the benchmark: moto's S3 server, OpenSSH sshd.

Both are started as separate processes on random loopback ports. When one cannot
start, the caller fails (never skips): these are required services (ARCHITECTURE.md).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"


class ServiceUnavailable(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], log: Path) -> subprocess.Popen:
    """Start a server with its output in `log` (a pipe nobody reads would fill and block it)."""
    with log.open("wb") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)


def _wait_for_port(
    port: int, proc: subprocess.Popen, what: str, log: Path, timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = log.read_text(errors="replace")[-2000:]
            raise ServiceUnavailable(f"{what} exited with {proc.returncode}: {out}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise ServiceUnavailable(f"{what} did not listen on 127.0.0.1:{port} within {timeout} s")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    access_key: str = "testing"
    secret_key: str = "testing"
    region: str = "us-east-1"

    def client(self):
        import boto3

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )


@contextmanager
def moto_s3_server() -> Iterator[S3Server]:
    """moto in server mode (`moto_server`), a separate process speaking HTTP."""
    exe = Path(sys.executable).with_name("moto_server")
    if not exe.exists():
        raise ServiceUnavailable(f"{exe} is missing: pip install -e '.[dev]' (moto[server])")
    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="moto_")) / "moto_server.log"
    proc = _start([str(exe), "-H", "127.0.0.1", "-p", str(port)], log)
    try:
        _wait_for_port(port, proc, "moto_server", log)
        url = f"http://127.0.0.1:{port}"
        urllib.request.urlopen(f"{url}/moto-api/reset", data=b"", timeout=10).read()
        yield S3Server(endpoint_url=url)
    finally:
        _stop(proc)
        shutil.rmtree(log.parent, ignore_errors=True)  # (a failed start quoted the log)


@dataclass(frozen=True)
class SSHServer:
    host: str
    port: int
    username: str
    private_key: Path
    known_hosts: Path


@contextmanager
def openssh_server(folder: Path) -> Iterator[SSHServer]:
    """An OpenSSH sshd on a random loopback port, its own host key, key auth for root.

    `folder` holds the host key, the client key, authorized_keys, known_hosts (the
    host key the client must see) and the config.
    """
    if not os.path.exists(SSHD):
        raise ServiceUnavailable(f"{SSHD} is missing: apt-get install openssh-server (.ci/run)")
    keygen = shutil.which("ssh-keygen")
    if not keygen:
        raise ServiceUnavailable("ssh-keygen is missing (openssh-client)")
    folder.mkdir(parents=True, exist_ok=True)
    host_key, client_key = folder / "host_ed25519", folder / "client_ed25519"
    for key in (host_key, client_key):
        subprocess.run(
            [keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
            check=True,
            capture_output=True,
        )
    authorized = folder / "authorized_keys"
    authorized.write_text(client_key.with_suffix(".pub").read_text())
    authorized.chmod(0o600)
    port = free_port()
    known_hosts = folder / "known_hosts"
    key_type, key_b64 = host_key.with_suffix(".pub").read_text().split()[:2]
    known_hosts.write_text(f"[127.0.0.1]:{port} {key_type} {key_b64}\n")
    config = folder / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {host_key}",
                f"PidFile {folder / 'sshd.pid'}",
                f"AuthorizedKeysFile {authorized}",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password",
                "StrictModes no",
                "UsePAM no",
                "Subsystem sftp internal-sftp",
                "LogLevel ERROR",
                "",
            ]
        )
    )
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation folder
    log = folder / "sshd.log"
    proc = _start([SSHD, "-D", "-e", "-f", str(config)], log)
    try:
        _wait_for_port(port, proc, "sshd", log)
        yield SSHServer(
            host="127.0.0.1",
            port=port,
            username=os.environ.get("USER", "root") if os.geteuid() != 0 else "root",
            private_key=client_key,
            known_hosts=known_hosts,
        )
    finally:
        _stop(proc)
