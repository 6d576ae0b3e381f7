"""One way to read and write files whether they live on local disk or in an S3-compatible store.

URIs: `s3://bucket/key`, `file:///abs/path` or a plain path. Credentials come from the standard
AWS chain. The S3 endpoint (MinIO, moto, Ceph…) is a property of the deployment, not of each
call: entry points (the CLI's `--s3-endpoint`, a KFP component's `s3_endpoint`) call
`configure_store(url)` once; library code calls `read_bytes(uri)`, `download(uri, dest)`,
`fetch(uri)`… with no endpoint. Without `configure_store`, `AWS_ENDPOINT_URL` (else AWS) is used.

The process `Store` owns everything that depends on the endpoint: one boto3 client per
(endpoint, thread), retries and error messages, the download-once cache (`fetch`) and content
hashes (`sha256`). Writes are atomic: a temporary name in the same place, renamed when complete.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote, urlparse

from cscl.errors import ErrorKind, StorageError
from cscl.runtime import sha256_file

T = TypeVar("T")


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

# The environment that decides which credentials a new client resolves: a client made before a
# change (a test exporting dummy keys, a rotated profile) must not be reused after it.
_CREDENTIAL_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_REGION",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
)

_CLIENTS = threading.local()  # .by_key: {(endpoint, max_attempts, credential env): client}
_SESSIONS: dict[tuple, object] = {}  # credential env → boto3 Session (it caches credentials)
_SESSION_LOCK = threading.Lock()


def _session(creds: tuple):
    """The boto3 session for this credential environment; call with `_SESSION_LOCK` held."""
    if creds not in _SESSIONS:
        import boto3

        _SESSIONS[creds] = boto3.session.Session()
    return _SESSIONS[creds]


def is_s3(uri: str | os.PathLike) -> bool:
    return str(uri).startswith("s3://")


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/a/b` → ("bucket", "a/b")."""
    p = urlparse(str(uri))
    if p.scheme != "s3" or not p.netloc:
        raise StorageError(f"not an s3:// URI: {uri!r}", hint="write it as s3://bucket/key")
    return p.netloc, p.path.lstrip("/")


def local_path(uri: str | os.PathLike) -> Path:
    """A local path from a plain path or a file:// URI.

    A file:// URI is percent-decoded: `Path("/data/my slide.svs").as_uri()` writes the space as
    %20, and the file it names must be found.
    """
    s = str(uri)
    if s.startswith("file://"):
        return Path(unquote(urlparse(s).path))
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


def md5_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


@dataclass(frozen=True)
class ObjectInfo:
    uri: str
    size: int
    etag: str


