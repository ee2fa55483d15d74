"""The adversarial corpus of issue 14, generated at test time (see generate.py)."""
