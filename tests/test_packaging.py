"""The built wheel: it installs one package, ``scatterbird``, that works from a folder of look-alike packages.

Builds the wheel from this checkout, installs it into a fresh virtual environment (its dependencies are taken
from the running environment through a path entry, so nothing is downloaded), and from a directory holding
its own ``models/``, ``data/`` and ``pipeline/`` packages runs ``scatterbird --help``, ``import scatterbird``
and a tiny detection with the bundled model.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
#: A folder's own packages named like the parts of scatterbird: importing one of them is the bug.
IMPOSTOR = "raise ImportError('this is the user folder\\'s own {name} package, not scatterbird\\'s')\n"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # Built from a copy: setuptools leaves build/lib behind, and a stale copy there would put files that
    # the checkout no longer has into the wheel.
    src = tmp_path_factory.mktemp("src") / "scatterbird"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", "build", "dist", "out", "*.egg-info",
                                                              "__pycache__", ".pytest_cache", ".cache"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)],
        check=True, capture_output=True, text=True, cwd=out,
    )
    (path,) = out.glob("scatterbird-*.whl")
    return path


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """The python of a fresh venv holding only the wheel, with the running environment's packages behind it."""
    env_dir = tmp_path_factory.mktemp("venv")
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    # Appended after the venv's own site-packages, so the wheel's scatterbird wins over any editable install.
    Path(site, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
                   check=True, capture_output=True, text=True)
    return python


@pytest.fixture(scope="module")
def lookalike_folder(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("project")
    for name in ("models", "data", "pipeline"):
        (d / name).mkdir()
        (d / name / "__init__.py").write_text(IMPOSTOR.format(name=name))
    (d / "cli.py").write_text(IMPOSTOR.format(name="cli"))
    return d


def test_the_wheel_holds_one_top_level_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"scatterbird", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}
    for needed in ("scatterbird/__init__.py", "scatterbird/cli.py", "scatterbird/data/default_model.pt",
                   "scatterbird/pipeline/frontend/scattering.py", "scatterbird/models/registry.py"):
        assert needed in names, needed
    assert not any(n.startswith(("scatterbird/tests/", "scatterbird/benchmarks/", "scatterbird/scripts/"))
                   for n in names)
    assert any(n.startswith("scatterbird/pipeline/templates/") for n in names)


def _run(python: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    env["SCATTERBIRD_CACHE"] = str(cwd / "cache")
    return subprocess.run([str(python), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_help_version_and_import_from_a_folder_of_lookalikes(installed, lookalike_folder):
    scatterbird = installed.parent / "scatterbird"
    r = _run(scatterbird, ["--help"], lookalike_folder)
    assert r.returncode == 0, r.stderr
    assert "detect" in r.stdout and "evaluate" in r.stdout
    r = _run(installed, ["-c", "import scatterbird, importlib.metadata as m; "
                         "print(scatterbird.__file__); print(scatterbird.__version__ == m.version('scatterbird'))"],
             lookalike_folder)
    assert r.returncode == 0, r.stderr
    where, same_version = r.stdout.split()
    assert Path(where).is_relative_to(installed.parents[1]) and same_version == "True"
    r = _run(installed, ["-m", "scatterbird", "--version"], lookalike_folder)
    assert r.returncode == 0 and r.stdout.startswith("scatterbird "), r.stderr


def test_a_tiny_detect_with_the_bundled_model(installed, lookalike_folder):
    rec = lookalike_folder / "rec"
    rec.mkdir()
    t = np.arange(3 * 22050) / 22050
    sf.write(rec / "tone.wav", (0.1 * np.sin(2 * np.pi * 3000 * t)).astype(np.float32), 22050)
    out = lookalike_folder / "out"
    r = _run(installed.parent / "scatterbird", ["detect", str(rec), "-o", str(out), "--window", "2", "--hop", "1",
                                                 "-q"], lookalike_folder)
    assert r.returncode == 0, r.stderr
    rows = (out / "windows.csv").read_text().splitlines()
    assert len(rows) == 1 + 2  # a header and the windows 0-2 s and 1-3 s