@dataclass(frozen=True)
class Store:
    """The object store of this process: which S3 endpoint it talks to, and its local cache.

    Why one per process: the endpoint is a property of the deployment, not of each call. Entry
    points set it once with `configure_store`; everything else reads and writes URIs through the
    module functions, which use `current_store()`. A `Store(url)` of its own is for the rare code
    that talks to a second endpoint on purpose (e.g. inference logs kept apart from the data).
    """

    endpoint_url: str | None = None
    cache_root: Path | None = None  # None: $CSCL_CACHE_DIR, else ~/.cache/cscl

    @property
    def endpoint(self) -> str | None:
        return self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None

    @property
    def cache_dir(self) -> Path:
        """Where `fetch` keeps downloaded objects (read at call time, so tests can redirect it)."""
        root = self.cache_root or os.environ.get("CSCL_CACHE_DIR") or Path.home() / ".cache/cscl"
        return Path(root) / "objects"

    # -- the client -----------------------------------------------------------------------------

    def client(self, *, max_attempts: int = 5):
        """The boto3 S3 client of this endpoint for the calling thread (made once, then reused).

        Per thread, made under a lock from one boto3 session per set of credentials (sessions
        are not thread-safe, and a session per client would load the service models each time);
        adaptive retries with backoff for transient errors; path-style addressing (MinIO, moto).
        """
        cache: dict = _CLIENTS.__dict__.setdefault("by_key", {})
        creds = tuple(os.environ.get(k) for k in _CREDENTIAL_ENV)
        key = (self.endpoint, max_attempts, creds)
        if key not in cache:
            from botocore.config import Config

            cfg = Config(
                retries={"max_attempts": max_attempts, "mode": "adaptive"},
                connect_timeout=10,
                read_timeout=120,
                s3={"addressing_style": "path"},
            )
            with _SESSION_LOCK:
                cache[key] = _session(creds).client(
                    "s3",
                    endpoint_url=self.endpoint,
                    region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
                    config=cfg,
                )
        return cache[key]

    def explain(self, exc: Exception, uri: str) -> StorageError:
        """Turn a botocore error into one message that names the object and what to do."""
        from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

        ep = self.endpoint or "AWS default endpoint"
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

    def call(self, fn: Callable[[], T], uri: str, attempts: int = 4) -> T:
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
                    raise self.explain(exc, uri) from exc
                time.sleep(delay)
                delay *= 2
            except Exception as exc:  # NoCredentialsError and friends
                raise self.explain(exc, uri) from exc
        raise AssertionError("unreachable")

    # -- objects --------------------------------------------------------------------------------

    def stat(self, uri: str) -> ObjectInfo:
        """Size and ETag (or an mtime tag for local files) of an object; clear error if missing."""
        if is_s3(uri):
            bucket, key = parse_s3_uri(uri)
            client = self.client()
            head = self.call(lambda: client.head_object(Bucket=bucket, Key=key), uri)
            return ObjectInfo(uri, int(head["ContentLength"]), head["ETag"].strip('"'))
        p = local_path(uri)
        if not p.exists():
            raise StorageError(
                f"file not found: {p}",
                hint="check the path in the manifest",
                kind=ErrorKind.NOT_FOUND,
            )
        return ObjectInfo(str(p), p.stat().st_size, f"mtime-{int(p.stat().st_mtime)}")

    def exists(self, uri: str) -> bool:
        try:
            self.stat(uri)
            return True
        except StorageError as err:
            if err.kind == ErrorKind.NOT_FOUND:
                return False
            raise

    def read_bytes(self, uri: str) -> bytes:
        if is_s3(uri):
            bucket, key = parse_s3_uri(uri)
            client = self.client()
            obj = self.call(lambda: client.get_object(Bucket=bucket, Key=key), uri)
            return obj["Body"].read()
        p = local_path(uri)
        try:
            return p.read_bytes()
        except FileNotFoundError as exc:
            raise StorageError(f"file not found: {p}", kind=ErrorKind.NOT_FOUND) from exc
        except PermissionError as exc:
            raise StorageError(
                f"cannot read {p}: permission denied", kind=ErrorKind.FORBIDDEN
            ) from exc

    def write_bytes(self, uri: str, data: bytes) -> None:
        """Write atomically (local: temp + rename; S3: a PUT is already atomic)."""
        if is_s3(uri):
            bucket, key = parse_s3_uri(uri)
            client = self.client()
            self.call(lambda: client.put_object(Bucket=bucket, Key=key, Body=data), uri)
            return
        with atomic_path(local_path(uri)) as tmp:
            tmp.write_bytes(data)

    def download(self, uri: str, dest: Path, *, verify: bool = True) -> Path:
        """Copy an object to a local file atomically; verify size (and MD5 for single-part ETags).

        A fresh copy every call; for "a local path for this object" use `fetch` (cached).
        """
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not is_s3(uri):
            src = local_path(uri)
            if not src.exists():
                raise StorageError(f"file not found: {src}", kind=ErrorKind.NOT_FOUND)
            with atomic_path(dest) as tmp:
                shutil.copyfile(src, tmp)
            return dest
        return self._download(uri, dest, self.stat(uri), verify=verify)

    def _download(self, uri: str, dest: Path, info: ObjectInfo, *, verify: bool = True) -> Path:
        """Download the version `info` describes; a copy that is not that version is refused.

        Single-part ETags are the MD5 of the content, so the check is exact; for multipart ones
        the size is checked and the ETag asked again after the transfer.
        """
        bucket, key = parse_s3_uri(uri)
        client = self.client()
        with atomic_path(dest) as tmp:
            self.call(lambda: client.download_file(bucket, key, str(tmp)), uri)
            if verify:
                size = tmp.stat().st_size
                if size != info.size:
                    raise StorageError(
                        f"download of {uri} is {size} bytes, expected {info.size}",
                        hint="rerun; the object may be changing",
                    )
                if "-" not in info.etag:
                    if md5_file(tmp) != info.etag:
                        raise StorageError(
                            f"checksum mismatch for {uri}", hint="rerun; the object may be changing"
                        )
                elif self.stat(uri).etag != info.etag:
                    raise StorageError(
                        f"{uri} changed while it was downloaded", hint="rerun the step"
                    )
        return dest

    def upload(self, path: Path, uri: str) -> None:
        if not is_s3(uri):
            dest = local_path(uri)
            dest.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(dest) as tmp:
                shutil.copyfile(path, tmp)
            return
        bucket, key = parse_s3_uri(uri)
        client = self.client()
        self.call(lambda: client.upload_file(str(path), bucket, key), uri)

    def delete(self, uri: str) -> None:
        """Remove an object or file; nothing to remove is not an error (deletes are retried)."""
        if is_s3(uri):
            bucket, key = parse_s3_uri(uri)
            client = self.client()
            self.call(lambda: client.delete_object(Bucket=bucket, Key=key), uri)
        else:
            local_path(uri).unlink(missing_ok=True)

    def list_uris(self, prefix: str) -> list[str]:
        """All object URIs under a prefix (S3) or files under a folder (local), sorted."""
        if is_s3(prefix):
            bucket, key = parse_s3_uri(prefix)
            client = self.client()
            out: list[str] = []

            def _list():
                paginator = client.get_paginator("list_objects_v2")
                for page in paginator.paginate(Bucket=bucket, Prefix=key):
                    out.extend(f"s3://{bucket}/{o['Key']}" for o in page.get("Contents", []))

            self.call(_list, prefix)
            return sorted(out)
        root = local_path(prefix)
        if not root.exists():
            return []
        return sorted(str(p) for p in root.rglob("*") if p.is_file())

    def ensure_bucket(self, bucket: str) -> None:
        """Create `bucket` if it does not exist (demo and tests; production buckets pre-exist)."""
        client = self.client()
        try:
            client.head_bucket(Bucket=bucket)
            return
        except Exception:  # 404 → create below; other errors surface from create_bucket
            pass
        self.call(lambda: client.create_bucket(Bucket=bucket), f"s3://{bucket}")

    # -- the download-once cache ----------------------------------------------------------------

    def fetch(self, uri: str, dest: Path | None = None) -> Path:
        """A local path holding the current content of `uri`, downloaded at most once.

        Local paths are returned as they are. S3 objects are cached under
        `cache_dir/<hash of endpoint + bucket/key>/<ETag>/<name>`: the ETag in the path means an
        object replaced since (even by one of the same size) is downloaded again, never served
        stale, and the endpoint in the hash keeps two stores' `s3://b/k` apart. The download is
        atomic and verified; concurrent processes take a file lock so only one downloads.
        With `dest`, the cached copy is also put there (a hard link when possible) and `dest`
        returned: for a folder of files named by the caller, without a second download.
        """
        if not is_s3(uri):
            p = local_path(uri)
            if not p.exists():
                raise StorageError(
                    f"file not found: {p}", hint="check the path or URI", kind=ErrorKind.NOT_FOUND
                )
            return p if dest is None else _place(p, Path(dest))
        info = self.stat(uri)
        cached = self._cache_path(uri, info)
        if not (cached.exists() and cached.stat().st_size == info.size):
            cached.parent.mkdir(parents=True, exist_ok=True)
            with _file_lock(cached.parent / ".lock"):
                if not (cached.exists() and cached.stat().st_size == info.size):
                    self._download(uri, cached, info)
        return cached if dest is None else _place(cached, Path(dest))

    def _cache_path(self, uri: str, info: ObjectInfo) -> Path:
        bucket, key = parse_s3_uri(uri)
        where = f"{(self.endpoint or 'aws').rstrip('/')}\n{bucket}/{key}"
        digest = hashlib.sha256(where.encode()).hexdigest()[:24]
        version = re.sub(r"[^A-Za-z0-9_.-]", "_", info.etag) or f"size{info.size}"
        name = key.rstrip("/").rsplit("/", 1)[-1] or "object"
        return self.cache_dir / digest / version / name

    def sha256(self, uri: str) -> str:
        """sha256 of an object's content (S3: of the cached copy; the digest is cached with it)."""
        path = self.fetch(uri)
        if not is_s3(uri):
            return sha256_file(path)
        side = path.with_name(f".{path.name}.sha256")
        if side.exists():
            return side.read_text().strip()
        digest = sha256_file(path)
        with atomic_path(side) as tmp:
            tmp.write_text(digest)
        return digest


