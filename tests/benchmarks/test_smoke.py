"""Every benchmark under benchmarks/ runs in its tiny ``--smoke`` mode and prints its documented keys.

The list of scripts is a glob, so a benchmark added later is checked without touching this file. Each
``benchmarks/*.py`` must declare, at module top level, a literal ``SMOKE_KEYS = ("key", "a.b", ...)``: the keys
its last stdout line (one JSON object) always has. The declaration is read with ``ast`` (the script is never
imported here: an import error must show up as the script's own failure, not as a collection error).

Key paths: a dot goes one level down into a nested object, e.g. ``"det-sam2.reads_plain"`` is
``last["det-sam2"]["reads_plain"]``. Object keys may contain dots themselves (``results["0.25"]``), so at each
level the longest run of path parts that is a key of the object is taken (``"results.0.25.fps"`` ->
``last["results"]["0.25"]["fps"]``).

Shell benchmarks (``benchmarks/*.sh``, e.g. the GPU check) exist to run on a device. In CI each one present must
parse (``bash -n``); its ``--cpu-dry-run`` (which must exit 0) re-runs the Python benchmarks it drives, already
smoked above, and takes minutes, so that case is marked slow. A Python script without ``SMOKE_KEYS``, or one that
fails, times out or prints no JSON, fails its case.
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "benchmarks"
TIMEOUT_S = 240  # one smoke run; each takes seconds to tens of seconds on 2 loaded cores


def smoke_keys(path: Path) -> tuple[str, ...]:
    """The literal module-level ``SMOKE_KEYS`` tuple of a benchmark script (read with ast, never imported)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        else:
            targets = [node.target] if isinstance(node, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == "SMOKE_KEYS" for t in targets) and node.value is not None:
            value = ast.literal_eval(node.value)
            if not isinstance(value, (tuple, list)) or not value or not all(isinstance(k, str) for k in value):
                raise AssertionError(f"{path.name}: SMOKE_KEYS must be a non-empty tuple of strings, got {value!r}")
            return tuple(value)
    raise AssertionError(f"{path.name} declares no module-level SMOKE_KEYS = (...): add one (see tests/benchmarks)")


def lookup(obj: dict, key: str):
    """The value at dotted path ``key`` (longest-key-first at each level); KeyError naming the missing part."""
    parts = key.split(".")
    while parts:
        if not isinstance(obj, dict):
            raise KeyError(f"{key}: {'.'.join(parts)} is under a non-object ({type(obj).__name__})")
        for n in range(len(parts), 0, -1):
            name = ".".join(parts[:n])
            if name in obj:
                obj, parts = obj[name], parts[n:]
                break
        else:
            raise KeyError(f"{key}: no {parts[0]!r} among {sorted(obj)}")
    return obj


def last_json(stdout: str) -> dict:
    lines = [ln for ln in stdout.strip().splitlines() if ln.strip()]
    assert lines, "the benchmark printed nothing on stdout"
    try:
        obj = json.loads(lines[-1])
    except json.JSONDecodeError as e:
        raise AssertionError(f"last stdout line is not JSON ({e}): {lines[-1][:300]!r}") from None
    assert isinstance(obj, dict), f"last stdout line is JSON but not an object: {lines[-1][:300]!r}"
    return obj


def run_script(cmd: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    # TMPDIR stays the system's: Ray's socket paths under a pytest tmp_path exceed AF_UNIX's 107 bytes
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO / "tests")]),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    try:
        return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"{' '.join(cmd[1:])} did not finish within {TIMEOUT_S} s") from e


PY_SCRIPTS = sorted(BENCH.glob("*.py"))
SH_SCRIPTS = sorted(BENCH.glob("*.sh"))


def test_the_glob_finds_the_benchmarks():
    assert len(PY_SCRIPTS) >= 11, [p.name for p in PY_SCRIPTS]


@pytest.mark.parametrize("script", PY_SCRIPTS, ids=lambda p: p.stem)
def test_benchmark_smoke(script: Path, tmp_path: Path):
    keys = smoke_keys(script)
    res = run_script([sys.executable, str(script), "--smoke"], tmp_path)  # run from tmp_path: stray files land there
    assert res.returncode == 0, f"{script.name} --smoke exited {res.returncode}:\n{res.stderr[-3000:]}"
    last = last_json(res.stdout)
    missing = []
    for k in keys:
        try:
            lookup(last, k)
        except KeyError as e:
            missing.append(str(e))
    assert not missing, f"{script.name}: last JSON line lacks {missing}: {json.dumps(last)[:1500]}"


@pytest.mark.parametrize("script", SH_SCRIPTS, ids=lambda p: p.name)
def test_shell_benchmark_parses(script: Path):
    """In CI: the shell script parses (``bash -n``). Its dry run re-runs the Python benchmarks it drives, whose
    own smoke runs are the cases above, so the dry run itself is slow-marked (minutes on 2 cores)."""
    res = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, f"{script.name} does not parse:\n{res.stderr[-3000:]}"


@pytest.mark.slow
@pytest.mark.parametrize("script", SH_SCRIPTS, ids=lambda p: p.name)
def test_shell_benchmark_dry_run(script: Path, tmp_path: Path):
    try:
        res = subprocess.run(["bash", str(script), "--cpu-dry-run"], cwd=REPO, capture_output=True, text=True,
                             timeout=1800, env={**os.environ, "OUT": str(tmp_path / "out")})
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"{script.name} --cpu-dry-run did not finish within 1800 s") from e
    assert res.returncode == 0, f"{script.name} --cpu-dry-run exited {res.returncode}:\n{res.stderr[-3000:]}"


# The checker itself: it must be able to fail.

def test_lookup_walks_nested_and_dotted_keys():
    obj = {"a": {"b": 1}, "results": {"0.25": {"fps": 2.0}}, "det-sam2": {"reads_plain": 3}}
    assert lookup(obj, "a.b") == 1 and lookup(obj, "results.0.25.fps") == 2.0
    assert lookup(obj, "det-sam2.reads_plain") == 3
    for bad in ("a.c", "results.0.5.fps", "x", "a.b.c"):
        with pytest.raises(KeyError):
            lookup(obj, bad)


def test_smoke_keys_is_read_without_importing(tmp_path):
    good = tmp_path / "good.py"
    good.write_text('import no_such_module_anywhere\nSMOKE_KEYS = ("fps", "a.b")\n')
    assert smoke_keys(good) == ("fps", "a.b")
    for body in ("X = 1\n", "SMOKE_KEYS = ()\n", "SMOKE_KEYS = (1, 2)\n", "def f():\n    SMOKE_KEYS = ('a',)\n"):
        bad = tmp_path / "bad.py"
        bad.write_text(body)
        with pytest.raises((AssertionError, ValueError)):
            smoke_keys(bad)
    with pytest.raises(AssertionError):
        last_json('progress\n{"a": 1\n')
