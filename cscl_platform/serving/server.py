"""Start and stop a local TorchServe that cannot collide with anything else on the machine.

TorchServe 0.12 reads `./config.properties` silently, writes `logs/` and `key_file.json` into its
working directory and keeps its PID file in `$TMPDIR`. So each instance gets its own scratch
working directory, its own TMPDIR/TEMP, a config written from `serving/config.properties` with
free loopback ports, and runs in its own process group so stopping it ends the launcher, the Java
frontend and the Python workers together (and nothing else).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from cscl.errors import InputError

TEMPLATE = Path(__file__).with_name("config.properties")
DEFAULT_MAX_REQUEST = 256 * 1024 * 1024


def free_ports(n: int) -> list[int]:
    """`n` distinct free TCP ports on 127.0.0.1 (held open together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def render_config(
    model_store: Path,
    ports: dict[str, int],
    *,
    load_models: str = "ALL",
    workers: int = 1,
    response_timeout: int = 900,
    max_request_size: int = DEFAULT_MAX_REQUEST,
    extra: dict[str, str] | None = None,
    template: Path = TEMPLATE,
) -> str:
    """The template with ports and paths filled in; `extra` keys override or add settings."""
    text = string.Template(template.read_text()).substitute(
        model_store=str(model_store),
        load_models=load_models,
        workers=workers,
        response_timeout=response_timeout,
        max_request_size=max_request_size,
        **ports,
    )
    if extra:
        lines = [ln for ln in text.splitlines() if ln.split("=", 1)[0].strip() not in extra]
        lines += [f"{k}={v}" for k, v in extra.items()]
        text = "\n".join(lines) + "\n"
    return text


def _auth(keys: dict, which: str) -> dict:
    return {"Authorization": f"Bearer {keys[which]}"} if keys else {}


@dataclass
class TorchServeInstance:
    """A running TorchServe: URLs, key file, and how to stop it."""

    process: subprocess.Popen
    workdir: Path
    inference_url: str
    management_url: str
    metrics_url: str
    config_path: Path
    env: dict = field(default_factory=dict, repr=False)

    @property
    def key_file(self) -> Path:
        return self.workdir / "key_file.json"

    @property
    def token_auth(self) -> bool:
        return "disable_token_authorization=true" not in self.config_path.read_text()

    def keys(self) -> dict:
        """{"inference": ..., "management": ...} from key_file.json ({} without token auth)."""
        if not self.token_auth:
            return {}
        data = json.loads(self.key_file.read_text())
        return {name: data[name]["key"] for name in ("inference", "management") if name in data}

    @property
    def log_dir(self) -> Path:
        return self.workdir / "logs"

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_ready(self, models: list[str], timeout: float = 120.0) -> None:
        """Block until /ping is healthy and every model has a READY worker (or raise)."""
        import requests

        deadline = time.monotonic() + timeout
        delay = 0.1
        last = "no answer yet"
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"TorchServe exited early; see {self.log_dir}")
            try:
                if self.key_file.exists() or not self.token_auth:
                    auth = _auth(self.keys(), "inference")
                    r = requests.get(f"{self.inference_url}/ping", headers=auth, timeout=2)
                    ok = r.status_code == 200
                    if ok and all(self.model_ready(m) for m in models):
                        return
                    last = "model workers not ready"
            except (requests.RequestException, KeyError, json.JSONDecodeError) as exc:
                last = str(exc)  # key file half-written or server still binding
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)
        raise TimeoutError(
            f"TorchServe not ready after {timeout:.0f}s ({last}); see {self.log_dir}"
        )

    def describe(self, model: str) -> list[dict]:
        """Management API `GET /models/<model>` (read-only; works with enable_model_api=false)."""
        import requests

        headers = _auth(self.keys(), "management")
        r = requests.get(f"{self.management_url}/models/{model}", headers=headers, timeout=5)
        r.raise_for_status()
        return r.json()

    def model_ready(self, model: str) -> bool:
        import requests

        try:
            desc = self.describe(model)
        except (requests.RequestException, KeyError, json.JSONDecodeError):
            return False
        return any(w.get("status") == "READY" for d in desc for w in d.get("workers", []))

    def worker_pids(self, model: str) -> list[int]:
        return [int(w["pid"]) for d in self.describe(model) for w in d.get("workers", [])]

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the instance's process group, then SIGKILL if it does not exit in time."""
        if self.process.poll() is not None:
            return
        pgid = self.process.pid  # started with start_new_session: pgid == pid
        try:
            os.killpg(pgid, signal.SIGTERM)
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.process.wait(timeout=10)
        except ProcessLookupError:
            pass
        # Java workers may outlive the launcher briefly; make sure the group is gone.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)

    def __enter__(self) -> TorchServeInstance:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_torchserve(
    model_store: str | Path,
    models: dict[str, str] | None = None,
    *,
    workdir: str | Path | None = None,
    port: int = 0,
    workers: int = 1,
    response_timeout: int = 900,
    max_request_size: int = DEFAULT_MAX_REQUEST,
    extra_config: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    config_text: str | None = None,
    wait: bool = True,
    ready_timeout: float = 180.0,
) -> TorchServeInstance:
    """Start TorchServe on loopback serving `models` ({name: file.mar}, default: every .mar).

    `port` 0 picks a free inference port (others always free ones). `env` adds handler settings
    (CSCL_ALLOWED_PREFIXES, CSCL_INFERENCE_LOG_URI, AWS_ENDPOINT_URL…) to the workers' environment.
    `config_text` replaces the template (e.g. a cluster config with loopback addresses swapped in);
    its inference/management/metrics addresses are read back from it.
    """
    store = Path(model_store).resolve()
    if not store.is_dir():
        raise InputError(f"model store {store} does not exist", hint="run `cscl package` first")
    if models is None:
        mars = sorted(store.glob("*.mar"))
        if not mars:
            raise InputError(f"no .mar files in {store}", hint="run `cscl package` first")
        models = {m.stem: m.name for m in mars}
    for name, mar in models.items():
        if not (store / mar).is_file():
            raise InputError(f"model archive {store / mar} (model {name!r}) does not exist")
    workdir = Path(workdir or tempfile.mkdtemp(prefix="cscl-torchserve-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    tmp = workdir / "tmp"
    tmp.mkdir(exist_ok=True)
    names = ["inference_port", "management_port", "metrics_port", "grpc_inference_port"]
    names += ["grpc_management_port", "worker_port"]
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    if port:
        ports["inference_port"] = port
    cfg = workdir / "config.properties"
    load = ",".join(f"{n}={m}" for n, m in models.items())
    if config_text is None:
        config_text = render_config(
            store,
            ports,
            load_models=load,
            workers=workers,
            response_timeout=response_timeout,
            max_request_size=max_request_size,
            extra=extra_config,
        )
    cfg.write_text(config_text)
    props = dict(ln.split("=", 1) for ln in config_text.splitlines() if "=" in ln and ln[:1] != "#")
    urls = {k: props[f"{k}_address"].strip() for k in ("inference", "management", "metrics")}
    full_env = {**os.environ, "TMPDIR": str(tmp), "TEMP": str(tmp), **(env or {})}
    full_env.pop("TS_CONFIG_FILE", None)  # it would override --ts-config
    exe = Path(sys.executable).with_name("torchserve")
    cmd = [str(exe) if exe.exists() else "torchserve", "--start", "--foreground", "--ncs"]
    cmd += ["--model-store", str(store), "--ts-config", str(cfg)]
    with open(workdir / "torchserve.out", "ab") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=workdir,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    inst = TorchServeInstance(
        process=proc,
        workdir=workdir,
        inference_url=urls["inference"],
        management_url=urls["management"],
        metrics_url=urls["metrics"],
        config_path=cfg,
        env=full_env,
    )
    if wait:
        try:
            inst.wait_ready(list(models), timeout=ready_timeout)
        except BaseException:
            inst.stop()
            raise
    return inst
