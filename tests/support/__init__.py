"""What the tests share: harnesses, message builders, fixtures, the lab's clamd and DNS.

Importable as `support.<module>` because pyproject's `[tool.pytest.ini_options] pythonpath`
puts tests/ (and lab/) on the path; tests/conftest.py registers the fixtures.
"""
