"""Fixture generation: deterministic Parquet profiles of the reference CRM data."""

from pathlib import Path

# Where commands look for (and generate) the default fixture profile.
DEFAULT_FIXTURES = Path("fixtures/data/default")
