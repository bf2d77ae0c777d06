"""Canonical records, dataset directories, converters from real release files, and synthetic data."""
