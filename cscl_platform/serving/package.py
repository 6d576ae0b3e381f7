"""Packaging for serving: trained run → bundle dir + TorchServe .mar (+ release upload).

The one function behind `cscl package` and the KFP `package` component: both call
`package_model`, so the CLI and the pipeline release exactly the same artefacts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cscl.bundle import Bundle
from cscl.packaging import BundleSpec, build_bundle
from cscl_platform.serving.archive import DEFAULT_MAX_BATCH_DELAY_MS, build_mar, upload_release


@dataclass(frozen=True)
class Packaged:
    """What `package_model` wrote: the bundle, its archive, and the release URI if uploaded."""

    bundle: Bundle
    mar: Path | None
    release_uri: str | None

    @property
    def version(self) -> str:
        return self.bundle.version


def package_model(
    run_dir: str | Path,
    out_dir: str | Path,
    spec: BundleSpec = BundleSpec(),
    *,
    mar: bool = True,
    batch_size: int = 8,
    max_batch_delay: int = DEFAULT_MAX_BATCH_DELAY_MS,
    response_timeout: int = 900,
    upload: str | None = None,
) -> Packaged:
    """`<out_dir>/<name>/` (bundle: heads, reference set) and `<out_dir>/<name>.mar`; with
    `upload` (an object-store prefix such as `s3://b/p/models/`) also the release
    `<upload>/<name>/<version>/` that KServe and the Deployment read (the process store's
    endpoint is used: `storage.configure_store`)."""
    name = spec.name
    bundle = build_bundle(run_dir, Path(out_dir) / name, spec)
    archive = None
    if mar:
        archive = build_mar(
            bundle.path,
            out_dir,
            name,
            bundle.version,
            batch_size=batch_size,
            max_batch_delay=max_batch_delay,
            response_timeout=response_timeout,
        )
    dest = upload_release(bundle.path, archive, upload, name, bundle.version) if upload else None
    return Packaged(bundle=bundle, mar=archive, release_uri=dest)
