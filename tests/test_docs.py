"""The documentation: a short README whose links hold, a MkDocs site that builds without warnings, and a
configuration page that says what the code does."""

from __future__ import annotations

import re
import subprocess
import sys

from rag_bot.config import Config
from rag_bot.config_reference import reference
from tests.conftest import ROOT


def test_the_readme_is_a_short_page_whose_links_hold():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250
    links = re.findall(r"\]\(([^)#]+)\)", readme)
    assert "docs/configuration.md" in links
    assert [link for link in links if "://" not in link and not (ROOT / link).exists()] == []


def test_the_configuration_page_is_what_the_code_makes():
    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert page == reference(), "run: .venv/bin/python -m rag_bot.config_reference > docs/configuration.md"


def test_the_configuration_page_has_every_key_with_its_default_and_meaning():
    page = reference()

    def keys(model, prefix=""):
        for name, field in model.model_fields.items():
            section = field.annotation
            if isinstance(section, type) and hasattr(section, "model_fields"):
                yield from keys(section, f"{prefix}{name}.")
            else:
                yield prefix + name, field

    rows = {line.split("|")[1].strip(): line for line in page.splitlines() if line.startswith("| `")}
    for key, field in keys(Config):
        assert f"`{key}`" in rows, key
        assert field.description and " ".join(field.description.split())[:30] in rows[f"`{key}`"].replace("&lt;", "<").replace("&gt;", ">").replace("\\|", "|"), key
    assert "| `chat.context_tokens` | `400` |" in page and "| `store.path` | none |" in page
    assert "&lt;data_dir&gt;" in page and "<data_dir>" not in page  # not taken for an HTML tag


def test_the_site_builds_without_warnings(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "site" / "configuration" / "index.html").exists()
    assert "chat.answer_mode" in (tmp_path / "site" / "configuration" / "index.html").read_text(encoding="utf-8")
