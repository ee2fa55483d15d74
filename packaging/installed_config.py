"""Writes the configuration the Debian package installs (/etc/govmilter/govmilter.toml) to stdout.

It is config.example.toml with the values a fresh gateway must start from, so the two never
drift apart: no trusted relay until the operator lists exactly the mailbox servers, the rule
directory at its installed path, and monitor mode on for the first days (a burn-in). Only keys
that config.example.toml has are touched; a key that is missing there is an error here (the build
stops) rather than a silently different default.

    python3 packaging/installed_config.py config.example.toml > govmilter.toml
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

HEADER = """\
# govmilter configuration, installed by the govmilter Debian package (a conffile: dpkg keeps
# your edits on upgrade and offers the packaged version as govmilter.toml.dpkg-dist).
# Every key is described in /usr/share/doc/govmilter/config.example.toml; the install, upgrade
# and removal steps are in /usr/share/doc/govmilter/install-package.md.
# A change here takes effect at `systemctl restart govmilter`; the rule files in
# /etc/govmilter/rules are reloaded live.
#
"""

# (table, key, replacement line): each must match exactly one line of the example
EDITS: tuple[tuple[str, str, str], ...] = (
    (
        "network",
        "trusted_relays",
        "# Empty on a fresh install, nothing trusted: list exactly the mailbox servers, as above.\n"
        "trusted_relays = []",
    ),
    ("rules", "dir", 'dir = "/etc/govmilter/rules"      # the officers\' rule files (*.toml), reloaded live'),
    (
        "milter",
        "monitor",
        "# A fresh gateway starts in monitor mode: nothing is refused on policy, the would-be refusals\n"
        "# are logged (would=) and tagged X-Govmilter-Monitor. Read them for a week or two, then set\n"
        '# false and `systemctl restart govmilter` (install-package.md, "Leaving monitor mode").\n'
        "monitor = true",
    ),
)


def installed(example: str) -> str:
    lines = example.splitlines()
    for table, key, replacement in EDITS:
        current = ""
        hits = []
        for index, line in enumerate(lines):
            header = re.match(r"\s*\[([A-Za-z0-9_.-]+)\]\s*$", line)
            if header:
                current = header.group(1)
            elif current == table and re.match(rf"{re.escape(key)}\s*=", line):
                hits.append(index)
        if len(hits) != 1:
            raise SystemExit(f"installed_config: [{table}] {key} found {len(hits)} times in the example")
        lines[hits[0]] = replacement
    # the example's own opening comment block gives way to the package's
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    text = HEADER + "\n" + "\n".join(lines).lstrip("\n") + "\n"
    data = tomllib.loads(text)
    assert data["network"]["trusted_relays"] == [], "trusted_relays must start empty"
    assert data["rules"]["dir"] == "/etc/govmilter/rules"
    assert data["milter"]["monitor"] is True, "the installed gateway starts in monitor mode"
    return text


def main() -> int:
    sys.stdout.write(installed(Path(sys.argv[1]).read_text(encoding="utf-8")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
