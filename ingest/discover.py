"""Stage 1: which files of a folder to consider.

Walks the folder without following folder links (no loops), leaves out hidden files and folders,
applies the include/exclude globs, and keeps only extensions a loader is registered for. Problems
found here (broken links, files over the size limit, devices) become `Skip`s, not exceptions.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

from rag_bot.config import IngestConfig


@dataclass(frozen=True)
class Candidate:
    """A file to ingest: its path, its path relative to the ingested folder, and its stat."""

    path: Path
    source: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Skip:
    """A file left out, and why. `error` is False for deliberate policy skips (empty, too large)."""

    source: str
    reason: str
    error: bool = True


@dataclass
class Discovery:
    files: list[Candidate] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    ignored: int = 0  # files whose type no loader reads


def matches(source: str, patterns: list[str]) -> bool:
    """Glob match against a folder-relative POSIX path; `*` crosses folders, `**/x` also matches `x`."""
    for pattern in patterns:
        if fnmatchcase(source, pattern):
            return True
        if pattern.startswith("**/") and fnmatchcase(source, pattern[3:]):
            return True
    return False


def discover(root: Path, config: IngestConfig, extensions: set[str]) -> Discovery:
    """List the files under `root` to ingest, in a stable order."""
    found = Discovery()
    limit = int(config.max_file_mb * 1024 * 1024)
    for folder, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(folder) / name
            source = path.relative_to(root).as_posix()
            if not matches(source, config.include) or matches(source, config.exclude):
                continue
            if path.suffix.lower() not in extensions:
                found.ignored += 1
                continue
            item = _inspect(path, source, limit, config.max_file_mb)
            if isinstance(item, Skip):
                found.skipped.append(item)
            else:
                found.files.append(item)
    return found


def _inspect(path: Path, source: str, limit: int, limit_mb: float) -> Candidate | Skip:
    try:
        info = path.stat()  # follows file links
    except FileNotFoundError:
        if path.is_symlink():
            return Skip(source, f"broken symbolic link (points to {os.readlink(path)})")
        return Skip(source, "file disappeared while scanning")
    except OSError as exc:
        return Skip(source, f"cannot read file information: {exc.strerror or exc}")
    if not stat.S_ISREG(info.st_mode):
        return Skip(source, "not a regular file")
    if info.st_size > limit:
        size_mb = info.st_size / 1024 / 1024
        return Skip(source, f"{size_mb:.1f} MB is over ingest.max_file_mb ({limit_mb:g} MB)", error=False)
    return Candidate(path, source, info.st_size, info.st_mtime_ns)
