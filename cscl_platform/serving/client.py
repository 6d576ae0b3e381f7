"""HTTP client of the cscl Inference API (used by `cscl predict` and the benchmarks).

Retries what is worth retrying (connection refused/reset, 502/503/504: a worker restarting or a
server starting) with exponential backoff, never a 4xx (the request itself is wrong: its message
is shown as is). TorchServe's token authorization: the key is sent as `Authorization: Bearer
<key>`, read from `key_file.json` on every call because TorchServe regenerates keys (they expire
after `token_expiration_min`, 60 by default).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from cscl.errors import CsclError

RETRY_STATUS = {502, 503, 504}


class ServingError(CsclError):
    """The server answered with an error (status kept in `.status`) or could not be reached."""

    def __init__(self, message: str, *, status: int | None = None, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.status = status


class ServingClient:
    """`predict_*` methods return the JSON answer (dict) or raise ServingError."""

    def __init__(
        self,
        url: str,
        model: str = "cscl",
        *,
        key: str | None = None,
        key_file: str | Path | None = None,
        timeout: float = 900.0,
        retries: int = 5,
        backoff: float = 0.5,
        session=None,
    ):
        import requests

        self.url = url.rstrip("/")
        self.model = model
        self._key = key
        self.key_file = Path(key_file) if key_file else None
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.session = session or requests.Session()

    def key(self) -> str | None:
        """The inference key: given directly, or the "inference" entry of key_file.json."""
        if self._key:
            return self._key
        if self.key_file is None:
            return os.environ.get("CSCL_INFERENCE_KEY") or None
        try:
            return json.loads(self.key_file.read_text())["inference"]["key"]
        except (OSError, KeyError, json.JSONDecodeError) as exc:
            raise ServingError(
                f"cannot read the inference key from {self.key_file}: {exc}",
                hint="pass the key_file.json printed by `cscl serve`",
            ) from exc

    def _headers(self, content_type: str) -> dict:
        h = {"Content-Type": content_type}
        key = self.key()
        if key:
            h["Authorization"] = f"Bearer {key}"
        return h

    def _post(self, body: bytes, content_type: str) -> dict:
        import requests

        url = f"{self.url}/predictions/{self.model}"
        delay = self.backoff
        last: str = ""
        for attempt in range(self.retries + 1):
            try:
                r = self.session.post(
                    url, data=body, headers=self._headers(content_type), timeout=self.timeout
                )
            except requests.Timeout as exc:
                raise ServingError(
                    f"no answer from {url} within {self.timeout:.0f}s",
                    hint="raise --timeout; whole slides take minutes on CPU",
                ) from exc
            except requests.ConnectionError as exc:
                last = f"cannot connect to {url}: {exc.__class__.__name__}"
            else:
                if r.status_code == 200:
                    return r.json()
                if r.status_code not in RETRY_STATUS:
                    raise self._error(r, url)
                last = f"HTTP {r.status_code} from {url}: {self._message(r)}"
            if attempt < self.retries:
                time.sleep(delay)
                delay = min(delay * 2, 10.0)
        raise ServingError(
            f"{last} (after {self.retries + 1} attempts)",
            hint="is the server running? `cscl serve` prints its URL",
        )

    @staticmethod
    def _message(r) -> str:
        try:
            body = r.json()
            return str(body.get("message") or body)
        except ValueError:
            return r.text.strip()[:500]

    def _error(self, r, url: str) -> ServingError:
        msg = self._message(r)
        if "InvalidKeyException" in r.text or r.status_code in (401, 403) and "Token" in msg:
            return ServingError(
                f"the server refused the token ({r.status_code}): {msg}",
                status=r.status_code,
                hint="pass --key-file with the server's key_file.json (keys expire after 60 min)",
            )
        if r.status_code == 404 and "Model not found" in msg:
            return ServingError(f"no model {self.model!r} at {self.url}", status=404,
                                hint="check --model")  # fmt: skip
        return ServingError(f"HTTP {r.status_code}: {msg}", status=r.status_code)

    # ---- requests -------------------------------------------------------------------------------
    def predict_json(self, payload: dict) -> dict:
        return self._post(json.dumps(payload).encode(), "application/json")

    def predict_features_file(self, path: str | Path) -> dict:
        """Upload a local feature file (HDF5) as the request body."""
        data = Path(path).read_bytes()
        return self._post(data, "application/octet-stream")

    def predict_features_bytes(self, data: bytes) -> dict:
        return self._post(data, "application/octet-stream")

    def predict_features_uri(self, uri: str) -> dict:
        return self.predict_json({"features_uri": uri})

    def predict_slide_uri(self, uri: str, mpp: float | None = None) -> dict:
        payload: dict = {"slide_uri": uri}
        if mpp is not None:
            payload["mpp"] = mpp
        return self.predict_json(payload)

    def ping(self) -> bool:
        import requests

        try:
            r = self.session.get(f"{self.url}/ping", headers=self._headers("text/plain"), timeout=5)
        except requests.RequestException:
            return False
        return r.status_code == 200
