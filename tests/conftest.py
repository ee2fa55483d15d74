import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lab"))  # the loopback stack's parts

from clamd_fixture import clamd, clamd_factory  # noqa: F401 - fixtures: a private real clamd
from dns_fixture import lab_dns, silent_dns  # noqa: F401 - fixtures: a private real dnsmasq, a silent resolver
