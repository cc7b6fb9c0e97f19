"""Model reference: the manifest hash covers every file and is cached by size and mtime."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from protocols.errors import ModelError
from protocols.model_ref import manifest, manifest_hash


def test_hash_changes_with_any_file_and_uses_cache(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "w.bin").write_bytes(b"\0" * 100)
    first = manifest_hash(tmp_path)
    assert set(manifest(tmp_path)) == {"config.json", "sub/w.bin"}
    assert manifest_hash(tmp_path) == first
    (tmp_path / "chat_template.jinja").write_text("x")
    second = manifest_hash(tmp_path)
    assert second != first
    # Same size, same mtime: the cache answers (documented trade-off); a new mtime forces a re-hash.
    w = tmp_path / "sub" / "w.bin"
    st = w.stat()
    w.write_bytes(b"\1" * 100)
    os.utime(w, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert manifest_hash(tmp_path) == second
    os.utime(w, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert manifest_hash(tmp_path) != second


def test_missing_or_empty_dir(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        manifest_hash(tmp_path / "nope")
    with pytest.raises(ModelError, match="empty"):
        manifest_hash(tmp_path)
