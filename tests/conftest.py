"""Shared fixtures: sandbox tenants in temporary folders, reports kept per test."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def reports(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "reports"
    monkeypatch.setenv("RUNBOOK_REPORTS_DIR", str(folder))
    return folder


@pytest.fixture
def make_tenant(tmp_path):
    """Write a fresh sandbox tenant of a scenario; returns its state file."""
    from runbook.sandbox import scenarios, state

    def make(name: str, **options) -> Path:
        path = tmp_path / f"{name}.json"
        built = scenarios.build(name, **options)
        state.save(path, built)
        return path

    return make


def pytest_configure(config):
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
