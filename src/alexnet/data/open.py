"""``open_data(spec)``: what ``--data`` means everywhere: a store, an ImageFolder root, a torchvision name."""

from __future__ import annotations

from pathlib import Path

from .prepare import prepare
from .samples import SAMPLE_SIZE, SAMPLES, sample_store_path
from .sources import cached_store_path, resolve_source
from .store import Store, is_store, open_store


def open_data(
    spec: str | Path,
    *,
    size: int | None = None,
    store_cache: Path | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> Store:
    """A prepared store opens as it is; anything else is prepared on first use into a cache and reused
    while the source is unchanged (a folder that changed is prepared again).

    The cache is ``$ALEXNET_CACHE/stores`` (default ``~/.cache/alexnet/stores``), one store per
    source and size; torchvision sets are looked for (and downloaded) in ``$ALEXNET_DATA``.
    """
    if is_store(spec):
        return open_store(spec)
    if str(spec) in SAMPLES and not Path(spec).exists() and size in (None, SAMPLE_SIZE):
        return open_store(sample_store_path(str(spec)))  # shipped prepared
    source = resolve_source(spec)
    out = cached_store_path(source, size, store_cache)
    prepare(source, out, size=size, workers=workers, progress=progress, rebuild_stale=True)
    return open_store(out)
