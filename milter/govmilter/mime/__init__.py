"""The message's structure: one streaming MIME walk and what it reads on the way.

walker.py walks the raw message once (parts, defects, attachment sizes, text)
and extracts parts for the checks that need their bytes; headers.py parses a
part's header fields; decoders.py undoes transfer encodings and finds files
encoded in text (uuencode, yEnc, data: URIs); archives.py reads a zip's central
directory, a zip's local headers and a gzip trailer without decompressing;
textstore.py holds the decoded text in memory bounded by configuration.
"""

from __future__ import annotations

from govmilter.mime.walker import (
    AMBIGUOUS_DEFECTS,
    DEFAULT_LIMITS,
    LIMIT_DEFECTS,
    UNREADABLE_ARCHIVE,
    Extracted,
    Limits,
    Walker,
    extract,
    walk,
)

__all__ = [
    "AMBIGUOUS_DEFECTS",
    "DEFAULT_LIMITS",
    "LIMIT_DEFECTS",
    "UNREADABLE_ARCHIVE",
    "Extracted",
    "Limits",
    "Walker",
    "extract",
    "walk",
]
