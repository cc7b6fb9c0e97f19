"""Shared fixtures for the de-identification tests: a site key and a site profile with recorder rules."""

from __future__ import annotations

from pathlib import Path

import pytest
from deid_fixtures import write_key

from site_node.deid.keys import load_key


@pytest.fixture(scope="session")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("key") / "site.key"
    write_key(path)
    return path


@pytest.fixture(scope="session")
def key(key_file: Path) -> bytes:
    return load_key(key_file)


SITE_PROFILE = """
extends: basic
recorders:
  - name: test-or-recorder
    match: {model: "ORREC-5000", width: 160, height: 120}
    burned_in: true
    regions: [[0.0, 0.0, 0.5, 0.25]]
  - name: ge-ct-with-annotations
    match: {manufacturer: "GE MEDICAL.*", model: "RHAPSODE"}
    burned_in: true
    regions: [[0.0, 0.0, 0.25, 0.125]]
  - name: recorder-without-mask
    match: {model: "BADREC-1"}
    burned_in: true
"""


@pytest.fixture(scope="session")
def site_profile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("profile") / "site-profile.yaml"
    path.write_text(SITE_PROFILE, encoding="utf-8")
    return path
