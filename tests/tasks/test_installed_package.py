"""cellseg installed like a tool: the wheel ships the configs, and the console scripts work from any folder.

The wheel is built from a copy of the sources (the checkout stays untouched) and installed without its
dependencies into a temporary folder put first on PYTHONPATH, so it runs with the test environment's
dependencies but not with the checkout's cellseg."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "cellseg", "configs")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("package")
    source = work / "src"
    source.mkdir()
    for name in SOURCES:
        copy = shutil.copytree if (REPO_ROOT / name).is_dir() else shutil.copy
        kwargs = {"symlinks": True, "ignore": shutil.ignore_patterns("__pycache__", "*.egg-info")} \
            if copy is shutil.copytree else {}
        copy(REPO_ROOT / name, source / name, **kwargs)
    run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q",
         "-w", str(work / "dist")], cwd=work)
    wheel = next((work / "dist").glob("cellseg-*.whl"))
    site = work / "site"
    run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)], cwd=work)
    outside = work / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PROJECT_ROOT"}
    env.update(PYTHONPATH=str(site), OMP_NUM_THREADS="2", WANDB_MODE="disabled", CELLSEG_OFFLINE="1")
    return {"wheel": wheel, "bin": site / "bin", "cwd": outside, "env": env}


def run(command: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


def test_the_wheel_ships_every_config(installed):
    shipped = {n for n in zipfile.ZipFile(installed["wheel"]).namelist() if n.startswith("cellseg/configs/")}
    expected = {f"cellseg/configs/{p.relative_to(REPO_ROOT / 'configs')}" for p in (REPO_ROOT / "configs").rglob("*.yaml")}
    assert expected and shipped == expected


def test_console_scripts_train_and_infer_from_a_folder_outside_the_checkout(installed):
    cwd, env, scripts = installed["cwd"], installed["env"], installed["bin"]
    where = run([sys.executable, "-c", "import cellseg; print(cellseg.__file__)"], cwd, env).stdout
    assert str(REPO_ROOT) not in where  # the installed copy, not the checkout
    assert "ckpt_path" in run([str(scripts / "cellseg-infer"), "--help"], cwd, env).stdout
    run([str(scripts / "cellseg-train"), "debug=smoke", "test=false", "trainer.max_steps=2", "hydra.run.dir=run",
         f"data.root={REPO_ROOT / 'data' / 'sample'}"], cwd, env)
    images = REPO_ROOT / "data" / "sample" / "MoNuSegSample" / "test" / "images"
    run([str(scripts / "cellseg-infer"), f"ckpt_path={cwd / 'run' / 'checkpoints' / 'last.ckpt'}",
         f"input_dir={images}", "infer.outputs=[png]", "hydra.run.dir=predictions"], cwd, env)
    assert len(list((cwd / "predictions" / "instances").glob("*.png"))) == len(list(images.glob("*.png")))
