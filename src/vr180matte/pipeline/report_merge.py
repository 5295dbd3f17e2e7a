"""Merge the per-chunk reports of a chunk-parallel run into the one ``stereo`` / ``quality`` / ``tracks`` /
``kpi`` / ``decontaminate`` blocks a sequential run writes to stats.json.

Each chunk of a chunk-parallel run has its own frame matter (stereo stage, quality monitor, trackers), so each
reports on its own frames (every frame is accounted by exactly one chunk: the leading overlap by the chunk that
warms up on it, the trailing one by nobody). The rules, by key: means are weighted by the block's ``frames``;
``min``/``max`` keys take the min/max; configuration echoes (thresholds, modes, sampling) are the same in every
chunk and taken once; logs are concatenated (capped as in a sequential run); every other number is a counter and
is summed. Per-person figures (``disparity_px``) are keyed by the run's global track ids (``id_maps``).
"""
from __future__ import annotations

from typing import Any

MEAN_KEYS = {"agreement_mean", "agreement_before_correction_mean", "mean", "edge_consistency",
             "temporal_stability", "stereo_alignment", "mean_latency_ms"}
WEIGHT_KEYS = ("frames", "predicts")  # a block's own count that weighs its means
MIN_KEYS = {"agreement_min", "min"}
MAX_KEYS = {"max"}
#: the same value in every chunk (configuration echoes): taken from the first chunk that has it
SAME_KEYS = {"mode", "correction_method", "event", "device", "latency_synced", "validation_threshold",
             "use_disparity_mapping", "fuse_edges", "enabled", "threshold", "floor", "every", "max_side",
             "analysis_size"}
LOG_CAP = 1000


def _weighted_mean(values: list, weights: list[float]) -> float | None:
    pairs = [(float(v), w) for v, w in zip(values, weights) if v is not None]
    total = sum(w for _, w in pairs)
    if not pairs:
        return None
    if total <= 0:
        return round(sum(v for v, _ in pairs) / len(pairs), 4)
    return round(sum(v * w for v, w in pairs) / total, 4)


def _merge(key: str | None, values: list, weights: list[float]) -> Any:
    present = [(v, w) for v, w in zip(values, weights) if v is not None]
    if not present:
        return None
    values, weights = [v for v, _ in present], [w for _, w in present]
    if all(isinstance(v, dict) for v in values):
        for wk in WEIGHT_KEYS:
            counts = [v.get(wk) for v in values]
            if all(isinstance(f, (int, float)) and not isinstance(f, bool) for f in counts):
                weights = [float(f) for f in counts]  # this block's own counts weigh its means
                break
        keys = list(dict.fromkeys(k for v in values for k in v))
        return {k: _merge(k, [v.get(k) for v in values], weights) for k in keys}
    if key in SAME_KEYS or isinstance(values[0], (str, bool)):
        return values[0]
    if key in MEAN_KEYS:
        return _weighted_mean(values, weights)
    if key in MIN_KEYS:
        return min(values)
    if key in MAX_KEYS:
        return max(values)
    if isinstance(values[0], list):
        return [x for v in values for x in v][:LOG_CAP]
    if all(isinstance(v, (int, float)) for v in values):
        total = sum(values)
        return round(total, 4) if isinstance(total, float) else total
    return values[0]


def merge_reports(reports: list[dict], id_maps: list[dict[int, int]] | None = None) -> dict:
    """One report from the chunks' ``FrameMatter.report()`` dicts (in chunk order); see the module docstring."""
    if not any(reports):
        return {}
    chunks = list(enumerate(reports))
    merged = _merge(None, [r for _, r in chunks if r], [1.0] * sum(1 for r in reports if r))
    st = merged.get("stereo")
    if isinstance(st, dict):
        # Per-person disparities under the run's global ids; a person in several chunks gets the mean of its
        # chunks' means (the generic merge above would have summed them under clashing local ids).
        by_id: dict[int, list[float]] = {}
        for k, r in chunks:
            m = id_maps[k] if id_maps is not None and k < len(id_maps) else {}
            for tid, v in ((r or {}).get("stereo", {}).get("disparity_px") or {}).items():
                by_id.setdefault(int(m.get(int(tid), int(tid))), []).append(float(v))
        st["disparity_px"] = {str(t): round(sum(v) / len(v), 3) for t, v in sorted(by_id.items())}
        if "correction_log_truncated" in st:
            st["correction_log_truncated"] = any((r or {}).get("stereo", {}).get("correction_log_truncated")
                                                 for r in reports) \
                or int(st.get("corrections") or 0) > len(st.get("correction_log") or [])
    return merged


__all__ = ["merge_reports"]
