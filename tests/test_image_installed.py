"""`failberry build` from an installed package, not a checkout: a wheel of this checkout goes
into a fresh venv (no network: --no-index, --no-deps), and the build's steps that read the
recipe, the overlay, the package and the README find them in that installed package and put
the same files into a root file system as a build from the checkout does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from failberry.config_render import dump_toml
from failberry.image import rootfs
from failberry.image.customise import customise_rootfs
from failberry.image.sources import INSTALLED
from test_image_customise import make_config, make_rootfs

# Run with the venv's interpreter in isolated mode (-I): neither the checkout nor the
# working directory is on its path, only what was installed.
STEPS = """
import json, sys
from pathlib import Path
import failberry
from failberry import config
from failberry.image import rootfs
from failberry.image.customise import customise_rootfs
from failberry.image.sources import INSTALLED
text, out, root = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
cfg = config.parse(text, base_dir=out)
spec = rootfs.base_spec(cfg, INSTALLED.recipe)
customise_rootfs(cfg, root, out_dir=out)
print(json.dumps({"module": failberry.__file__, "spec": spec.digest()}))
"""


def _tree(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every path under `root` with its mode and (for files) content."""
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        data = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
        out[path.relative_to(root).as_posix()] = (st.st_mode, data)
    return out


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with this checkout installed from a wheel (non-editable)."""
    tmp = tmp_path_factory.mktemp("installed")
    # A copy of the sources, so building the wheel leaves nothing in the checkout.
    tree = tmp / "tree"
    shutil.copytree(ROOT / "src", tree / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, tree / name)
    # No network: the wheel is built with the venv's own setuptools and Debian's wheel
    # (python3-pip in scripts/apt/runtime.txt pulls it in), then installed without deps.
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", tmp / "dist", tree],
                   check=True, env=env, timeout=300)
    (wheel,) = (tmp / "dist").glob("failberry-*.whl")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", tmp / "venv"], check=True,
                   timeout=120)
    subprocess.run([sys.executable, "-m", "pip", "--python", tmp / "venv/bin/python", "install",
                    "-q", "--no-deps", wheel], check=True, env=env, timeout=300)
    shutil.rmtree(tree)
    return tmp / "venv"


def test_an_installed_package_builds_the_same_root_as_the_checkout(venv: Path,
                                                                    tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    installed_root = make_rootfs(tmp_path / "installed")
    proc = subprocess.run([venv / "bin/python", "-I", "-c", STEPS,
                           dump_toml(cfg, reveal_secrets=True), out, installed_root],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    # It ran from the venv's site-packages, not from this checkout.
    assert Path(found["module"]).is_relative_to(venv)
    assert found["spec"] == rootfs.base_spec(cfg, INSTALLED.recipe).digest()

    checkout_root = make_rootfs(tmp_path / "checkout")
    customise_rootfs(cfg, checkout_root, out_dir=out)
    installed, checkout = _tree(installed_root), _tree(checkout_root)
    # make_rootfs writes a random seed, which customise removes; all else must match.
    assert installed.keys() == checkout.keys()
    assert [p for p in installed if installed[p] != checkout[p]] == []
    pkg = "usr/lib/python3/dist-packages/failberry"
    assert f"{pkg}/cli.py" in installed and f"{pkg}/data/failberry-hostguard.service" in installed
    assert "etc/sysctl.d/90-failberry.conf" in installed  # the overlay
    assert installed["usr/share/doc/failberry/README.md"][1] == (ROOT / "README.md").read_bytes()
