"""crmbench: benchmark harness and capability test suite for CRM platforms."""

from __future__ import annotations

from reference_impl import __version__

__all__ = ["__version__"]
