"""Fixtures every test may use; tests/ and lab/ are on the path through pyproject's pytest `pythonpath`."""

from support.clamd_fixture import clamd, clamd_factory  # noqa: F401 - fixtures: a private real clamd
from support.dns_fixture import lab_dns, silent_dns  # noqa: F401 - fixtures: a private real dnsmasq, a silent resolver
