"""The checks: each gets plain facts and returns Verdicts (see pipeline.py)."""
