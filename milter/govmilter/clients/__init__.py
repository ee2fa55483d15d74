"""Clients of external services, each behind a small Protocol."""
