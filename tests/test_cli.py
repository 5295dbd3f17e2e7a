"""The command line as a user meets it: real subprocesses, real files, exit codes and one-line errors."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from synth import gradient_sbs, tone, write_audio_only, write_video

EXE = [sys.executable, "-m", "vr180matte.cli"]
FAST = ["--set", "matting.engine=passthrough", "--set", "hardware.device=cpu", "--quiet"]


def cli(*args, timeout=120):
    return subprocess.run([*EXE, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def one_line_error(proc) -> str:
    lines = [l for l in proc.stderr.strip().splitlines() if l.startswith("vr180matte: error:")]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cli")
    return write_video(d / "clip.mp4", lambda i: gradient_sbs(i, 256, 128), n=12, fps=24, audio=tone(0.5))


def test_probe_json(clip):
    p = cli("probe", clip, "--json")
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    assert data["width"] == 256 and data["frame_count"] == 12 and data["fps"] == "24/1"
    assert len(data["audio_streams"]) == 1


def test_run_writes_output_and_stats(clip, tmp_path):
    p = cli("run", clip, "-o", tmp_path, *FAST)
    assert p.returncode == 0, p.stderr
    stats = json.loads((tmp_path / "clip.stats.json").read_text())
    for key in ("input", "engine", "frames_in", "frames_out", "fps", "duration_in_s", "duration_out_s", "audio",
                "outputs", "stages", "peak_rss_mb", "peak_vram_mb", "chunks"):
        assert key in stats, key
    assert stats["frames_out"] == stats["frames_in"] == 12
    assert (tmp_path / stats["outputs"][0]).exists()
    assert p.stdout == "" and "it/s" not in p.stderr, "--quiet prints no progress"


def test_missing_file(tmp_path):
    p = cli("run", tmp_path / "nope.mp4", "-o", tmp_path, *FAST)
    assert p.returncode == 2 and "not found" in one_line_error(p)


def test_bad_input_is_refused_before_torch_is_imported(tmp_path):
    """A missing file, a non-video and an odd-width side-by-side are refused by the plan before torch (seconds of
    imports) loads: the user's one line comes at once."""
    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video\n" * 20)
    odd = write_video(tmp_path / "odd.mkv", lambda i: np.full((64, 129, 3), 90, np.uint8), n=2, codec="ffv1",
                      pix_fmt="yuv444p")
    code = ("import sys; from vr180matte.cli import main; "
            "codes = [main(['run', a, '-o', sys.argv[-1], '--quiet']) for a in sys.argv[1:-1]]; "
            "print(codes, 'torch' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code, str(tmp_path / "nope.mp4"), str(notes), str(odd),
                        str(tmp_path / "o")], capture_output=True, text=True, timeout=60)
    assert p.stdout.strip() == "[2, 2, 2] False", (p.stdout, p.stderr[-2000:])


def test_not_a_video(tmp_path):
    f = tmp_path / "notes.mp4"
    f.write_text("hello, this is not a video\n" * 50)
    p = cli("run", f, "-o", tmp_path / "o", *FAST)
    assert p.returncode == 2
    one_line_error(p)
    assert not (tmp_path / "o" / "notes.alpha.mov").exists()


def test_audio_only_file(tmp_path):
    f = write_audio_only(tmp_path / "voice.m4a", 0.3)
    p = cli("run", f, "-o", tmp_path, *FAST)
    assert p.returncode == 2 and "video" in one_line_error(p)


def test_odd_width_cannot_be_side_by_side(tmp_path):
    f = write_video(tmp_path / "odd.mkv", lambda i: np.full((64, 129, 3), 90, np.uint8), n=3, codec="ffv1",
                    pix_fmt="yuv444p")
    p = cli("run", f, "-o", tmp_path, *FAST)
    assert p.returncode == 2 and "odd" in one_line_error(p) and "mono" not in one_line_error(p)


