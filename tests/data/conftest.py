"""Data tests: index sidecars go to a per-test folder."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    # Index sidecars go to a per-test folder, never to ~/.cache/trd.
    monkeypatch.setenv("TRD_CACHE", str(tmp_path / "trd-cache"))
