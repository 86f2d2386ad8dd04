"""Drift monitoring and alerts (no Dagster imports)."""
