"""Remembered clamd answers, so copies of one message are scanned once.

A circular mailed to many mailboxes one copy at a time reaches the gateway as
messages that differ only in their per-copy metadata: trace fields, the date,
the Message-ID, the addressee. The key of a scan is a digest of the message
with those fields left out (rspamd's antivirus module caches by content
digest for the same reason); every other header field and the whole body are
in it. A field longer than a header line may be stays in the key, so that no
payload can hide in a field the key skips.

An answer is reused only from the same engine: each entry holds the clamd
address and the ClamAV version string (signature database number included)
it came from, and is ignored once that address reports another version.
Only definite answers are kept: clean, or the virus found.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from govmilter.expiring import ExpiringMap

# lower-case field names whose values change from one copy of a message to the next
PER_COPY_FIELDS = frozenset(
    {
        "received",
        "return-path",
        "delivered-to",
        "x-original-to",
        "date",
        "message-id",
        "to",
        "cc",
        "dkim-signature",
        "arc-seal",
        "arc-message-signature",
        "arc-authentication-results",
        "authentication-results",
    }
)
MAX_SKIPPED_VALUE = 998  # RFC 5322's line limit: a longer value is always part of the key


def scan_key(headers: Sequence[tuple[str, str]], body: Iterable[bytes]) -> str:
    """Digest of a message as far as the virus scan is concerned."""
    digest = hashlib.sha256()
    for name, value in headers:
        if name.lower() in PER_COPY_FIELDS and len(value) <= MAX_SKIPPED_VALUE:
            continue  # a copy may also carry more or fewer of them (one Received per hop)
        for text in (name.lower(), value):
            data = text.encode("utf-8", "surrogateescape")
            digest.update(b"%d:" % len(data) + data)  # length-prefixed: no value can pose as the next field
    digest.update(b"\0body\0")
    for chunk in body:
        digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class CachedScan:
    signature: str  # "" when clean, else the virus found
    address: str  # the clamd that answered
    version: str  # its VERSION string at the time


class ScanCache:
    def __init__(self, max_entries: int, ttl: float):
        self.ttl = ttl
        self._entries: ExpiringMap[CachedScan] = ExpiringMap(max_entries)

    @property
    def enabled(self) -> bool:
        return self.ttl > 0 and self._entries.max_entries > 0

    def get(self, key: str, current_version: Callable[[str], str]) -> CachedScan | None:
        """The remembered answer, if the clamd that gave it still runs the same version."""
        entry = self._entries.get(key)
        if entry is None or not entry.version or current_version(entry.address) != entry.version:
            return None
        return entry

    def put(self, key: str, entry: CachedScan) -> None:
        if entry.version:  # without a version, a later database change could not be noticed
            self._entries.put(key, entry, self.ttl)
