"""Ray cluster runs: many videos on many GPUs, and one long video's chunks on several GPUs at once.

Why Ray: it already does what a job queue for rented GPUs needs (resource-aware scheduling with fractional GPUs,
re-running a task whose worker or node died, a driver that sees results as they finish) and it runs the same on a
laptop (``ray.init(num_cpus=.., num_gpus=..)`` with logical GPUs) as on RunPod, Vast.ai or Kubernetes (KubeRay).

* :func:`run_cluster_batch` is ``vr180matte batch INPUTS -o OUT --ray ADDRESS``: one Ray task per video, each
  declaring ``cluster.gpus_per_task`` GPUs and ``cluster.cpus_per_task`` CPUs; a worker that dies is replaced and
  its task re-run up to ``cluster.max_retries`` times (the pipeline resumes from the chunks the dead worker had
  finished); a video that fails with an error is recorded in ``OUT/batch.json`` exactly as the local loop does.
* Inputs and ``OUT`` must be on storage every node sees at the same path (NFS, a network volume): workers read the
  input and write the output and work folder themselves; only small results travel through Ray.

Errors inside a task are returned as data (one line), not raised, so Ray never re-runs a video that failed for a
reason a re-run cannot fix; only worker loss is retried.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

from ..config import Config
from ..errors import one_line
from ..runtime.chunks import atomic_write_json
from ..runtime.ray_cluster import connect, setup_worker, task_options
from .batch import BatchItem, plan_batch, record_done

log = logging.getLogger(__name__)

_POLL_S = 1.0  # how often the driver wakes up to refresh the progress line when nothing finished


def _run_video(input_path: str, flat: dict, out_dir: str, cpus: float) -> dict:
    """Body of one video task (runs on a worker). Returns a result dict; never raises for a bad video."""
    setup_worker(cpus)
    from ..pipeline import run  # the worker imports the pipeline, the driver does not need to

    t0 = time.perf_counter()
    where = {"node": socket.gethostname(), "pid": os.getpid()}
    try:
        result = run(Path(input_path), Config(flat), Path(out_dir), quiet=True)
    except Exception as exc:  # noqa: BLE001 - recorded in batch.json like the local loop does
        return {"status": "failed", "error": one_line(exc), "seconds": time.perf_counter() - t0, **where}
    return {
        "status": "done",
        "outputs": result.stats["outputs"],
        "stats": result.stats_path.name,
        "seconds": time.perf_counter() - t0,
        **where,
    }


def run_cluster_batch(
    inputs: Sequence[str | Path],
    cfg: Config,
    out_dir: str | Path,
    address: str,
    quiet: bool = False,
    force: bool = False,
) -> list[BatchItem]:
    """``vr180matte batch --ray``: one Ray task per video; ``OUT/batch.json`` as the local loop writes it."""
    import ray
    from tqdm import tqdm

    out = Path(out_dir).resolve()  # workers resolve paths on their own node: give them absolute ones
    # The same identity as the local loop: input path + fingerprint + config digest, same-name inputs in their
    # own subfolders, a reason per item (jobs/batch.py); refuses an empty batch before anything is written.
    items = plan_batch(inputs, cfg, out, force)
    out.mkdir(parents=True, exist_ok=True)
    summary = out / "batch.json"

    def save() -> None:
        atomic_write_json(summary, {"items": [asdict(i) for i in items], "cluster": info})

    pending: dict[Any, BatchItem] = {}
    started = connect(address)
    if cfg.processing.chunk_parallel:
        # One video at a time on the driver, its chunks spread over the cluster: a video task that waited for its
        # own chunk tasks would hold a GPU they need.
        from .batch import run_batch

        try:
            return run_batch(inputs, cfg, out, quiet=quiet, force=force, ray="")
        finally:
            if started:
                ray.shutdown()
    info: dict[str, Any] = {"address": address, "resources": {k: v for k, v in ray.cluster_resources().items()
                                                              if k in ("CPU", "GPU", "memory")}}
    try:
        remote = ray.remote(_run_video).options(**task_options(cfg))
        for item in items:
            src = Path(item.input)
            if item.status == "skipped":
                log.info("%s: %s", src.name, item.reason)
                continue
            item.status = "queued"
            ref = remote.remote(str(src.resolve()), dict(cfg._flat), str(out / item.out_dir),
                                float(cfg.cluster.cpus_per_task))
            pending[ref] = item
        save()
        with tqdm(total=len(pending), disable=quiet, unit="video", desc="batch (ray)", dynamic_ncols=True) as bar:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=_POLL_S)
                for ref in ready:
                    item = pending.pop(ref)
                    try:
                        res = ray.get(ref)
                    except ray.exceptions.RayError as exc:  # worker lost more than max_retries times
                        res = {"status": "failed", "seconds": 0.0,
                               "error": f"worker lost ({type(exc).__name__}) after {cfg.cluster.max_retries} "
                                        "retries; run the batch again to resume"}
                    item.status = res["status"]
                    item.seconds = round(res["seconds"], 3)
                    prefix = Path(item.out_dir)
                    item.outputs = [str(prefix / o) for o in res.get("outputs", [])]
                    item.stats = str(prefix / res["stats"]) if res.get("stats") else None
                    item.error = res.get("error")
                    if item.status == "done":
                        record_done(out, item, res["outputs"], res["stats"])
                    if item.error:
                        log.error("%s: %s", Path(item.input).name, item.error)
                    else:
                        log.info("%s: done in %.1fs on %s", Path(item.input).name, item.seconds, res.get("node"))
                    bar.update(1)
                    save()
                bar.set_postfix_str(f"{len(pending)} running/queued")
    except KeyboardInterrupt:
        for ref, item in pending.items():
            ray.cancel(ref, force=True)
            item.status, item.error = "interrupted", "interrupted: finished videos are kept; run the batch again to resume"
        save()
        raise
    finally:
        if started:
            ray.shutdown()
    save()
    return items
