"""Fixtures of the Batch API tests: the OpenAPI validator of the kit's schema tests."""

from __future__ import annotations

from ..testing.test_schemas import spec, validate

__all__ = ["spec", "validate"]
