"""``pip install ./clients/python`` works: the package builds into a wheel (offline, with the
environment's hatchling) that carries every module and the ``py.typed`` marker."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_builds_with_every_module_and_py_typed(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    (wheel,) = tmp_path.glob("mistersmith-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {f"mistersmith/{p.name}" for p in (ROOT / "src" / "mistersmith").iterdir() if p.suffix == ".py"}
    assert modules | {"mistersmith/py.typed"} <= names, sorted(names)
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "Requires-Dist: httpx" in text and "Requires-Python: >=3.10" in text