def _place(src: Path, dest: Path) -> Path:
    """Put `src` at `dest` atomically: a hard link (no second copy) or, across disks, a copy."""
    if dest.exists() and os.path.samefile(src, dest):
        return dest
    with atomic_path(dest) as tmp:
        tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:  # another filesystem, or links not allowed
            shutil.copyfile(src, tmp)
    return dest


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock between processes (and threads: each opens its own fd)."""
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


_STORE = Store()


def current_store() -> Store:
    return _STORE


def configure_store(endpoint_url: str | Store | None = None, *, cache_dir=None) -> Store:
    """Set this process's store (None: the standard AWS chain, incl. AWS_ENDPOINT_URL).

    Called once by entry points. Takes a `Store` too, so a test can put back the one it replaced.
    """
    global _STORE
    if isinstance(endpoint_url, Store):
        _STORE = endpoint_url
    else:
        _STORE = Store(endpoint_url or None, Path(cache_dir) if cache_dir else None)
    return _STORE


def s3_client(*, max_attempts: int = 5):
    """The current store's boto3 client for this thread (cached); see `Store.client`.
    For another endpoint on purpose: `Store(url).client()`."""
    return current_store().client(max_attempts=max_attempts)


def explain_error(exc: Exception, uri: str) -> StorageError:
    """A botocore error as a `StorageError` naming the object, the endpoint and what to do."""
    return current_store().explain(exc, uri)


def call_with_retries(fn: Callable[[], T], uri: str, attempts: int = 4) -> T:
    """Run a raw S3 call (`s3_client()`) with the store's retries and error messages."""
    return current_store().call(fn, uri, attempts)


