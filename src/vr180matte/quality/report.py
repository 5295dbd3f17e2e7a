"""The processing report: per-stage time and fps, RAM/VRAM over time, chunk log -> JSON + a PNG a person reads.

Samples are kept in memory with a fixed cap: when the cap is reached every other sample is dropped and the
sampling stride doubles, so a 10-hour job keeps the same number of points as a 10-second one.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)

_MAX_SAMPLES = 2000


class ProcessingReport:
    def __init__(self) -> None:
        self.samples: list[dict] = []
        self.chunks: list[dict] = []
        self._stride = 1
        self._seen = 0

    def sample(self, t: float, rss_mb: float, vram_mb: float | None, frame: int) -> None:
        """One point: seconds since start, resident memory, allocated VRAM (None without a GPU), frames done."""
        self._seen += 1
        if (self._seen - 1) % self._stride:
            return
        self.samples.append({"t": round(float(t), 3), "rss_mb": round(float(rss_mb), 1),
                             "vram_mb": None if vram_mb is None else round(float(vram_mb), 1), "frame": int(frame)})
        if len(self.samples) > _MAX_SAMPLES:
            self.samples = self.samples[::2]
            self._stride *= 2

    def add_chunk(self, d: dict) -> None:
        """One chunk's record (start, end, seconds, ... as the pipeline logs it)."""
        self.chunks.append(dict(d))

    def write(
        self, out_dir: Path, stem: str, stages: dict[str, float], frames: int, timing: dict | None = None
    ) -> list[Path]:
        """Write ``<stem>.report.json`` and ``<stem>.report.png``; returns both paths.

        ``timing``: :meth:`vr180matte.runtime.profile.StageTimer.summary` (wall, busy and wait seconds). With
        overlapping stages the busy seconds add up to more than the wall time; the report shows both.
        """
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        stage_rows = {
            name: {"seconds": round(float(sec), 3), "fps": round(frames / sec, 3) if sec > 0 and frames else None}
            for name, sec in stages.items()
        }
        total = float(sum(stages.values()))
        data = {
            "frames": int(frames),
            "total_stage_seconds": round(total, 3),
            "stages": stage_rows,
            "peak_rss_mb": max((s["rss_mb"] for s in self.samples), default=None),
            "peak_vram_mb": max((s["vram_mb"] for s in self.samples if s["vram_mb"] is not None), default=None),
            "samples": self.samples,
            "chunks": self.chunks,
        }
        if timing is not None:
            data["timing"] = {
                "wall_s": timing.get("wall_s"),
                "busiest_stage": timing.get("busiest_stage"),
                "busiest_stage_s": timing.get("busiest_stage_s"),
                "efficiency": timing.get("efficiency"),
                "pipeline_busy_s": dict(timing.get("pipeline_busy_s") or {}),
                "pipeline_efficiency": timing.get("pipeline_efficiency"),
                "cpu_s": timing.get("cpu_s"),
                "core_utilization": timing.get("core_utilization"),
                "wait_s": dict(timing.get("wait_s") or {}),
                "threads": dict(timing.get("threads") or {}),
                "fps_wall": round(frames / timing["wall_s"], 3) if timing.get("wall_s") and frames else None,
            }
        jpath = out_dir / f"{stem}.report.json"
        jpath.write_text(json.dumps(data, indent=1))
        ppath = out_dir / f"{stem}.report.png"
        self._plot(ppath, stem, stage_rows, frames, data.get("timing"))
        return [jpath, ppath]

    def _plot(self, path: Path, stem: str, stages: dict, frames: int, timing: dict | None = None) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(3, 1, figsize=(8, 8.5), dpi=80)
        ax = axes[0]
        names = list(stages)
        secs = [stages[n]["seconds"] for n in names]
        bars = ax.barh(names, secs, color="#4c72b0")
        for b, n in zip(bars, names):
            fps = stages[n]["fps"]
            ax.text(b.get_width(), b.get_y() + b.get_height() / 2, f" {b.get_width():.1f}s" + (f"  {fps:.2f} fps" if fps else ""),
                    va="center", fontsize=8)
        if timing and timing.get("wall_s"):
            # busy seconds overlap when stages run concurrently: the wall line shows what the run really took
            ax.axvline(timing["wall_s"], color="#c44e52", lw=1.2, ls="--")
            ax.text(timing["wall_s"], -0.6, f" wall {timing['wall_s']:.1f}s", color="#c44e52", fontsize=8, va="bottom")
        ax.invert_yaxis()
        ax.set_xlabel("busy seconds")
        title = f"{stem}: {frames} frames, time per stage"
        if timing and timing.get("efficiency"):
            title += f" (wall / busiest = {timing['efficiency']:.2f}"
            if timing.get("core_utilization"):
                title += f", cores {100 * timing['core_utilization']:.0f}% busy"
            title += ")"
        ax.set_title(title)
        ax.set_xlim(0, max(secs + [(timing or {}).get("wall_s") or 0], default=1) * 1.35 or 1)

        t = [s["t"] for s in self.samples]
        ax = axes[1]
        ax.plot(t, [s["rss_mb"] for s in self.samples], label="RAM (RSS) MB", color="#dd8452")
        vram = [s["vram_mb"] for s in self.samples]
        if any(v is not None for v in vram):
            ax.plot(t, [float("nan") if v is None else v for v in vram], label="VRAM MB", color="#55a868")
        ax.set_ylabel("MB")
        ax.set_title("memory over time")
        ax.legend(loc="upper left", fontsize=8)

        ax = axes[2]
        ax.plot(t, [s["frame"] for s in self.samples], color="#8172b3")
        for i, c in enumerate(self.chunks):
            if "t0" in c and "t1" in c:
                ax.axvspan(c["t0"], c["t1"], alpha=0.12 if i % 2 else 0.05, color="k")
        ax.set_xlabel("seconds since start")
        ax.set_ylabel("frames done")
        ax.set_title(f"progress ({len(self.chunks)} chunks)")
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
