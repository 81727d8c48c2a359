"""Fixtures for the tracking tests: the standard fake study's store is the report tests' own."""

from __future__ import annotations

from tests.report.conftest import study_store  # noqa: F401  (a fixture: pytest finds it by name)
