"""Batch runs: many videos, one after the other, each resumable, one summary.

``vr180matte batch IN1.mp4 IN2.mp4 FOLDER/ -o OUT`` runs :func:`vr180matte.pipeline.run` on every video with the
same config. A failing video is recorded (its one-line error) and the batch goes on; a video whose output and
stats.json already exist is skipped, and an interrupted one resumes from its last finished chunk, so the same
command can simply be run again after a crash. ``OUT/batch.json`` says what happened to each input.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from ..config import Config, load_config
from ..runtime.chunks import atomic_write_json

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".webm")


@dataclass
class BatchItem:
    input: str
    status: str = "pending"  # pending | done | skipped | failed
    seconds: float = 0.0
    outputs: list[str] = field(default_factory=list)
    stats: str | None = None
    error: str | None = None


def expand_inputs(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders expanded to the videos they contain (sorted); duplicates dropped, order kept."""
    seen: set[Path] = set()
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        found = sorted(f for f in p.iterdir() if f.suffix.lower() in VIDEO_SUFFIXES) if p.is_dir() else [p]
        for f in found:
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                out.append(f)
    return out


def _finished(stats_path: Path) -> list[str] | None:
    """The outputs of an earlier successful run of this input, if they are all still there."""
    try:
        stats = json.loads(stats_path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    outputs = stats.get("outputs") or []
    if outputs and all((stats_path.parent / o).exists() for o in outputs):
        return outputs
    return None


def run_batch(
    inputs: Sequence[str | Path],
    config: Config | str | Path | None = None,
    out_dir: str | Path = "out",
    overrides: Sequence[str] = (),
    quiet: bool = False,
    force: bool = False,
    ray: str | None = None,
) -> list[BatchItem]:
    """Matte every input into ``out_dir``; returns one :class:`BatchItem` per input (also in ``batch.json``).

    ``ray`` (or ``cluster.address``) names a Ray cluster: the videos then run as Ray tasks (``jobs/cluster.py``).
    """
    from ..pipeline import run  # imported here so `vr180matte batch --help` stays fast

    cfg = config if isinstance(config, Config) else load_config(config, overrides)
    address = ray if ray is not None else cfg.cluster.address
    if address:
        from .cluster import run_cluster_batch

        return run_cluster_batch(inputs, cfg, out_dir, address, quiet=quiet, force=force)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    items = [BatchItem(str(p)) for p in expand_inputs(inputs)]
    summary = out / "batch.json"

    def save() -> None:
        atomic_write_json(summary, {"items": [asdict(i) for i in items]})

    save()
    for n, item in enumerate(items, 1):
        src = Path(item.input)
        stats_path = out / f"{src.stem}.stats.json"
        previous = None if force else _finished(stats_path)
        if previous is not None:
            item.status, item.outputs, item.stats = "skipped", previous, stats_path.name
            log.info("[%d/%d] %s: already done, skipped", n, len(items), src.name)
            save()
            continue
        log.info("[%d/%d] %s", n, len(items), src.name)
        t0 = time.perf_counter()
        try:
            result = run(src, cfg, out, quiet=quiet)
        except KeyboardInterrupt:
            item.status, item.error = "failed", "interrupted: run the batch again to resume"
            item.seconds = round(time.perf_counter() - t0, 3)
            save()
            raise
        except Exception as exc:  # noqa: BLE001 - one bad video must not stop the batch; the error is recorded
            item.status = "failed"
            item.error = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            log.error("%s: %s", src.name, item.error)
        else:
            item.status = "done"
            item.outputs = result.stats["outputs"]
            item.stats = result.stats_path.name
        item.seconds = round(time.perf_counter() - t0, 3)
        save()
    return items
