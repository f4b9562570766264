"""A drop zone on an SFTP server, through paramiko.

Layout: ``<root>/<district>/<file>`` on the server (often each district's home or a
chroot). The server's host key is always verified against a known_hosts file; unknown
or changed host keys are refused (no trust on first use). Authentication by private
key or password.
"""

from __future__ import annotations

import posixpath
import stat
from contextlib import AbstractContextManager
from typing import Any, BinaryIO

from roster_pipelines.lib.drops import check_file_name, check_id
from roster_pipelines.lib.dropzones.base import DropZone, ZoneEntry, ZoneListing, bounded_listing


class SFTPZone(DropZone):
    kind = "sftp"

    def __init__(
        self,
        host: str,
        *,
        port: int = 22,
        username: str,
        known_hosts: str,
        password: str | None = None,
        private_key_path: str | None = None,
        private_key_passphrase: str | None = None,
        root: str = ".",
        timeout: float = 30.0,
    ) -> None:
        if not host or not username:
            raise ValueError("the SFTP drop zone needs a host and a username")
        if not known_hosts:
            raise ValueError(
                "the SFTP drop zone needs a known_hosts file (ROSTER_SFTP_KNOWN_HOSTS): "
                "host keys are always verified"
            )
        if not password and not private_key_path:
            raise ValueError("the SFTP drop zone needs a private key or a password")
        self.host, self.port, self.username = host, int(port), username
        self.known_hosts, self.password = known_hosts, password or None
        self.private_key_path = private_key_path or None
        self.private_key_passphrase = private_key_passphrase or None
        self.root = root or "."
        self.timeout = timeout
        self._ssh: Any = None
        self._sftp: Any = None

    def describe(self) -> str:
        return f"sftp://{self.username}@{self.host}:{self.port}/{self.root}"

    @property
    def sftp(self) -> Any:
        if self._sftp is None:
            import paramiko

            ssh = paramiko.SSHClient()
            ssh.load_host_keys(self.known_hosts)  # only these keys are trusted
            ssh.set_missing_host_key_policy(paramiko.RejectPolicy())
            pkey = None
            if self.private_key_path:
                pkey = paramiko.PKey.from_path(
                    self.private_key_path, passphrase=self.private_key_passphrase
                )
            ssh.connect(
                self.host,
                port=self.port,
                username=self.username,
                password=self.password,
                pkey=pkey,
                look_for_keys=False,
                allow_agent=False,
                timeout=self.timeout,
                banner_timeout=self.timeout,
                auth_timeout=self.timeout,
            )
            self._ssh, self._sftp = ssh, ssh.open_sftp()
        return self._sftp

    def close(self) -> None:
        if self._sftp is not None:
            self._sftp.close()
        if self._ssh is not None:
            self._ssh.close()
        self._ssh = self._sftp = None

    def _districts(self) -> list[str]:
        return [
            a.filename
            for a in self.sftp.listdir_attr(self.root)
            if a.st_mode is not None and stat.S_ISDIR(a.st_mode)
        ]

    def _folder(self, district: str, limit: int) -> list[ZoneEntry]:
        entries = []
        # listdir_attr reports each entry itself (lstat): symlinks are not followed.
        for a in self.sftp.listdir_iter(posixpath.join(self.root, district)):
            entries.append(
                ZoneEntry(
                    district=district,
                    name=a.filename,
                    size=int(a.st_size or 0),
                    version=str(a.st_mtime),
                    mtime=float(a.st_mtime or 0),
                    regular=a.st_mode is not None and stat.S_ISREG(a.st_mode),
                )
            )
            if len(entries) > limit:
                break
        return entries

    def list(self, *, max_objects: int, start_after: str | None = None) -> ZoneListing:
        return bounded_listing(
            self._districts(), self._folder, max_objects=max_objects, start_after=start_after
        )

    def open(self, district: str, name: str) -> AbstractContextManager[BinaryIO]:
        path = posixpath.join(self.root, check_id("district", district), check_file_name(name))
        attrs = self.sftp.lstat(path)
        if attrs.st_mode is None or not stat.S_ISREG(attrs.st_mode):
            raise OSError(f"{path} is not a regular file")
        handle = self.sftp.open(path, "rb")
        handle.prefetch(attrs.st_size)
        return handle
