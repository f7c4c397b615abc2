"""The package as users install it: a wheel built from pyproject.toml carries the prompts and the
bundled lists, and works from outside the checkout."""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT

BUNDLED = [f"rag_bot/prompts/{name}" for name in (  # from the top-level prompts/ folder
    "system.txt", "answer.txt", "condense.txt", "decline.txt", "not_covered.txt", "documents_say.txt",
    "nothing_found.txt", "no_answer.txt", "make_pairs.txt", "scope_negatives.txt")] + [
    "rag_bot/eval/data/docs_questions.txt", "rag_bot/eval/data/injections.txt"]


@pytest.mark.slow
def test_the_wheel_holds_the_prompts_and_runs_outside_the_checkout(tmp_path):
    source = tmp_path / "source"  # a copy: building in the checkout would leave build/ behind in it
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in ("rag_bot", "ingest", "prompts"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--quiet", "-w", str(tmp_path)],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("rag_bot-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert set(BUNDLED) <= names
    assert not any(name.startswith(("tests/", "bench/", "examples/")) for name in names)

    # A throwaway venv that sees the project's installed dependencies (a path in a .pth file, so the
    # checkout's editable install is not active there), with the wheel installed into it.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "project_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                                "--quiet", str(wheel)], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "RAG_BOT_CONFIG")}
    helped = subprocess.run([str(venv / "bin" / "rag-bot"), "--help"], cwd=outside, env=env,
                            capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0, helped.stderr
    assert "ingest" in helped.stdout and "chat" in helped.stdout
    code = ("import rag_bot, rag_bot.prompting as p, rag_bot.filter as f\n"
            "prompts = p.load_prompts()\n"
            "print(rag_bot.__file__); print(p.BUNDLED_DIR); print(len(f.bundled_negatives()))\n"
            "print(prompts.format('answer', context='C', question='Q'))\n")
    loaded = subprocess.run([str(python), "-c", code], cwd=outside, env=env, capture_output=True, text=True, timeout=120)
    assert loaded.returncode == 0, loaded.stderr
    module, bundled, negatives, answer = loaded.stdout.split("\n", 3)
    assert module.startswith(site) and bundled.startswith(site)  # the wheel's copy, not the checkout's
    assert int(negatives) > 100 and "<question>Q</question>" in answer


def test_pyproject_names_every_package_folder():
    """The package list is written out (the prompts/ folder installs as rag_bot.prompts), so a new
    package folder must be added to it: this fails until it is."""
    import tomllib

    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    mapped = {folder: package for package, folder in setuptools["package-dir"].items()}
    found = set()
    for init in [*ROOT.glob("rag_bot/**/__init__.py"), *ROOT.glob("ingest/**/__init__.py"), ROOT / "prompts" / "__init__.py"]:
        folder = init.parent.relative_to(ROOT).as_posix()
        found.add(mapped.get(folder, folder.replace("/", ".")))
    assert found == set(setuptools["packages"])
    assert not (ROOT / "rag_bot" / "prompts").exists()  # the templates' one home is the top-level prompts/
