"""Messages carrying ClamAV's harmless test samples, for the pipeline and end-to-end tests.

Built at run time rather than stored, so the repository holds no file that a
virus scanner on a developer's machine would quarantine.
"""

from __future__ import annotations

import io
import uuid
import zipfile
from collections.abc import Sequence
from email.message import EmailMessage

from support.lab_clamd import EICAR, TESTFILES

SAMPLES: list[str] = sorted(p.name for p in TESTFILES.iterdir()) if TESTFILES.is_dir() else []

# What clamd with the lab's test database calls each sample when it arrives attached to
# a message: every sample wraps clam.exe, except the one nested past clamd's recursion limit
# (reported only because the lab clamd has AlertExceedsMax yes).
DEFAULT_SIGNATURE = "ClamAV-Test-File.UNOFFICIAL"
SPECIAL_SIGNATURES = {"clam_cache_emax.tgz": "Heuristics.Limits.Exceeded.MaxRecursion"}
EICAR_SIGNATURE = "Eicar-Test-Signature.UNOFFICIAL"


def expected_signature(sample: str) -> str:
    return SPECIAL_SIGNATURES.get(sample, DEFAULT_SIGNATURE)


def mail(
    subject: str = "Bao cao",
    attachments: Sequence[tuple[str, bytes]] = (),
    mail_from: str = "partner@example.com",
    to: str = "user@bacninh.gov.vn",
) -> bytes:
    message = EmailMessage()
    message["From"] = mail_from
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = f"<{uuid.uuid4().hex}@example.com>"
    message.set_content("Kinh gui anh chi,\n\nXin xem tep dinh kem.\n")
    for name, data in attachments:
        message.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    return message.as_bytes()


def sample_mail(sample: str, subject: str = "") -> bytes:
    return mail(subject or f"mau {sample}", [(sample, (TESTFILES / sample).read_bytes())])


def eicar_zip_in_eml(subject: str = "Fwd: tai lieu") -> bytes:
    """EICAR inside a zip, attached to a message that is itself attached as a .eml file."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        zipped.writestr("readme.com", EICAR)
    inner = EmailMessage()
    inner["From"] = "someone@example.net"
    inner["To"] = "partner@example.com"
    inner["Subject"] = "tai lieu"
    inner.set_content("Tep nen dinh kem.\n")
    inner.add_attachment(archive.getvalue(), maintype="application", subtype="zip", filename="tailieu.zip")
    outer = EmailMessage()
    outer["From"] = "partner@example.com"
    outer["To"] = "user@bacninh.gov.vn"
    outer["Subject"] = subject
    outer["Message-ID"] = f"<{uuid.uuid4().hex}@example.com>"
    outer.set_content("Chuyen tiep thu ben duoi.\n")
    outer.add_attachment(inner, filename="thu-goc.eml")
    return outer.as_bytes()
