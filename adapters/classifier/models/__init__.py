"""Packaged classifier models (data only)."""
