"""A drop zone in S3 or any S3-compatible store (MinIO, Ceph, moto), through boto3.

Layout: ``s3://<bucket>/<prefix><district>/<file>``. One tick lists the zone in one
flat, paginated `ListObjectsV2` (1,000 keys per request), bounded by `max_objects`,
and resumes after the last whole district on the next tick.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, BinaryIO

from roster_pipelines.lib.drops import check_file_name, check_id
from roster_pipelines.lib.dropzones.base import DropZone, ZoneEntry, ZoneListing


def _timestamp(value: str | datetime) -> float:
    if isinstance(value, datetime):  # a client with botocore's default parser
        return value.timestamp()
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class S3Zone(DropZone):
    kind = "s3"

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        client: Any = None,
    ) -> None:
        if not bucket:
            raise ValueError("the S3 drop zone needs a bucket (ROSTER_S3_BUCKET)")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._client = client
        self._client_args = {
            "endpoint_url": endpoint_url or None,
            "region_name": region_name or None,
            "aws_access_key_id": aws_access_key_id or None,
            "aws_secret_access_key": aws_secret_access_key or None,
        }

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3
            import botocore.session
            from botocore.config import Config

            # Timestamps stay strings: parsing 1,000 LastModified values per page with
            # dateutil costs more than the listing itself (we parse the few we need).
            core = botocore.session.get_session()
            core.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=str)
            self._client = boto3.session.Session(botocore_session=core).client(
                "s3",
                config=Config(retries={"max_attempts": 3, "mode": "standard"}),
                **self._client_args,
            )
        return self._client

    def describe(self) -> str:
        where = self._client_args["endpoint_url"] or "aws"
        return f"s3://{self.bucket}/{self.prefix} ({where})"

    def list(self, *, max_objects: int, start_after: str | None = None) -> ZoneListing:
        listing = ZoneListing()
        args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix}
        if start_after is not None:
            # '0' sorts right after '/': every key of that district's folder is skipped.
            args["StartAfter"] = f"{self.prefix}{start_after}0"
        truncated = False
        while True:
            remaining = max_objects - listing.objects_listed
            if remaining <= 0:
                truncated = True
                break
            page = self.client.list_objects_v2(**args, MaxKeys=min(1000, remaining))
            for obj in page.get("Contents", []):
                listing.objects_listed += 1
                rest = obj["Key"][len(self.prefix) :]
                district, sep, name = rest.partition("/")
                if not sep or not name:
                    continue  # a key at the zone's root, or a folder marker
                listing.entries.append(
                    ZoneEntry(
                        district=district,
                        name=name,
                        size=int(obj["Size"]),
                        version=f"{obj.get('ETag', '')}@{obj['LastModified']}",
                        mtime=_timestamp(obj["LastModified"]),
                    )
                )
            if not page.get("IsTruncated"):
                break
            args["ContinuationToken"] = page["NextContinuationToken"]
        districts = sorted({e.district for e in listing.entries})
        if truncated and districts:
            if len(districts) == 1:
                listing.overfull.append(districts[0])  # one folder larger than a tick's budget
                listing.complete_districts = districts
                listing.resume_after = districts[0]
            else:  # the last folder may be cut short: list it whole next tick
                listing.complete_districts = districts[:-1]
                listing.resume_after = districts[-2]
        else:
            listing.complete_districts = districts
            listing.whole = start_after is None
        return listing

    def open(self, district: str, name: str) -> AbstractContextManager[BinaryIO]:
        key = f"{self.prefix}{check_id('district', district)}/{check_file_name(name)}"
        body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        return contextlib.closing(body)  # a StreamingBody: read(n) in chunks
