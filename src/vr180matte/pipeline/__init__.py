"""The streaming VR180 matting pipeline: one public function, :func:`run`.

Files, one per stage of the data flow (see docs/architecture.md):

* ``plan.py``         — probe, layout, geometry, output spec, chunk plan: a frozen :class:`RunPlan`
* ``chunk_runner.py`` — per chunk: reader -> frame matter -> writers, hand-off, overlap blend, OOM retry
* ``overlap.py``      — the stages of a chunk run concurrently in threads joined by bounded queues
* ``frame_matter.py`` — per frame: split/scale -> stereo -> refine -> temporal -> composite (or alpha 1); it
  composes ``frame_segment.py`` (split, scale, the stereo stage: what a frame's people are) and
  ``frame_finish.py`` (refine, temporal smoothing, composite: the finished frame)
* ``stats.py``        — stats.json
* ``run.py``          — :func:`run`, the whole job
"""
from ..errors import VerificationError
from .run import RunResult, run, stats_json

__all__ = ["run", "RunResult", "VerificationError", "stats_json"]