def test_top_bottom_metadata_is_followed_with_layout_auto(clip, tmp_path):
    from vr180matte.io.spherical import write_spherical

    f = tmp_path / "tb.mp4"
    f.write_bytes(clip.read_bytes())
    write_spherical(f, stereo="top-bottom")
    assert json.loads(cli("probe", f, "--json").stdout)["layout"] == "tb"
    p = cli("run", f, "-o", tmp_path / "a", *FAST)
    assert p.returncode == 0, p.stderr
    stats = json.loads((tmp_path / "a" / "tb.stats.json").read_text())
    assert stats["layout"]["layout"] == "tb" and stats["layout"]["source"] == "stereo metadata"
    p = cli("run", f, "-o", tmp_path / "b", *FAST, "--set", "input.layout=sbs")
    assert p.returncode == 0, p.stderr
    assert json.loads((tmp_path / "b" / "tb.stats.json").read_text())["layout"]["layout"] == "sbs"


def test_truncated_file_leaves_no_finished_output(clip, tmp_path):
    big = write_video(tmp_path / "big.mp4", lambda i: gradient_sbs(i, 256, 128), n=60, options={"g": "5"})
    data = big.read_bytes()
    cut = tmp_path / "cut.mp4"
    # keep the moov (PyAV writes it at the end) but drop the middle of mdat: frames decode until the hole
    cut.write_bytes(data[: len(data) // 3] + bytes(len(data) // 3) + data[2 * len(data) // 3 :])
    out = tmp_path / "o"
    p = cli("run", cut, "-o", out, *FAST)
    assert p.returncode == 2, p.stderr
    assert "corrupt" in one_line_error(p) or "truncated" in one_line_error(p)
    assert not (out / "cut.alpha.mov").exists()
    assert not (out / "cut.stats.json").exists()


def test_unwritable_output_folder(clip, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    p = cli("run", clip, "-o", blocker / "sub", *FAST)
    assert p.returncode == 7 and "cannot write" in one_line_error(p)


def test_invalid_config_value_and_unknown_key(clip, tmp_path):
    p = cli("run", clip, "-o", tmp_path, "--set", "processing.scale_factor=3")
    assert p.returncode == 2 and "scale_factor" in one_line_error(p)
    p = cli("run", clip, "-o", tmp_path, "--set", "output.formt=alpha")
    assert p.returncode == 2 and "did you mean 'output.format'" in one_line_error(p)


def test_output_equal_to_input_is_refused(tmp_path):
    f = write_video(tmp_path / "same.mov", lambda i: gradient_sbs(i, 128, 64), n=3)
    before = f.read_bytes()
    p = cli("run", f, "-o", f, *FAST)
    assert p.returncode == 2 and "input" in one_line_error(p)
    assert f.read_bytes() == before


def test_models_lists_what_is_expected_and_where_to_get_it(tmp_path):
    p = cli("models", "--dir", tmp_path)
    assert p.returncode == 0, p.stderr
    for name in ("yolov8n", "sam2.1_hiera_tiny", "mobile_sam"):
        assert name in p.stdout
    assert "missing" in p.stdout.lower() and "https://" in p.stdout


def test_missing_weights_is_a_one_line_error_naming_file_url_and_folder(clip, tmp_path):
    models = tmp_path / "models"
    p = cli("run", clip, "-o", tmp_path / "o", "--set", "matting.engine=det-sam2", "--set", f"models.dir={models}",
            "--set", "hardware.device=cpu", "--quiet")
    assert p.returncode == 3
    line = one_line_error(p)
    assert ".pt" in line and "https://" in line and str(models) in line


# ------------------------------------------------------------------ one CLI module, one exit-code table


def test_python_m_vr180matte_lists_every_subcommand():
    p = subprocess.run([sys.executable, "-m", "vr180matte", "--help"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    for command in ("run", "batch", "probe", "models", "evaluate", "sample"):
        assert f"    {command} " in p.stdout, command


def test_models_download_of_an_unknown_name_is_a_usage_error(tmp_path):
    p = cli("models", "download", "bogus", "--dir", tmp_path)
    assert p.returncode == 2
    assert "bogus" in one_line_error(p)
    assert not list(tmp_path.iterdir())


def test_models_download_failure_is_an_engine_error(tmp_path):
    p = cli("models", "download", "yolov8n", "--dir", tmp_path, "--url", "http://127.0.0.1:9/x.pt",
            "--timeout", "2", "--quiet")
    assert p.returncode == 3 and "cannot download yolov8n.pt" in one_line_error(p)


def test_models_flags_a_junk_file_instead_of_listing_it_present(tmp_path):
    (tmp_path / "yolov8n.pt").write_bytes(b"not weights!")  # 12 bytes
    p = cli("models", "list", "--dir", tmp_path)
    assert p.returncode == 0, p.stderr
    line = next(x for x in p.stdout.splitlines() if x.startswith("yolov8n "))
    assert "corrupt" in line and "present" not in line
    line = next(x for x in p.stdout.splitlines() if x.startswith("yolov8s "))
    assert "missing" in line


def test_evaluate_of_a_missing_output_is_exit_2(tmp_path):
    (tmp_path / "gt").mkdir()
    p = cli("evaluate", tmp_path / "missing.mov", tmp_path / "gt")
    assert p.returncode == 2
    one_line_error(p)


def _raiser(exc):
    def fn():
        raise exc
    return fn


def test_every_error_class_exits_with_its_documented_code(capsys):
    from vr180matte import errors
    from vr180matte.cli import _guarded

    cases = {
        errors.InputError("bad input\nsecond line"): 2,
        errors.ConfigError("bad config"): 2,
        errors.UsageError("bad usage"): 2,
        errors.EngineError("no weights"): 3,
        errors.ResourceError("too big"): 4,
        errors.VerificationError("frames differ"): 5,
        errors.OutputError("cannot write x"): 7,
        errors.disk_full("/tmp", 10 << 30): 7,
        errors.LockedError("locked by pid 1"): 8,
        KeyboardInterrupt(): 130,
        errors.Terminated(): 143,
        KeyError("raw internals"): 70,
        OSError(28, "No space left on device"): 7,
    }
    for exc, code in cases.items():
        assert _guarded(_raiser(exc)) == code, exc
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("vr180matte: error: "), err
        assert "Traceback" not in err and "raw internals" not in err  # no raw exception text
    # every class in the module carries a code from the table, and the table never uses 1
    classes = [v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, BaseException)]
    assert len(classes) >= 10
    for cls in classes:
        assert cls.exit_code in errors.EXIT_CODES and cls.exit_code != 1, cls
    # old import locations are the same classes
    from vr180matte.config import ConfigError
    from vr180matte.engines.base import EngineError
    from vr180matte.io.errors import InputError, OutputError
    from vr180matte.runtime.device import ResourceError

    assert (ConfigError, EngineError, InputError, OutputError, ResourceError) == (
        errors.ConfigError, errors.EngineError, errors.InputError, errors.OutputError, errors.ResourceError)


def test_legacy_pipeline_verification_error_keeps_code_5(capsys):
    from vr180matte.cli import _guarded

    class VerificationError(RuntimeError):  # what pipeline.py still defines until it imports vr180matte.errors
        pass

    assert _guarded(_raiser(VerificationError("2 frames short"))) == 5
    assert "2 frames short" in capsys.readouterr().err


def test_disk_full_message_says_how_much_is_needed():
    from vr180matte.errors import disk_full

    exc = disk_full("/", 1 << 60)
    line = str(exc.strerror)
    assert "disk full" in line and "free" in line and "needed" in line and "more" in line


@pytest.mark.parametrize("where", ["README.md", "docs/architecture.md"])
def test_exit_code_table_is_documented(where):
    from vr180matte.errors import EXIT_CODES

    text = (Path(__file__).resolve().parents[1] / where).read_text()
    for code, meaning in EXIT_CODES.items():
        assert f"| {code} | {meaning} |" in text, (where, code)
