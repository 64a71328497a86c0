"""Dagster definitions, split by concern: assets by stage, resources, automation."""
