"""Outbound DKIM signing (RFC 6376): relaxed/relaxed, the header set RFC 6376 5.4.1 recommends.

Mail from trusted relays and authenticated users whose From domain is a local
domain with a key in `[dkim] keys` gets a DKIM-Signature. The check runs last,
so the signature is added only when every other check has accepted the message.
RSA signatures are made by OpenSSL through `cryptography` (dkimpy's own RSA is
pure Python: ~30 times slower), Ed25519 ones (RFC 8463) by dkimpy with PyNaCl.
`keygen` writes a key (mode 0600) and returns the TXT record to publish.
"""

from __future__ import annotations

import base64
import os
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dkim
import nacl.encoding
import nacl.signing
from dkim.canonicalization import CanonicalizationPolicy

from govmilter.checks import CheckHooks
from govmilter.lazy import lazy_module

if TYPE_CHECKING:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa, utils
else:  # ~9 MB of RSS (OpenSSL's bindings): loaded with the first [dkim] key, or never
    hashes = lazy_module("cryptography.hazmat.primitives.hashes")
    serialization = lazy_module("cryptography.hazmat.primitives.serialization")
    ed25519 = lazy_module("cryptography.hazmat.primitives.asymmetric.ed25519")
    padding = lazy_module("cryptography.hazmat.primitives.asymmetric.padding")
    rsa = lazy_module("cryptography.hazmat.primitives.asymmetric.rsa")
    utils = lazy_module("cryptography.hazmat.primitives.asymmetric.utils")
from govmilter.checks.auth import bodyhash
from govmilter.checks.auth import dmarc as dmarc_mod
from govmilter.config import Config, ConfigError, DkimKey
from govmilter.domains import Domains, is_under
from govmilter.metrics import Metrics
from govmilter.model import Action, Stage, Transaction, Verdict

CANONICALIZE = (b"relaxed", b"relaxed")


@dataclass(frozen=True)
class SigningKey:
    domain: str
    selector: str
    algorithm: bytes  # rsa-sha256 | ed25519-sha256
    pem: bytes  # what dkimpy reads: PKCS#1 PEM for RSA, the base64 seed for Ed25519
    rsa_key: rsa.RSAPrivateKey | None  # for OpenSSL signing
    dkimpy_key: Any = None  # RSA: the key as dkimpy parsed it once (its fallback signer's)


def load_key(entry: DkimKey) -> SigningKey:
    """Read one configured key file; ConfigError naming it when it cannot be used."""
    where = f"[dkim] keys: {entry.domain} selector {entry.selector}: {entry.key_file}"
    try:
        data = Path(entry.key_file).read_bytes()
        key = serialization.load_pem_private_key(data, password=None)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read: {exc.strerror}") from exc
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: not an unencrypted PEM private key") from exc
    domain = entry.domain.lower().rstrip(".")
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 1024:
            raise ConfigError(f"{where}: an RSA key of {key.key_size} bits is too small (use 2048)")
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())  # fmt: skip
        return SigningKey(domain, entry.selector, b"rsa-sha256", pem, key, dkim.parse_pem_private_key(pem))
    if isinstance(key, ed25519.Ed25519PrivateKey):
        seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                 serialization.NoEncryption())  # fmt: skip
        return SigningKey(domain, entry.selector, b"ed25519-sha256", base64.b64encode(seed), None)
    raise ConfigError(f"{where}: an RSA or Ed25519 key is needed")


_local = threading.local()
_dkimpy_rsa_sign = dkim.RSASSA_PKCS1_v1_5_sign


def _rsa_sign(hash_obj: Any, private_key: Any) -> bytes:
    """dkimpy's RSASSA-PKCS1-v1_5 step, made by OpenSSL with the key of the signature this thread is making."""
    key: rsa.RSAPrivateKey | None = getattr(_local, "rsa_key", None)
    if key is None or hash_obj.name != "sha256":
        return bytes(_dkimpy_rsa_sign(hash_obj, private_key))
    return key.sign(hash_obj.digest(), padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))


dkim.RSASSA_PKCS1_v1_5_sign = _rsa_sign  # a thread-local key, so concurrent signatures never mix


