"""Where chunk-parallel pieces run: Ray tasks on a cluster (``RayExecutor``) or in this process.

A chunk task or a seam task is a call of :func:`vr180matte.pipeline.chunk_parallel.run_chunk` / ``run_seam``;
this module only decides where (``executor_for``) and keeps the order seams need (a seam after its two chunks).
"""
from __future__ import annotations

from typing import Any

from ..config import Config
from ..runtime.ray_cluster import connect, setup_worker, task_options


def _run_piece(kind: str, args: tuple, k: int, cpus: float, *deps: Any) -> dict:
    """Body of one chunk-parallel task (runs on a worker): chunk ``k`` or the seam before chunk ``k``."""
    setup_worker(cpus)
    from . import chunk_parallel

    if kind == "chunk":
        return chunk_parallel.run_chunk(*args, k)
    return chunk_parallel.run_seam(*args, k)


class RayExecutor:
    """Chunk-parallel pieces as Ray tasks: every chunk at once, each seam as soon as its two chunks are done.

    A seam task gets its chunks' results as arguments, so Ray starts it only after both finished; a task whose
    worker died is re-run (``cluster.max_retries``); a piece that finished is never run again (done markers).
    """

    name = "ray"

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    def run(self, job_args: tuple, chunks: list[int], seams: list[int], on_done) -> None:
        import ray

        remote = ray.remote(_run_piece).options(**task_options(self.cfg))
        cpus = float(self.cfg.cluster.cpus_per_task)
        chunk_refs = {k: remote.remote("chunk", job_args, k, cpus) for k in chunks}
        pending = list(chunk_refs.values())
        for k in seams:
            deps = [chunk_refs[j] for j in (k - 1, k) if j in chunk_refs]
            pending.append(remote.remote("seam", job_args, k, cpus, *deps))
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                for ref in ready:
                    try:
                        on_done(ray.get(ref))
                    except ray.exceptions.RayTaskError as exc:  # the task's own error: re-raise it as it was
                        raise exc.as_instanceof_cause() from None
                    except ray.exceptions.RayError as exc:  # its worker died more than max_retries times
                        from ..errors import ResourceError

                        raise ResourceError(
                            f"a chunk's Ray worker died {self.cfg.cluster.max_retries + 1} times ({type(exc).__name__}:"
                            " out of memory, or the node was lost); finished chunks are kept: run again to resume"
                        ) from None
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise


def executor_for(cfg: Config):
    """Ray when this process is connected to a cluster (or ``cluster.address`` names one), else in-process."""
    from .chunk_parallel import LocalExecutor

    try:
        import ray
    except ImportError:  # pragma: no cover - ray is a dependency; a trimmed install still runs locally
        return LocalExecutor()
    if not ray.is_initialized() and cfg.cluster.address:
        connect(cfg.cluster.address)  # stays connected for the rest of this process (a `vr180matte run`)
    return RayExecutor(cfg) if ray.is_initialized() else LocalExecutor()
