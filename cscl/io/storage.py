"""One way to read and write files whether they live on local disk or in an S3-compatible store.

URIs: `s3://bucket/key`, `file:///abs/path` or a plain path. The S3 endpoint comes from
`endpoint_url=` or `AWS_ENDPOINT_URL` (MinIO, moto, Ceph…); credentials from the standard AWS chain.
Writes are atomic: a temporary name in the same place, renamed when complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from cscl.errors import ErrorKind, StorageError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files 0600; finished files get the usual permissions (0666 minus the umask).
_FILE_MODE = 0o666 & ~_umask()

_TRANSIENT_CODES = {
    "RequestTimeout",
    "SlowDown",
    "InternalError",
    "ServiceUnavailable",
    "503",
    "500",
}


def is_s3(uri: str | os.PathLike) -> bool:
    return str(uri).startswith("s3://")


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/a/b` → ("bucket", "a/b")."""
    p = urlparse(str(uri))
    if p.scheme != "s3" or not p.netloc:
        raise StorageError(f"not an s3:// URI: {uri!r}", hint="write it as s3://bucket/key")
    return p.netloc, p.path.lstrip("/")


def local_path(uri: str | os.PathLike) -> Path:
    """A local path from a plain path or a file:// URI."""
    s = str(uri)
    if s.startswith("file://"):
        return Path(urlparse(s).path)
    if is_s3(s):
        raise StorageError(f"{s} is an S3 URI, not a local path")
    return Path(s)


def resolve_relative(uri: str, base: str) -> str:
    """Resolve `uri` against the folder holding `base` (a manifest), for relative slide paths.

    Lets a cohort folder move between disk and S3 without rewriting its manifest.
    """
    if is_s3(uri) or uri.startswith("file://") or os.path.isabs(uri):
        return uri
    if is_s3(base):
        bucket, key = parse_s3_uri(base)
        parent = key.rsplit("/", 1)[0] if "/" in key else ""
        return f"s3://{bucket}/{parent + '/' if parent else ''}{uri}"
    return str((local_path(base).parent / uri).resolve())


@dataclass(frozen=True)
class Store:
    """The object store of this process: which S3 endpoint it talks to.

    Why one per process: the endpoint is a property of the deployment, not of each call. Entry
    points (the CLI's `--s3-endpoint`, a component's `s3_endpoint`) set it once with
    `configure_store`; everything else just reads and writes URIs.
    """

    endpoint_url: str | None = None

    @property
    def endpoint(self) -> str | None:
        return self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None


_STORE = Store()


def current_store() -> Store:
    return _STORE


def configure_store(endpoint_url: str | None = None) -> Store:
    """Set this process's store (None: the standard AWS chain, incl. AWS_ENDPOINT_URL)."""
    global _STORE
    _STORE = Store(endpoint_url or None)
    return _STORE


def s3_client(endpoint_url: str | None = None, *, max_attempts: int = 5):
    """A boto3 S3 client with retries (adaptive backoff) for transient errors."""
    import boto3
    from botocore.config import Config

    endpoint_url = endpoint_url or current_store().endpoint
    cfg = Config(
        retries={"max_attempts": max_attempts, "mode": "adaptive"},
        connect_timeout=10,
        read_timeout=120,
        s3={"addressing_style": "path"},
    )
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        config=cfg,
    )


