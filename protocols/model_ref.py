"""The model reference: sha256 of a manifest of every file in a model directory, cached by size and mtime."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from protocols.errors import ModelError

_CACHE_NAME = ".surgfed-manifest-cache.json"
_CHUNK = 4 * 1024 * 1024


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def model_files(model_dir: Path) -> list[Path]:
    """Every regular file of the model (weights, tokenizer, processor, chat template), sorted."""
    if not model_dir.is_dir():
        raise ModelError(f"model directory {model_dir} does not exist or is not a directory")
    files = sorted(
        p for p in model_dir.rglob("*") if p.is_file() and p.name != _CACHE_NAME and not p.name.startswith(".")
    )
    if not files:
        raise ModelError(f"model directory {model_dir} is empty")
    return files


def manifest(model_dir: Path, cache_dir: Path | None = None) -> dict[str, str]:
    """Relative path -> sha256 for every model file; unchanged files (same size and mtime) reuse the cache."""
    cache_path = (cache_dir or model_dir) / _CACHE_NAME
    try:
        cache: dict[str, dict[str, object]] = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    result: dict[str, str] = {}
    fresh: dict[str, dict[str, object]] = {}
    for path in model_files(model_dir):
        rel = path.relative_to(model_dir).as_posix()
        st = path.stat()
        entry = cache.get(rel)
        if entry and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns:
            sha = str(entry["sha256"])
        else:
            sha = _file_sha256(path)
        result[rel] = sha
        fresh[rel] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha}
    try:
        tmp = cache_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(fresh, indent=1, sort_keys=True))
        os.replace(tmp, cache_path)
    except OSError:
        pass  # a read-only model directory still hashes; it just is not cached
    return result


def manifest_hash(model_dir: Path, cache_dir: Path | None = None) -> str:
    """sha256 over the sorted `path  sha256` lines of the manifest."""
    lines = "".join(f"{rel}  {sha}\n" for rel, sha in sorted(manifest(model_dir, cache_dir).items()))
    return hashlib.sha256(lines.encode()).hexdigest()
