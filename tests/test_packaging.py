"""`pip install .` outside the repository works: the wheel carries tui, exporters, prompts and migrations
under the condsim_annot namespace, and the console script."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_namespaced_layout(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
         str(ROOT)],
        check=True,
        cwd=tmp_path,
    )
    wheel = next(tmp_path.glob("condsim_annot-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for must in (
        "condsim_annot/cli.py",
        "condsim_annot/tui/__init__.py",
        "condsim_annot/queue/__init__.py",  # the TUI's engine, a package of its own
        "condsim_annot/queue/tables.py",
        "condsim_annot/exporters/__init__.py",
        "condsim_annot/migrations/env.py",
        "condsim_annot/migrations/script.py.mako",
        "condsim_annot/migrations/versions/0001_foundation.py",
    ):
        assert must in names, f"{must} missing from the wheel"
    # every migration and every prompt file in the repository is in the wheel
    for f in (ROOT / "migrations" / "versions").glob("*.py"):
        assert f"condsim_annot/migrations/versions/{f.name}" in names
    for f in (ROOT / "prompts").iterdir():
        if f.is_file() and f.suffix in (".toml", ".txt", ".md", ".py"):
            assert f"condsim_annot/prompts/{f.name}" in names, f"prompt {f.name} not shipped"
    entry = [n for n in names if n.endswith("entry_points.txt")]
    assert entry and "condsim-annot = condsim_annot.cli:main" in zipfile.ZipFile(wheel).read(entry[0]).decode()


def test_cli_start_up_loads_no_store_or_model_stack():
    """Every command module is imported to build `--help`; the store and model stacks must load only when a
    command runs (a module-level import of them once made every invocation a second slower)."""
    heavy = ("sqlalchemy", "sqlmodel", "alembic", "numpy", "scipy", "torch", "sentence_transformers")
    code = f"import sys, condsim_annot.cli; print(','.join(m for m in {heavy!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.strip()
    assert loaded == "", f"imported at CLI start-up: {loaded}"