def _explain_s3(exc: Exception, uri: str, endpoint_url: str | None) -> StorageError:
    """Turn botocore errors into one message that names the object and what to do."""
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    ep = endpoint_url or current_store().endpoint or "AWS default endpoint"
    if isinstance(exc, EndpointConnectionError):
        return StorageError(
            f"cannot reach S3 endpoint {ep} for {uri}",
            hint="check --s3-endpoint / AWS_ENDPOINT_URL and that the server is running",
        )
    if isinstance(exc, NoCredentialsError):
        return StorageError(
            f"no S3 credentials for {uri}",
            hint="set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile (standard AWS chain)",
        )
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in {"NoSuchBucket"}:
            return StorageError(
                f"bucket of {uri} does not exist at {ep}",
                hint="create it or fix the URI",
                kind=ErrorKind.NOT_FOUND,
            )
        if code in {"404", "NoSuchKey", "NotFound"}:
            return StorageError(
                f"object {uri} not found at {ep}",
                hint="check the key or upload it",
                kind=ErrorKind.NOT_FOUND,
            )
        if code in {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"}:
            return StorageError(
                f"access denied to {uri} at {ep} ({code})",
                hint="check the S3 credentials and the bucket policy",
                kind=ErrorKind.FORBIDDEN,
            )
        return StorageError(f"S3 error {code} for {uri} at {ep}: {exc}")
    return StorageError(f"S3 request for {uri} failed: {exc}")


def _with_retries(fn, uri: str, endpoint_url: str | None, attempts: int = 4):
    """Run an S3 call, retrying transient faults with exponential backoff; explain the rest."""
    from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError

    delay = 0.2
    for i in range(attempts):
        try:
            return fn()
        except (ClientError, ConnectionClosedError, EndpointConnectionError) as exc:
            code = ""
            if isinstance(exc, ClientError):
                code = str(exc.response.get("Error", {}).get("Code", ""))
            transient = code in _TRANSIENT_CODES or isinstance(exc, ConnectionClosedError)
            if not transient or i == attempts - 1:
                raise _explain_s3(exc, uri, endpoint_url) from exc
            time.sleep(delay)
            delay *= 2
        except Exception as exc:  # NoCredentialsError and friends
            raise _explain_s3(exc, uri, endpoint_url) from exc
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class ObjectInfo:
    uri: str
    size: int
    etag: str


def stat(uri: str, endpoint_url: str | None = None) -> ObjectInfo:
    """Size and ETag (or a content hash for local files) of an object; clear error if missing."""
    if is_s3(uri):
        bucket, key = parse_s3_uri(uri)
        client = s3_client(endpoint_url)
        head = _with_retries(lambda: client.head_object(Bucket=bucket, Key=key), uri, endpoint_url)
        return ObjectInfo(uri, int(head["ContentLength"]), head["ETag"].strip('"'))
    p = local_path(uri)
    if not p.exists():
        raise StorageError(f"file not found: {p}", hint="check the path in the manifest")
    return ObjectInfo(str(p), p.stat().st_size, f"mtime-{int(p.stat().st_mtime)}")


def exists(uri: str, endpoint_url: str | None = None) -> bool:
    try:
        stat(uri, endpoint_url)
        return True
    except StorageError as err:
        if "not found" in err.message:
            return False
        raise


def read_bytes(uri: str, endpoint_url: str | None = None) -> bytes:
    if is_s3(uri):
        bucket, key = parse_s3_uri(uri)
        client = s3_client(endpoint_url)
        obj = _with_retries(lambda: client.get_object(Bucket=bucket, Key=key), uri, endpoint_url)
        return obj["Body"].read()
    p = local_path(uri)
    try:
        return p.read_bytes()
    except FileNotFoundError as exc:
        raise StorageError(f"file not found: {p}") from exc
    except PermissionError as exc:
        raise StorageError(f"cannot read {p}: permission denied") from exc


def write_bytes(uri: str, data: bytes, endpoint_url: str | None = None) -> None:
    """Write atomically (local: temp + rename; S3: a PUT is already atomic)."""
    if is_s3(uri):
        bucket, key = parse_s3_uri(uri)
        client = s3_client(endpoint_url)
        _with_retries(
            lambda: client.put_object(Bucket=bucket, Key=key, Body=data), uri, endpoint_url
        )
        return
    with atomic_path(local_path(uri)) as tmp:
        tmp.write_bytes(data)


def md5_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def download(uri: str, dest: Path, endpoint_url: str | None = None, *, verify: bool = True) -> Path:
    """Copy an object to a local file atomically; verify size (and MD5 for single-part ETags)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not is_s3(uri):
        src = local_path(uri)
        if not src.exists():
            raise StorageError(f"file not found: {src}")
        with atomic_path(dest) as tmp:
            shutil.copyfile(src, tmp)
        return dest
    bucket, key = parse_s3_uri(uri)
    client = s3_client(endpoint_url)
    info = stat(uri, endpoint_url)
    with atomic_path(dest) as tmp:
        _with_retries(lambda: client.download_file(bucket, key, str(tmp)), uri, endpoint_url)
        if verify:
            size = tmp.stat().st_size
            if size != info.size:
                raise StorageError(f"download of {uri} is {size} bytes, expected {info.size}")
            if "-" not in info.etag and md5_file(tmp) != info.etag:
                raise StorageError(
                    f"checksum mismatch for {uri}", hint="rerun; the object may be changing"
                )
    return dest


def upload(path: Path, uri: str, endpoint_url: str | None = None) -> None:
    if not is_s3(uri):
        dest = local_path(uri)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(dest) as tmp:
            shutil.copyfile(path, tmp)
        return
    bucket, key = parse_s3_uri(uri)
    client = s3_client(endpoint_url)
    _with_retries(lambda: client.upload_file(str(path), bucket, key), uri, endpoint_url)


def list_uris(prefix: str, endpoint_url: str | None = None) -> list[str]:
    """All object URIs under a prefix (S3) or files under a folder (local), sorted."""
    if is_s3(prefix):
        bucket, key = parse_s3_uri(prefix)
        client = s3_client(endpoint_url)
        out: list[str] = []

        def _list():
            paginator = client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=bucket, Prefix=key):
                out.extend(f"s3://{bucket}/{o['Key']}" for o in page.get("Contents", []))

        _with_retries(_list, prefix, endpoint_url)
        return sorted(out)
    root = local_path(prefix)
    if not root.exists():
        return []
    return sorted(str(p) for p in root.rglob("*") if p.is_file())


@contextlib.contextmanager
def atomic_path(dest: Path) -> Iterator[Path]:
    """Yield a temporary path next to `dest`; rename onto `dest` only if the block succeeds.

    Nothing half-written is ever visible under the final name.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
