"""The wheel carries the schemas, and an installed maml validates with them, offline.

Builds the wheel with hatchling (no build isolation: no network), installs it with --no-deps
into a fresh plain venv (no pip of its own: the dev venv's `pip --python` installs into it),
and gives that venv the dependencies through PYTHONPATH set to the dev venv's site-packages:
PYTHONPATH entries do not run .pth files, so the editable install of this checkout stays
invisible and `import maml` finds the installed wheel only.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytest.importorskip("hatchling", reason="building the wheel offline needs hatchling in the venv")


def run(*args: str | Path, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=300,
                            **kwargs)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    run(sys.executable, "-m", "pip", "wheel", ROOT, "--no-deps", "--no-build-isolation",
        "--no-index", "-w", tmp / "dist", cwd=tmp)
    (wheel,) = (tmp / "dist").glob("maml_engine-*.whl")
    # a venv without its own pip (seeding pip took most of this fixture's minute); the dev
    # venv's pip installs into it as that interpreter (`pip --python`), scripts included
    run(sys.executable, "-m", "venv", "--without-pip", tmp / "venv")
    run(sys.executable, "-m", "pip", "--python", tmp / "venv" / "bin" / "python", "install",
        "--no-deps", "--no-index", wheel, cwd=tmp)
    return tmp


def env_for(tmp: Path) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = sysconfig.get_paths()["purelib"]
    return env


def test_wheel_contains_the_schemas(installed):
    (wheel,) = (installed / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for name in ("front-matter", "policy", "pipeline", "faults", "common", "kinds/llm",
                 "kinds/python", "kinds/quantum", "kinds/shell", "kinds/video"):
        assert f"maml/schemas/{name}.json" in names
    assert "maml/schemas.py" in names and "maml/py.typed" in names


def test_installed_maml_validates_with_its_own_schemas(installed):
    venv, env = installed / "venv", env_for(installed)
    probe = run(venv / "bin" / "python", "-c",
                "import json, maml, maml.schemas as s; "
                "print(json.dumps([maml.__file__, str(s.schemas_dir()), "
                "str(s.validator('pipeline').schema['$id'])]))", cwd=installed, env=env)
    module_file, schemas_dir, schema_id = json.loads(probe.stdout)
    assert Path(module_file).is_relative_to(venv), module_file
    assert Path(schemas_dir).is_relative_to(venv) and Path(schemas_dir).name == "schemas"
    assert not Path(schemas_dir).is_relative_to(ROOT / "schemas")
    assert schema_id == "https://maml.dev/schemas/pipeline.json"
    document = ROOT / "documents" / "dialects" / "canonical.maml.md"
    result = subprocess.run([venv / "bin" / "maml", "validate", "--json", document],
                            capture_output=True, text=True, cwd=installed, env=env, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["documents"][0]["valid"] is True
    bad = ROOT / "tests" / "fixtures" / "pipeline_errors.maml.md"
    result = subprocess.run([venv / "bin" / "maml", "validate", bad], capture_output=True,
                            text=True, cwd=installed, env=env, timeout=120)
    assert result.returncode == 1 and "MAML-S202" in result.stdout
