"""Fixture generation: deterministic Parquet profiles of the reference CRM data."""
