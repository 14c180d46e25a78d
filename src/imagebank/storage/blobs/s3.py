"""S3-compatible object storage (AWS S3, MinIO, Ceph RGW, ...), through boto3.

A single PUT is atomic in S3's model: an object becomes visible whole or not at all, so no temp-name
dance is needed. Large streams go through boto3's managed multipart upload, which only creates the
object when the upload completes.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any, BinaryIO

from imagebank.errors import NotFound, StorageError
from imagebank.storage.blobs.base import BlobBatch, ImmediateBatch


class S3BlobStore:
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        create_bucket: bool = True,
    ) -> None:
        import boto3
        from botocore.config import Config

        if not bucket:
            raise StorageError("S3 blob store needs a bucket: s3://BUCKET/prefix")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.url = f"s3://{bucket}/{self.prefix}"
        self._client: Any = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=Config(retries={"max_attempts": 5, "mode": "standard"}),
        )
        if create_bucket:
            self._ensure_bucket()

    def _ensure_bucket(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError:
            try:
                self._client.create_bucket(Bucket=self.bucket)
            except ClientError as exc:
                raise StorageError(f"S3 bucket {self.bucket!r} is not reachable: {exc}") from exc

    def _key(self, key: str) -> str:
        return self.prefix + key

    def put(self, key: str, data: bytes | BinaryIO) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        body = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
        try:
            self._client.upload_fileobj(body, self.bucket, self._key(key))
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"cannot write blob {key} to S3: {exc}") from exc

    def open(self, key: str) -> BinaryIO:
        from botocore.exceptions import ClientError

        try:
            obj = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise NotFound(f"blob {key} not found") from None
            raise StorageError(f"cannot read blob {key} from S3: {exc}") from exc
        return obj["Body"]  # type: ignore[no-any-return]

    def get(self, key: str) -> bytes:
        stream = self.open(key)
        try:
            return stream.read()
        finally:
            stream.close()

    def _head(self, key: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        try:
            return self._client.head_object(Bucket=self.bucket, Key=self._key(key))  # type: ignore[no-any-return]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return None
            raise StorageError(f"cannot stat blob {key} in S3: {exc}") from exc

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def size(self, key: str) -> int:
        head = self._head(key)
        if head is None:
            raise NotFound(f"blob {key} not found")
        return int(head["ContentLength"])

    def modified_at(self, key: str) -> float:
        head = self._head(key)
        if head is None:
            raise NotFound(f"blob {key} not found")
        return float(head["LastModified"].timestamp())

    def delete(self, key: str) -> None:
        self._client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def batch(self) -> BlobBatch:
        return ImmediateBatch(self)  # a PUT is atomic and durable on its own

    def keys(self) -> Iterator[str]:
        paginator = self._client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
            for item in page.get("Contents", ()):
                yield item["Key"][len(self.prefix):]
