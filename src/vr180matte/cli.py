"""Command line: ``vr180matte run | batch | probe | models | evaluate | sample``.

Exit codes: 0 success; 2 bad input, config or usage; 3 engine/weights problem; 4 not enough memory;
5 output verification failed; 6 some videos of a batch failed; 130 interrupted (finished chunks are kept: run
again to resume); 1 other.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

EXIT_OK, EXIT_FAIL, EXIT_INPUT, EXIT_ENGINE, EXIT_RESOURCE, EXIT_VERIFY, EXIT_INTERRUPT = 0, 1, 2, 3, 4, 5, 130
EXIT_BATCH = 6  # a batch finished but some of its videos failed (see batch.json)

log = logging.getLogger("vr180matte")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vr180matte", description="Automatic people matting for VR180 SBS video.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="matte every person in a video")
    r.add_argument("input", nargs="?", help="input video (or input.video_path in the config)")
    r.add_argument("-c", "--config", help="YAML or TOML config file")
    r.add_argument("-o", "--out", dest="out_dir", help="output folder (default: output.path)")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value; repeatable")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bar, warnings only")

    b = sub.add_parser("batch", help="matte many videos (files or folders) one after the other; resumable")
    b.add_argument("inputs", nargs="+", help="video files and/or folders of videos")
    b.add_argument("-c", "--config", help="YAML or TOML config file")
    b.add_argument("-o", "--out", dest="out_dir", default="out", help="output folder (default: out)")
    b.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    b.add_argument("--force", action="store_true", help="redo videos whose outputs already exist")
    b.add_argument("-q", "--quiet", action="store_true")

    pr = sub.add_parser("probe", help="print what vr180matte sees in a video")
    pr.add_argument("input")
    pr.add_argument("--json", action="store_true", help="machine-readable output")

    sub.add_parser("models", help="list or download model weights (vr180matte models download NAME)",
                   add_help=False)
    sub.add_parser("evaluate", help="compare an alpha output with ground-truth masks", add_help=False)

    s = sub.add_parser("sample", help="generate the demo VR180 SBS clip (a person, a tone) for a first run")
    s.add_argument("output", nargs="?", default="sample/vr180_sample.mp4")
    s.add_argument("--frames", type=int, default=48)
    s.add_argument("--size", type=int, default=1024, help="eye size in pixels (square eyes)")
    return p


def _setup_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # Third-party libraries are chatty at INFO; keep ours readable.
    for name in ("ultralytics", "matplotlib", "PIL", "absl", "jax", "hydra"):
        logging.getLogger(name).setLevel(logging.WARNING)
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
    except OSError:  # pragma: no cover - exotic platforms without fd 2
        pass


def _error(msg: str, code: int) -> int:
    first = str(msg).strip().splitlines()[0] if str(msg).strip() else "failed"
    print(f"vr180matte: error: {first}", file=sys.stderr)
    return code


def _cmd_run(args: argparse.Namespace) -> int:
    from .pipeline import run

    result = run(args.input, args.config, args.out_dir, args.overrides, quiet=args.quiet)
    if not args.quiet:
        outs = ", ".join(str(p) for p in result.outputs)
        print(f"wrote {outs} ({result.stats['frames_out']} frames); stats: {result.stats_path}")
    return EXIT_OK


def _cmd_batch(args: argparse.Namespace) -> int:
    from .jobs.batch import run_batch

    items = run_batch(args.inputs, args.config, args.out_dir, args.overrides, quiet=args.quiet, force=args.force)
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


def _cmd_sample(args: argparse.Namespace) -> int:
    from .sample import make_sample

    path = make_sample(Path(args.output), frames=args.frames, eye=args.size)
    print(path)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `models` and `evaluate` own their argument parsing.
    if argv and argv[0] in ("models", "evaluate"):
        _setup_logging("-v" in argv, False)
        return _guarded(lambda: _delegate(argv[0], argv[1:]))
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command in ("run", "batch") and not args.verbose:
        _silence_native_stderr()
    _setup_logging(args.verbose, getattr(args, "quiet", False))
    handler = {"run": _cmd_run, "batch": _cmd_batch, "probe": _cmd_probe, "sample": _cmd_sample}[args.command]
    return _guarded(lambda: handler(args))


def _delegate(command: str, rest: list[str]) -> int:
    if command == "models":
        from .runtime.models import models_command

        return models_command(rest)
    from .quality.evaluate import evaluate_command

    return evaluate_command(rest)


def _guarded(fn) -> int:
    from .config import ConfigError
    from .engines.base import EngineError
    from .io.errors import InputError, OutputError
    from .runtime.device import ResourceError

    try:
        from .pipeline import VerificationError
    except ImportError:  # pragma: no cover - only while the pipeline's own imports are broken
        VerificationError = RuntimeError  # type: ignore[misc,assignment]
    try:
        return fn()
    except (InputError, ConfigError) as exc:
        return _error(exc, EXIT_INPUT)
    except OutputError as exc:
        return _error(exc, EXIT_INPUT)
    except EngineError as exc:
        return _error(exc, EXIT_ENGINE)
    except ResourceError as exc:
        return _error(exc, EXIT_RESOURCE)
    except VerificationError as exc:
        return _error(exc, EXIT_VERIFY)
    except KeyboardInterrupt:
        return _error("interrupted: finished chunks are kept; run the same command again to resume", EXIT_INTERRUPT)
    except Exception as exc:  # noqa: BLE001 - a last line of defence: one line, details at debug level
        log.debug("unexpected error", exc_info=True)
        return _error(f"{type(exc).__name__}: {exc} (run with -v for details)", EXIT_FAIL)


if __name__ == "__main__":
    sys.exit(main())