def stat(uri: str) -> ObjectInfo:
    """Size and ETag (or an mtime tag for local files) of an object; clear error if missing."""
    return current_store().stat(uri)


def exists(uri: str) -> bool:
    return current_store().exists(uri)


def read_bytes(uri: str) -> bytes:
    return current_store().read_bytes(uri)


def write_bytes(uri: str, data: bytes) -> None:
    """Write atomically (local: temp + rename; S3: a PUT is already atomic)."""
    current_store().write_bytes(uri, data)


def download(uri: str, dest: Path, *, verify: bool = True) -> Path:
    """A fresh, verified local copy of an object at `dest` (atomic). Cached: `fetch`."""
    return current_store().download(uri, dest, verify=verify)


def upload(path: Path, uri: str) -> None:
    current_store().upload(path, uri)


def delete(uri: str) -> None:
    """Remove an object or file; a missing one is not an error."""
    current_store().delete(uri)


def list_uris(prefix: str) -> list[str]:
    """All object URIs under a prefix (S3) or files under a folder (local), sorted."""
    return current_store().list_uris(prefix)


def ensure_bucket(bucket: str) -> None:
    """Create `bucket` if it does not exist (demo and tests; production buckets pre-exist)."""
    current_store().ensure_bucket(bucket)


def fetch(uri: str, dest: Path | None = None) -> Path:
    """A local path for `uri`, S3 objects downloaded once (cache keyed by endpoint + ETag);
    with `dest`, linked or copied there too. See `Store.fetch`."""
    return current_store().fetch(uri, dest)


def sha256(uri: str) -> str:
    """sha256 of the content of a file or object (S3 objects via the `fetch` cache)."""
    return current_store().sha256(uri)


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
