"""Stage 1: which files of a folder to consider.

Walks the folder without following folder links (no loops, no second copies), leaves out hidden
files and folders, applies the include/exclude globs, and keeps only extensions a loader is
registered for. File links are followed as `ingest.follow_links` says: by default only when the
target is inside the folder, so a link dropped into a shared folder cannot pull `/etc/passwd` or a
secret from elsewhere into the answers. Problems found here (broken links, links outside, files over
the size limit, devices) become `Skip`s, not exceptions. A name that is not valid UTF-8 gets its
lossless `\\xNN` form as its source (see `rag_bot.names`).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

from rag_bot.config import IngestConfig
from rag_bot.names import shown, storable_name


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
    root = root.resolve()
    limit = int(config.max_file_mb * 1024 * 1024)
    for folder, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in dirnames:
            path = Path(folder) / name
            source = _source(path, root)
            if path.is_symlink() and not matches(source, config.exclude):  # not entered: say so, it may hold documents
                found.skipped.append(Skip(source, f"folder link not followed (points to "
                                          f"{shown(os.readlink(path))})", error=False))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(folder) / name
            source = _source(path, root)
            if not matches(source, config.include) or matches(source, config.exclude):
                continue
            if path.suffix.lower() not in extensions:
                found.ignored += 1
                continue
            item: Candidate | Skip | None = _follow(path, source, root, config.follow_links)
            if item is None:
                item = _inspect(path, source, limit, config.max_file_mb)
            if isinstance(item, Skip):
                found.skipped.append(item)
            else:
                found.files.append(item)
    return found


def _source(path: Path, root: Path) -> str:
    return storable_name(path.relative_to(root).as_posix())


def _follow(path: Path, source: str, root: Path, policy: str) -> Skip | None:
    """A policy skip for a file link the `ingest.follow_links` policy does not follow, else None."""
    if policy == "all" or not path.is_symlink():
        return None
    target = os.readlink(path)
    if policy == "none":
        return Skip(source, f"symbolic link not followed (ingest.follow_links: none; points to {shown(target)})",
                    error=False)
    resolved = path.resolve()
    if resolved != root and root in resolved.parents:
        return None
    return Skip(source, f"link to {shown(str(resolved))}, outside the folder: not followed "
                f"(set ingest.follow_links: all to follow links anywhere)", error=False)


def _inspect(path: Path, source: str, limit: int, limit_mb: float) -> Candidate | Skip:
    try:
        info = path.stat()  # follows file links
    except FileNotFoundError:
        if path.is_symlink():
            return Skip(source, f"broken symbolic link (points to {shown(os.readlink(path))})")
        return Skip(source, "file disappeared while scanning")
    except OSError as exc:
        return Skip(source, f"cannot read file information: {exc.strerror or exc}")
    if not stat.S_ISREG(info.st_mode):
        return Skip(source, "not a regular file")
    if info.st_size > limit:
        size_mb = info.st_size / 1024 / 1024
        return Skip(source, f"{size_mb:.1f} MB is over ingest.max_file_mb ({limit_mb:g} MB)", error=False)
    return Candidate(path, source, info.st_size, info.st_mtime_ns)
