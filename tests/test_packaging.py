"""What a non-editable install gets: the wheel carries the workspace template and the license, `init`
from that install fills a workspace, and every third-party module the code imports is declared."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_FILES = [
    "SOUL.md",
    "RULES.md",
    "AGENTS.md",
    "USER.md",
    "CODE.md",
    "HEARTBEAT.md",
    "memory/MEMORY.md",
    "skills/README.md",
    "knowledge/README.md",
    "tools/README.md",
]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("dist")
    # A clean copy: setuptools builds in the source tree, and a stale build/ there could leak into the wheel.
    source = tmp_path_factory.mktemp("src") / "operator-use"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "build", "*.egg-info", "__pycache__", "artifacts", ".pytest_cache"
        ),
    )
    # Offline and quick: the test venv's setuptools instead of an isolated build environment.
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(out),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (built,) = out.glob("operator_use-*.whl")
    return built, proc.stdout + proc.stderr


def test_the_wheel_carries_the_template_and_the_license(wheel: tuple[Path, str]) -> None:
    built, log = wheel
    names = set(zipfile.ZipFile(built).namelist())
    for rel in TEMPLATE_FILES:
        assert f"operator_use/workspace_template/{rel}" in names, rel
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    # The web page: every file of static/ (scripts, styles, the favicon, vendored libraries with their licenses).
    static = ROOT / "operator_use" / "channels" / "web" / "static"
    for path in static.iterdir():
        assert f"operator_use/channels/web/static/{path.name}" in names, path.name
    assert {"render.js", "render.css", "highlight.min.js", "highlight.LICENSE.txt", "favicon.svg"} <= {
        p.name for p in static.iterdir()
    }
    metadata = zipfile.ZipFile(built).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert re.search(r"^License-Expression: MIT$", metadata, re.M)
    # The table form of `license` made setuptools print a deprecation warning during every install.
    assert "deprecat" not in log.lower(), log


def test_init_from_an_installed_wheel_fills_the_workspace(wheel: tuple[Path, str], tmp_path: Path) -> None:
    built, _ = wheel
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    py = env_dir / "bin" / "python"
    purelib = Path(
        subprocess.check_output(
            [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    # The dependencies come from the test venv (no network): its site-packages is appended to sys.path
    # after the fresh venv's own, so `operator_use` itself resolves to the installed wheel, not the checkout.
    (purelib / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", str(built)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr

    home = tmp_path / "home"
    env = {**os.environ, "OPERATOR_HOME": str(home)}
    env.pop("PYTHONPATH", None)
    where = subprocess.run(
        [py, "-c", "import operator_use; print(operator_use.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert where.stdout.startswith(str(purelib)), where.stdout + where.stderr
    init = subprocess.run(
        [env_dir / "bin" / "operator-use", "init"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert init.returncode == 0, init.stdout + init.stderr
    assert f"{len(TEMPLATE_FILES)} file(s) added" in init.stdout, init.stdout
    for rel in TEMPLATE_FILES:
        assert (home / "workspace" / rel).stat().st_size > 0, rel


def _imported_modules() -> set[str]:
    """Top-level names of every module `operator_use` imports, eagerly or lazily (absolute imports)."""
    names: set[str] = set()
    for path in (ROOT / "operator_use").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"operator_use", "__future__"}


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        specs += extra
    return {re.split(r"[\[<>=!~ ;]", s, maxsplit=1)[0].lower().replace("_", "-") for s in specs}


def test_every_imported_distribution_is_declared() -> None:
    by_module = importlib.metadata.packages_distributions()
    declared = _declared()
    missing = {}
    for module in sorted(_imported_modules()):
        dists = {d.lower().replace("_", "-") for d in by_module.get(module, [])}
        assert dists, f"{module} is imported but no installed distribution provides it"
        if not dists & declared:
            missing[module] = sorted(dists)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_the_html_cleaner_that_the_extractor_needs_is_declared() -> None:
    # lxml 6 split lxml.html.clean into lxml_html_clean; trafilatura's extractor imports it through jusText.
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(re.match(r"lxml\[html[_-]clean\]", d) or d.startswith("lxml_html_clean") for d in declared), declared
    page = "<html><body><article><p>" + "Readable words. " * 20 + "</p></article></body></html>"
    code = f"import lxml.html.clean, trafilatura; print(trafilatura.extract({page!r}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "Readable words." in out.stdout, out.stderr