def sign(message: Iterable[bytes] | bytes, key: SigningKey, *, crlf: bool = False) -> str:
    """The DKIM-Signature value for a raw message (bytes or chunks), unfolded to one line.

    The body is hashed as it streams (bodyhash.py: the octets dkimpy would hash); dkimpy
    gets the header block only and makes the tags and b= as its DKIM.sign does. `crlf`:
    every line already ends in CRLF (bodyhash.split).
    """
    header, body = bodyhash.split([message] if isinstance(message, bytes) else message, crlf=crlf)
    policy = CanonicalizationPolicy.from_c_value(b"/".join(CANONICALIZE))
    digest = bodyhash.digests(body, [(CANONICALIZE[1], key.algorithm, None)])[(CANONICALIZE[1], key.algorithm, None)]
    signer = dkim.DKIM(header + b"\r\n", signature_algorithm=key.algorithm, linesep=b"\r\n")
    private: Any
    if key.algorithm == b"ed25519-sha256":
        private = nacl.signing.SigningKey(key.pem, encoder=nacl.encoding.Base64Encoder)
    else:
        private = key.dkimpy_key
    include = tuple(name.lower() for name in signer.default_sign_headers())
    if b"from" not in include:
        raise dkim.ParameterError("The From header field MUST be signed")
    signer.hasher = dkim.HASH_ALGORITHMS[key.algorithm]
    fields = [  # dkimpy's DKIM.sign, with the streamed bh=
        (b"v", b"1"),
        (b"a", key.algorithm),
        (b"c", policy.to_c_value()),
        (b"d", key.domain.encode()),
        (b"i", b"@" + key.domain.encode()),
        (b"q", b"dns/txt"),
        (b"s", key.selector.encode()),
        (b"t", str(int(time.time())).encode("ascii")),
        (b"h", b" : ".join(include)),
        (b"bh", base64.b64encode(digest)),
        (b"b", b"0" * 60),  # dkimpy's place holder: b= folds onto a line of its own
    ]
    _local.rsa_key = key.rsa_key
    try:
        value = signer.gen_header(fields, include, policy, b"DKIM-Signature", private)
    finally:
        _local.rsa_key = None
    # removing the CRLF of each fold keeps its white space: the same field under relaxed canonicalization
    return bytes(value).decode("ascii").replace("\r\n", "").strip()


class SigningCheck(CheckHooks):
    name = "dkim"
    stages = frozenset({Stage.EOM})

    def __init__(self, keys: Sequence[SigningKey], metrics: Metrics, local_domains: Sequence[str], max_bytes: int):
        self.keys = {k.domain: k for k in keys}
        self.metrics = metrics
        self.local = Domains.from_names(local_domains, ()).local
        self.max_bytes = max_bytes
        for key in keys:
            self.metrics.dkim_signed.labels(domain=key.domain, result="signed")

    def run(self, stage: Stage, tx: Transaction) -> Sequence[Verdict]:
        if not self.keys or not tx.envelope.internal:
            return []
        author = dmarc_mod.from_domain(tx.header("From"))
        if author is None or not any(is_under(author, d) for d in self.local):
            return []
        key = self.keys.get(author)
        if key is None:
            return []
        if tx.raw_size > self.max_bytes:
            self.metrics.dkim_signed.labels(domain=key.domain, result="error").inc()
            return [Verdict(Action.CONTINUE, "dkim", reason=f"not signed: larger than {self.max_bytes} bytes")]
        started = time.perf_counter()
        value = sign(tx.raw_chunks(), key, crlf=tx.crlf)  # streamed: memory does not grow with the message
        tx.scratch["dkim_sign_ms"] = (time.perf_counter() - started) * 1000
        self.metrics.dkim_signed.labels(domain=key.domain, result="signed").inc()
        return [Verdict(Action.CONTINUE, "dkim", headers=(("DKIM-Signature", value),),
                        reason=f"signed d={key.domain} s={key.selector}")]  # fmt: skip


def build(config: Config, metrics: Metrics) -> SigningCheck:
    keys = [load_key(entry) for entry in config.dkim.keys]
    return SigningCheck(keys, metrics, config.domains.local, config.auth.max_message_bytes)


# ---- govmilter dkim keygen ----


def keygen(domain: str, selector: str, kind: str, out: str) -> str:
    """Write a new private key to `out` (mode 0600, never over an existing file); return the TXT record."""
    if kind == "ed25519":
        private: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey = ed25519.Ed25519PrivateKey.generate()
        public = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        record = f"v=DKIM1; k=ed25519; p={base64.b64encode(public).decode()}"
    else:
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = private.public_key().public_bytes(serialization.Encoding.DER,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)  # fmt: skip
        record = f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}"
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())  # fmt: skip
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    os.chmod(out, 0o600)
    name = f"{selector}._domainkey.{domain.rstrip('.')}"
    chunks = [record[i : i + 255] for i in range(0, len(record), 255)]  # one TXT string holds 255 octets
    return f'{name}. IN TXT ( {" ".join(chr(34) + c + chr(34) for c in chunks)} )'


def public_record(key_file: str) -> str:
    """The TXT record of an existing key file (for tests and for re-publishing)."""
    key = serialization.load_pem_private_key(Path(key_file).read_bytes(), password=None)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"
    if isinstance(key, rsa.RSAPrivateKey):
        der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"
    raise ValueError("an RSA or Ed25519 key is needed")

