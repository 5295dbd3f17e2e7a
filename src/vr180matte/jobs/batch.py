"""Batch runs: many videos, one after the other, each resumable, one summary.

``vr180matte batch IN1.mp4 IN2.mp4 FOLDER/ -o OUT`` runs :func:`vr180matte.pipeline.run` on every video with the
same config. A failing video is recorded (its one-line error) and the batch goes on; an interrupted one (Ctrl-C
or SIGTERM) is recorded "interrupted" and resumes from its last finished chunk, so the same command can simply
be run again after a crash. ``OUT/batch.json`` says what happened to each input and why.

A finished output is identified by what made it, not by its name: the input's resolved path and fingerprint and
the digest of the config values that change the produced frames, kept in a ledger
(``OUT/.vr180matte/batch-ledger.json``). A video is skipped only when the ledger holds a finished run of the same
input and config whose outputs are all still there; a changed config or input re-runs it. Two inputs with the
same file name (``a/clip.mp4``, ``b/clip.mp4``) get distinct outputs: the first keeps ``OUT/clip.*``, the others
go to a subfolder named after their parent folders (``OUT/b/clip.*``), and no output of another input is ever
overwritten.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from ..config import Config, load_config
from ..errors import InputError, Terminated, one_line
from ..runtime.chunks import atomic_write_json, fingerprint

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".webm")
LEDGER = Path(".vr180matte") / "batch-ledger.json"

# Config keys that do not change the produced files: changing them must not re-run finished videos.
OUTPUT_NEUTRAL_KEYS = (
    "input.video_path",
    "input.prompts",  # its path: the file's content digest is added per input instead (item_identity)
    "output.path",
    "processing.read_ahead",
    "processing.stage_queue",
    "processing.max_memory_gb",
    "hardware.max_vram_gb",
    "performance.profile_enabled",
    "performance.preserve_intermediates",
)
OUTPUT_NEUTRAL_SECTIONS = ("cluster.",)


@dataclass
class BatchItem:
    input: str
    status: str = "pending"  # pending | queued | done | skipped | failed | interrupted
    reason: str = ""  # why it was run or skipped
    seconds: float = 0.0
    out_dir: str = ""  # subfolder of OUT the item writes to ("" = OUT itself)
    outputs: list[str] = field(default_factory=list)  # relative to OUT
    stats: str | None = None  # relative to OUT
    error: str | None = None
    fingerprint: str | None = None
    config: str | None = None


def expand_inputs(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders expanded to the videos they contain (sorted); duplicates dropped, order kept."""
    seen: set[Path] = set()
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        found = sorted(f for f in p.iterdir() if f.suffix.lower() in VIDEO_SUFFIXES) if p.is_dir() else [p]
        if p.is_dir() and not found:
            log.warning("%s: no videos (%s) in this folder", p, ", ".join(VIDEO_SUFFIXES))
        for f in found:
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                out.append(f)
    return out


def config_digest(cfg: Config) -> str:
    """Digest of the config values that change the produced files."""
    skip = [k for k in cfg._flat if k in OUTPUT_NEUTRAL_KEYS or k.startswith(OUTPUT_NEUTRAL_SECTIONS)]
    return cfg.digest(exclude=skip)


def item_identity(digest: str, cfg: Config, src: Path) -> str:
    """The config digest of one input: with ``input.prompts`` set, the digest of that input's prompts file
    (``{stem}`` resolved) is part of it, so an edited prompts file re-runs the video and an unchanged one does not."""
    from ..track.prompts import prompts_digest

    extra = prompts_digest(cfg.input.prompts, src.stem)
    return digest if not extra else hashlib.sha256(f"{digest}:{extra}".encode()).hexdigest()[:16]


