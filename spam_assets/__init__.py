"""Dagster code location for the spam platform: batches in, champion decision out."""
