"""The package's folders follow the data flow: a lower stage never imports a higher one.

errors/forward/boxes/config < compat < io < runtime < engines < track < stereo < matte < quality < pipeline < jobs
< cli.
A violation means a stage reaches up into its caller (the shape that made the old top-level object own
everything); move the shared piece down instead.
"""
import ast
from pathlib import Path

import vr180matte

ORDER = ["errors", "forward", "boxes", "config", "cfg", "compat", "io", "runtime", "engines", "track", "stereo", "matte",
         "quality", "pipeline", "jobs", "sample", "cli", "__main__"]
RANK = {name: i for i, name in enumerate(ORDER)}
ROOT = Path(vr180matte.__file__).parent


def _imports(path: Path):
    parts = path.relative_to(ROOT).parts[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(parts[: len(parts) - (node.level - 1)])
                target = base + (node.module.split(".") if node.module else [])
            elif node.module and node.module.startswith("vr180matte."):
                target = node.module.split(".")[1:]
            else:
                continue
            if target:
                yield target[0], node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("vr180matte."):
                    yield alias.name.split(".")[1], node.lineno


def test_no_stage_imports_a_higher_stage():
    bad = []
    for f in sorted(ROOT.rglob("*.py")):
        me = f.relative_to(ROOT).parts[0].removesuffix(".py")
        if me not in RANK:
            continue
        for top, line in _imports(f):
            if top != me and top in RANK and RANK[top] > RANK[me]:
                bad.append(f"{f.relative_to(ROOT)}:{line} imports {top}")
    assert not bad, "\n".join(bad)
