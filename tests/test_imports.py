"""The package's shape: stage subpackages whose imports go one way (scaling.LAYERS), and a light Snakefile."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import scaling

PACKAGE = Path(scaling.__file__).parent


def imports(path: Path) -> set[str]:
    """The scaling modules a file imports, at any depth of the file (function-level imports too)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("scaling"):
            names = [node.module + "." + a.name for a in node.names] if node.module == "scaling" else [node.module]
            out.update(names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("scaling"))
    return out


def layer(module: str) -> str:
    """The layer (top-level package or module of scaling) a dotted module name belongs to."""
    return module.split(".")[1]


def test_every_import_goes_down_the_layers():
    upward = []
    for path in PACKAGE.rglob("*.py"):
        own = layer("scaling." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts))
        if own == "__init__":
            continue
        for module in imports(path):
            other = layer(module)
            if other != own and other in scaling.LAYERS and \
                    scaling.LAYERS.index(other) > scaling.LAYERS.index(own):
                upward.append(f"{path.relative_to(PACKAGE)} imports {module}")
    assert not upward, "imports that go up the layers of scaling.LAYERS:\n" + "\n".join(sorted(upward))


def test_every_module_is_in_a_stage_package_or_shared():
    top = {p.stem for p in PACKAGE.glob("*.py")} | {p.name for p in PACKAGE.iterdir() if p.is_dir()
                                                    and (p / "__init__.py").exists()}
    assert top - {"__init__"} == set(scaling.LAYERS)
    for pkg in PACKAGE.iterdir():
        if (pkg / "__init__.py").exists():
            doc = ast.get_docstring(ast.parse((pkg / "__init__.py").read_text()))
            assert doc, f"{pkg.name}/__init__.py says nothing of what the stage owns"
            for module in pkg.glob("*.py"):
                assert module.stem == "__init__" or f"{pkg.name}.{module.stem}" in doc, \
                    f"{pkg.name}/__init__.py does not list {module.stem}"


HEAVY = ("torch", "pandas", "pyarrow", "tokenizers", "matplotlib", "scipy", "statsmodels", "duckdb")


def test_reading_the_snakefile_imports_no_heavy_library():
    """What Snakemake runs when it reads the Snakefile (each SLURM job reads it again): the rule files' imports of
    scaling, loading a study and a run's spec, leave torch, pandas and the rest of HEAVY unimported (numpy is not
    among them: Snakemake imports it itself, reading config files with yte)."""
    root = PACKAGE.parent
    files = [root / "Snakefile", *sorted((root / "rules").glob("*.smk"))]
    lines = [line for f in files for line in f.read_text().splitlines() if re.match(r"(from|import) scaling\b", line)]
    assert any("scaling.study.config" in line for line in lines), lines  # the loader is among them
    code = "\n".join([*lines, "from scaling.study import runs as S",
                      f"config = load([{str(root / 'workflow/config.yaml')!r}])",
                      "S.Specs(config)[S.runs(config)[0].id]",
                      f"import sys; print(*[m for m in {HEAVY!r} if m in sys.modules])"])
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert loaded == []


def test_the_job_server_imports_no_hugging_face_library():
    """A harness evaluation sets the hub's offline variables before anything imports `datasets`
    (scaling.evaluate.harness); a job forked by the job server has what the server imported
    (scaling.cli.JOB_MODULES)."""
    code = ("import importlib, sys; from scaling.cli import JOB_MODULES\n"
            "for m in JOB_MODULES: importlib.import_module(m)\n"
            "print(*[m for m in ('datasets', 'huggingface_hub', 'transformers', 'lm_eval') if m in sys.modules])")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split() == []
