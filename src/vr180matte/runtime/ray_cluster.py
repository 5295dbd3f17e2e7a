"""Ray, the distributed engine behind cluster batches and chunk-parallel runs: connecting and task set-up.

Why Ray: a maintained scheduler that starts on one laptop (``ray.init``) and on a Kubernetes cluster (KubeRay)
alike, places tasks by declared resources (``num_gpus``, fractional too), re-runs a task whose worker died, and
passes results between tasks; vr180matte only says what a task needs (docs/cluster.md).
"""
from __future__ import annotations

import logging
import os
from typing import Any

from ..config import Config
from ..errors import ConfigError

log = logging.getLogger(__name__)


def resolve_address(flag: str | None, cfg: Config) -> str | None:
    """The Ray address to use: ``--ray`` wins over ``cluster.address``; None (or "") means no Ray."""
    address = flag if flag is not None else cfg.cluster.address
    return address or None


def connect(address: str) -> bool:
    """Connect this process to a Ray cluster; returns True when this call started Ray (caller shuts it down).

    ``auto``: the cluster this machine belongs to (``ray start`` ran here, or ``RAY_ADDRESS``), else a new local
    one with this machine's CPUs and GPUs. ``local``: always a new local cluster. Anything else is an address
    (``HOST:6379`` or ``ray://HOST:10001``). An already connected process (a test, a notebook) is reused as is.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no phoning home from render nodes
    import ray

    if ray.is_initialized():
        return False
    kw: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    try:
        if address == "local":
            ray.init(**kw)
            return True
        if address == "auto":
            try:
                ray.init(address="auto", **kw)
            except ConnectionError:
                log.info("no running Ray cluster found: starting a local one")
                ray.init(**kw)
            return True
        ray.init(address=address, **kw)
        return True
    except Exception as exc:  # noqa: BLE001 - Ray raises several types for a bad or unreachable address
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(
            f"cannot connect to the Ray cluster at '{address}': {first}; check cluster.address / --ray "
            "(auto, local, HOST:6379 or ray://HOST:10001)"
        ) from None


def setup_worker(cpus: float) -> None:
    """Per-task process set-up: torch's and OpenCV's thread pools match the CPUs the task reserved.

    (Decoder/encoder threads of FFmpeg and MediaPipe's own pool are not limited here; a node gives its tasks
    several CPUs each in practice.)
    """
    import cv2
    import torch

    n = max(1, int(cpus))
    torch.set_num_threads(n)
    cv2.setNumThreads(n)
    os.environ.setdefault("YOLO_OFFLINE", "1")


def task_options(cfg: Config) -> dict:
    """Ray options every task of this run gets (resources, retries on worker loss only)."""
    return {
        "num_gpus": float(cfg.cluster.gpus_per_task),
        "num_cpus": float(cfg.cluster.cpus_per_task),
        "max_retries": int(cfg.cluster.max_retries),
        "retry_exceptions": False,  # a Python error is the video's fault: re-running cannot fix it
    }
