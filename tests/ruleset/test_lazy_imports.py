"""Heavy modules a configuration may never use are not loaded at start (issue 22: start-up RSS).

In a fresh interpreter, as `govmilter run` starts (the runtime with the shipped rules and the
default configuration): redis (~23 MB of RSS alone) is loaded only when a Redis URL is
configured, the fallback regex engine only when a pattern needs it (no shipped rule does),
cryptography (~9 MB, OpenSSL's bindings) only with a [dkim] signing key.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from support.harness import RULES

PROBE = """
import sys
from govmilter.config import load_config
from govmilter.lazy import loaded
from govmilter.runtime import Runtime
from govmilter import adapter, httpd
config = load_config(None, ['rules.dir="{rules}"', 'rules.last_good_dir=""', 'metrics.listen=""',
                            'milter.spool_dir="/tmp"'] + {extra})
Runtime(config, skip=[])
{after}
print(" ".join(name for name in ("redis", "regex", "cryptography") if loaded(name)))
"""


def loaded_after_start(extra: list[str], after: str = "") -> set[str]:
    code = PROBE.format(rules=RULES, extra=extra, after=after)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(result.stdout.split())


def test_redis_the_fallback_engine_and_cryptography_are_not_loaded_at_start() -> None:
    assert loaded_after_start([]) == set()


def test_the_fallback_engine_loads_when_a_pattern_needs_it() -> None:
    after = (
        "from govmilter.ruleset.patterns import compile_pattern\n"
        "assert compile_pattern('a(?!b)', ignore_case=False).search('ac') == 'a'\n"
    )
    assert loaded_after_start([], after) == {"regex"}


def test_redis_loads_when_it_is_used() -> None:
    after = "from govmilter.clients import redis as client\nclient.redis.Redis\n"
    assert "redis" in loaded_after_start([], after)  # (redis brings cryptography with it, for OCSP)


def test_cryptography_loads_with_a_signing_key(tmp_path: Path) -> None:
    from govmilter.checks.auth.signing import keygen

    keygen("bacninh.gov.vn", "s1", "rsa", str(tmp_path / "k.pem"))
    keys = [f'dkim.keys=[{{domain="bacninh.gov.vn", selector="s1", key_file="{tmp_path / "k.pem"}"}}]']
    assert "cryptography" in loaded_after_start(keys)