def _finished(stats_path: Path) -> list[str] | None:
    """The outputs named by ``stats_path`` if they are all still there (says nothing about which input made them)."""
    try:
        stats = json.loads(stats_path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    outputs = stats.get("outputs") or []
    if outputs and all((stats_path.parent / o).exists() for o in outputs):
        return outputs
    return None


@contextlib.contextmanager
def _ledger(out: Path, write: bool) -> Iterator[dict]:
    """The ledger's entries (key: ``<subfolder>/<stem>``), under an exclusive file lock when ``write``."""
    path = out / LEDGER
    if write:
        path.parent.mkdir(parents=True, exist_ok=True)
    lock = open(path.with_suffix(".lock"), "a") if write else None  # noqa: SIM115 - closed below
    try:
        if lock is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            data = json.loads(path.read_text())
            entries = data.get("entries", {}) if isinstance(data, dict) else {}
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            entries = {}
        yield entries
        if write:
            atomic_write_json(path, {"version": 1, "entries": entries})
    finally:
        if lock is not None:
            lock.close()


def _key(sub: str, stem: str) -> str:
    return f"{sub}/{stem}" if sub else stem


def _labels(src: Path) -> list[str]:
    """Candidate subfolders for ``src``: "" (OUT itself), then its parent folders, innermost first, growing."""
    parents = [p for p in src.resolve().parent.parts if p not in ("/", "")]
    labels = [""]
    for k in range(1, len(parents) + 1):
        labels.append("/".join(parents[-k:]))
    # same folder, same stem, other suffix (clip.mp4 / clip.mov): the suffix decides
    labels.append(f"{src.stem}_{src.suffix.lstrip('.').lower() or 'noext'}")
    return labels


def _owner(out: Path, sub: str, stem: str, ledger: dict) -> str | None:
    """Resolved input path that produced ``OUT/<sub>/<stem>.*`` (None: nothing there)."""
    entry = ledger.get(_key(sub, stem))
    if entry:
        return entry.get("input")
    stats = out / sub / f"{stem}.stats.json"
    if stats.exists():
        try:
            recorded = json.loads(stats.read_text()).get("input")
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            recorded = None
        return str(Path(recorded).resolve()) if recorded else "(unknown input)"
    return None


def plan_batch(inputs: Sequence[str | Path], cfg: Config, out: Path, force: bool = False) -> list[BatchItem]:
    """One item per input: where it writes, its identity, and whether it is skipped (with the reason).

    Raises :class:`InputError` when the inputs hold no video at all.
    """
    paths = expand_inputs(inputs)
    if not paths:
        raise InputError(
            f"no videos to process in {', '.join(map(str, inputs))}: give video files or folders holding "
            f"{', '.join(VIDEO_SUFFIXES)} files"
        )
    digest = config_digest(cfg)
    items: list[BatchItem] = []
    claimed: set[str] = set()
    with _ledger(out, write=False) as ledger:
        for src in paths:
            item = BatchItem(str(src), config=item_identity(digest, cfg, src))
            resolved = str(src.resolve())
            try:
                item.fingerprint = fingerprint(src)
            except OSError:
                item.fingerprint = None  # missing/unreadable: the run reports it as the item's error
            labels = _labels(src)
            labels += [f"{labels[-1]}_{k}" for k in range(2, 2 + len(paths))]  # last resort, always one free
            for sub in labels:
                key = _key(sub, src.stem)
                if key not in claimed and _owner(out, sub, src.stem, ledger) in (None, resolved):
                    break
            claimed.add(key)
            item.out_dir = sub
            if sub:
                log.info("%s: another input with the same name writes to %s/; this one writes to %s/",
                         src.name, out, out / sub)
            entry = ledger.get(key)
            item.reason = _why_run(entry, item, resolved, out, force)
            if item.reason.startswith("skipped"):
                item.status = "skipped"
                item.outputs = [str(Path(sub) / o) if sub else o for o in entry["outputs"]]
                item.stats = str(Path(sub) / entry["stats"]) if sub else entry["stats"]
            items.append(item)
    return items


def _why_run(entry: dict | None, item: BatchItem, resolved: str, out: Path, force: bool) -> str:
    if force:
        return "run: --force"
    if not entry:
        return "run: no finished run of this input and config in the ledger"
    if entry.get("input") != resolved:
        return f"run: the earlier output here came from {entry.get('input')}"
    if item.fingerprint is None or entry.get("fingerprint") != item.fingerprint:
        return "run: the input file changed since its earlier run"
    if entry.get("config") != item.config:
        return "run: the config changed since the earlier run"
    base = out / item.out_dir
    if not all((base / o).exists() for o in entry.get("outputs", [])) or not (base / entry.get("stats", "")).is_file():
        return "run: outputs of the earlier run are missing"
    return "skipped: finished earlier with the same input and config"


def record_done(out: Path, item: BatchItem, outputs: list[str], stats_name: str) -> None:
    """Enter a finished item in the ledger; ``outputs``/``stats_name`` relative to the item's subfolder."""
    with _ledger(out, write=True) as ledger:
        ledger[_key(item.out_dir, Path(item.input).stem)] = {
            "input": str(Path(item.input).resolve()),
            "fingerprint": item.fingerprint,
            "config": item.config,
            "outputs": list(outputs),
            "stats": stats_name,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }


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
    cfg = config if isinstance(config, Config) else load_config(config, overrides)
    address = ray if ray is not None else cfg.cluster.address
    if address:
        from .cluster import run_cluster_batch

        return run_cluster_batch(inputs, cfg, out_dir, address, quiet=quiet, force=force)
    from ..pipeline import run  # imported here so `vr180matte batch --help` stays fast

    out = Path(out_dir)
    items = plan_batch(inputs, cfg, out, force)  # refuses an empty batch before anything is written
    out.mkdir(parents=True, exist_ok=True)
    summary = out / "batch.json"

    def save() -> None:
        atomic_write_json(summary, {"items": [asdict(i) for i in items]})

    save()
    for n, item in enumerate(items, 1):
        src = Path(item.input)
        if item.status == "skipped":
            log.info("[%d/%d] %s: %s", n, len(items), src.name, item.reason)
            continue
        log.info("[%d/%d] %s (%s)", n, len(items), src.name, item.reason)
        t0 = time.perf_counter()
        try:
            result = run(src, cfg, out / item.out_dir, quiet=quiet)
        except KeyboardInterrupt as exc:
            how = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
            item.status, item.error = "interrupted", f"{how}: finished chunks are kept; run the batch again to resume"
            item.seconds = round(time.perf_counter() - t0, 3)
            save()
            raise
        except Exception as exc:  # noqa: BLE001 - one bad video must not stop the batch; the error is recorded
            item.status = "failed"
            item.error = one_line(exc)
            log.error("%s: %s", src.name, item.error)
        else:
            item.status = "done"
            prefix = Path(item.out_dir)
            item.outputs = [str(prefix / o) for o in result.stats["outputs"]]
            item.stats = str(prefix / result.stats_path.name)
            record_done(out, item, result.stats["outputs"], result.stats_path.name)
        item.seconds = round(time.perf_counter() - t0, 3)
        save()
    return items
