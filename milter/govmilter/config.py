"""The configuration: one frozen dataclass per TOML table, validated strictly.

An unknown key, a wrong type or a bad value raises ConfigError naming the file,
the table and the key, so an operator's typo never passes silently.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
import string
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from govmilter import regulations as reg


class ConfigError(ValueError):
    """A configuration problem (a bad value), with the file, table and key it concerns."""


# A clamd address as configured ([antivirus] clamd): validated here, connected to by clients/clamd.py.
@dataclass(frozen=True)
class ClamdAddress:
    family: int
    target: str | tuple[str, int]
    text: str  # as configured: unix:/path or tcp:host:port

    @classmethod
    def parse(cls, text: str) -> ClamdAddress:
        if text.startswith("unix:") and len(text) > 5:
            return cls(socket.AF_UNIX, text[5:], text)
        if text.startswith("tcp:"):
            host, sep, port = text[4:].rpartition(":")
            host = host.strip("[]")
            if sep and host and port.isdigit() and 0 < int(port) < 65536:
                family = socket.AF_INET6 if ":" in host else socket.AF_INET
                return cls(family, (host, int(port)), text)
        raise ValueError(f"clamd address {text!r}: expected unix:PATH or tcp:HOST:PORT")

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class MilterConfig:
    # unix:/path or inet:port@host; the unix form is Postfix's chroot-safe place
    socket: str = "unix:/var/spool/postfix/govmilter/govmilter.sock"
    socket_mode: str = "0660"  # unix socket permissions: Postfix's group only
    socket_group: str = "postfix"  # group given the unix socket ("" leaves it alone)
    name: str = "govmilter"
    timeout: int = 600  # seconds libmilter waits for the MTA
    spool_dir: str = "/var/spool/govmilter"
    spool_threshold: int = 262144  # bytes of a message kept in memory before it goes to disk
    # header fields kept for checks to look up; every field still reaches the spool, the MIME walk
    # and clamd, and a message past either bound is a header flood (the size check's policy)
    max_header_fields: int = 2000
    max_header_bytes: int = 4194304  # 4 MiB
    # at SIGTERM/SIGINT: seconds open transactions may take to finish; then each gets 451 4.3.2
    shutdown_grace: float = 30.0
    # every check in monitor mode (a burn-in): would-be refusals are logged, counted and tagged
    # X-Govmilter-Monitor, nothing is refused or deferred on policy; our own errors still answer 451
    monitor: bool = False
    # a line added to every refusal after its reference (e.g. the helpdesk's phone and address); "" adds none
    reply_contact: str = ""


@dataclass(frozen=True)
class DomainsConfig:
    local: tuple[str, ...] = ("bacninh.gov.vn",)
    # each name and everything under it is a government domain
    government: tuple[str, ...] = ("gov.vn",)


@dataclass(frozen=True)
class NetworkConfig:
    # exactly the mailbox servers (a whole private range would make any host in it "outbound")
    trusted_relays: tuple[str, ...] = ("127.0.0.1/32",)
    # the gateway's own addresses: what Postfix presents for sendmail/cron mail (non_smtpd_milters)
    # and what a program on the gateway connects from; never refused by the forwarding check
    gateway_host: tuple[str, ...] = ("127.0.0.1/32", "::1/128")


@dataclass(frozen=True)
class RulesConfig:
    dir: str = "rules"
    reload_interval: float = 2.0  # seconds between checks of the rule directory
    # a copy of the last rule set that loaded; at start a rule directory that does not load falls
    # back to it (logged, counted, /health degraded). "" keeps no copy: a broken start then fails
    last_good_dir: str = "/var/lib/govmilter/last-good-rules"


@dataclass(frozen=True)
class ForwardingConfig:
    enabled: bool = True
    reply_code: str = "550"
    reply_enhanced: str = "5.7.520"
    reply_text: str = (
        f"Chuyen tiep tu dong ra ngoai he thong thu cong vu bi cam ({reg.FORWARDING})"
        " - automatic forwarding to non-government domains is not allowed"
    )
    reply_text_inbound: str = (
        "Chuyen tiep tu dong tu hop thu ngoai nha nuoc vao hop thu cong vu bi cam"
        f" ({reg.FORWARDING}) - automatic forwarding from non-government mailboxes is not allowed"
    )
    memory_ttl: int = 604800  # seconds an inbound Message-ID is remembered (7 days)
    memory_max_entries: int = 200000  # bound of the in-process memory
    redis_url: str = ""  # redis://127.0.0.1:6379/0 to share the memory between nodes
    redis_timeout: float = 0.5  # seconds per Redis operation; past it the in-process memory answers
    redis_retry_interval: float = 10.0  # seconds Redis is left alone after a failure
    redis_prefix: str = "govmilter:seen:"  # key namespace in a shared Redis


@dataclass(frozen=True)
class SizeConfig:
    enabled: bool = True
    attachment_limit: int = 20971520  # 20 MiB of decoded attachment bytes (Dieu 5.1)
    raw_ceiling: int = 0  # 0 = derived from attachment_limit (base64 4/3 + line breaks + headers)
    # reject | tempfail | accept: a MIME walk that a limit cut short (too many parts, nesting, a huge header)
    parse_error_action: str = "reject"
    # reject | tempfail | accept: ambiguous structure (a part with two differing Content-Type,
    # Content-Transfer-Encoding or Content-Disposition fields) and a header flood
    malformed_action: str = "reject"
    text_memory: int = 1048576  # characters of a message's text kept in memory; the rest spills to disk
    # reply texts; {names} in braces are filled in (the names each text may use are in _TEMPLATES)
    reply_text_attachment_cap: str = (
        f"Tep dinh kem vuot qua gioi han {{limit}} byte: tong dung luong {{found}} byte ({reg.ATTACHMENT_CAP})"
        " - attachments exceed the limit of {limit} bytes: {found} bytes found"
    )
    reply_text_declared_size: str = (
        "Kich thuoc khai bao {declared} byte vuot qua muc toi da {ceiling} byte"
        f" cua gioi han tep dinh kem {{limit}} byte ({reg.ATTACHMENT_CAP})"
        " - declared SIZE={declared} exceeds the maximum of {ceiling} bytes for the attachment limit of {limit} bytes"
    )
    reply_text_raw_size: str = (
        "Thu da vuot qua {ceiling} byte (da nhan {received} byte), muc toi da"
        f" cua gioi han tep dinh kem {{limit}} byte ({reg.ATTACHMENT_CAP})"
        " - message passed {ceiling} bytes ({received} received),"
        " the maximum for the attachment limit of {limit} bytes"
    )
    reply_text_parse_error: str = (
        f"Cau truc MIME cua thu vuot qua gioi han kiem tra ({reg.ATTACHMENT_CAP})"
        " - the MIME structure of the message exceeds the limits of inspection"
    )
    reply_text_parse_error_tempfail: str = (
        "Khong phan tich duoc cau truc MIME cua thu, vui long gui lai sau"
        " - the MIME structure of the message could not be analysed, try again later"
    )
    reply_text_malformed: str = (
        "Thu co cau truc khong hop le: {what_vi}, cac chuong trinh doc thu hieu khac nhau"
        " - malformed message: {what_en}, which mail programs read differently"
    )
    reply_text_malformed_tempfail: str = (
        "Thu co cau truc khong hop le ({what_vi}), vui long gui lai sau"
        " - malformed message ({what_en}), try again later"
    )


@dataclass(frozen=True)
class AttachmentsConfig:
    enabled: bool = True
    reply_text: str = (
        f"Tep dinh kem bi chan, {{what_vi}}: {{name}} ({reg.MALWARE}) - attachment refused, {{what_en}}: {{name}}"
    )


@dataclass(frozen=True)
class AntivirusConfig:
    enabled: bool = True
    # unix:/path or tcp:host:port, tried in order (strategy "ordered") or spread ("spread")
    clamd: tuple[str, ...] = ("unix:/var/run/clamav/clamd.ctl",)
    strategy: str = "ordered"
    connect_timeout: float = 2.0
    scan_timeout: float = 30.0
    on_failure_inbound: str = "tempfail"  # tempfail | accept | reject
    on_failure_outbound: str = "tempfail"
    on_size_limit: str = "tempfail"  # clamd's "INSTREAM size limit exceeded"
    # clamd.conf's MaxFileSize: a size alert for a message smaller than this comes from what an
    # archive in it expands to (a bomb), answered by on_expansion_limit instead of on_size_limit
    clamd_max_file_size: int = 26214400  # 25 MiB, Debian's MaxFileSize
    on_expansion_limit: str = "reject"  # tempfail | accept | reject (554 5.7.1 expansion-limit)
    # files encoded in body text that clamd's own MIME parser does not decode (yEnc blocks,
    # data: URIs) are scanned as INSTREAMs of their own, at most this many per message; past
    # it the message is not scanned whole and on_size_limit decides
    max_embedded_scans: int = 32
    breaker_failures: int = 3  # consecutive failures that open an address's circuit
    breaker_cooldown: float = 10.0  # seconds before an open circuit is tried again
    cache_ttl: float = 300.0  # seconds a copy of a scanned message reuses its answer; 0 scans every copy
    cache_entries: int = 10000
    reply_text_virus: str = f"Thu co chua virus {{signature}} ({reg.MALWARE}) - virus found: {{signature}}"
    reply_text_scan_failed: str = (
        f"Khong quet duoc virus, thu bi tu choi ({reg.MALWARE})"
        " - the message could not be scanned for viruses and is refused"
    )
    reply_text_scan_failed_tempfail: str = (
        f"Tam thoi khong quet duoc virus, vui long gui lai sau ({reg.MALWARE})"
        " - virus scanning is temporarily unavailable, please try again later"
    )
    reply_text_size_limit: str = (
        f"Thu qua lon de quet virus, thu bi tu choi ({reg.MALWARE})"
        " - the message is too large to be scanned for viruses and is refused"
    )
    reply_text_size_limit_tempfail: str = (
        f"Thu qua lon de quet virus luc nay, vui long gui lai sau ({reg.MALWARE})"
        " - the message is too large for the virus scanner now, please try again later"
    )
    reply_text_expansion_limit: str = (
        f"Thu chua tep nen giai nen qua lon de quet virus (bom nen), thu bi tu choi ({reg.MALWARE})"
        " - the message holds a compressed file that expands past the virus scanner's limits"
        " (a compression bomb) and is refused"
    )
    reply_text_expansion_limit_tempfail: str = (
        f"Thu chua tep nen giai nen qua lon de quet virus, vui long gui lai sau ({reg.MALWARE})"
        " - the message holds a compressed file that expands past the virus scanner's limits,"
        " please try again later"
    )


@dataclass(frozen=True)
class DnsConfig:
    """The one resolver, cache and per-message budget of every check that asks DNS (dnsbl, auth)."""

    resolver: str = "127.0.0.1"
    port: int = 53
    budget: float = 2.0  # total seconds all DNS lookups of one message may take, every check together
    workers: int = 16  # lookup threads shared by all connections (parallel blocklist lookups)
    cache_entries: int = 10000  # answers kept for their TTL
    negative_ttl: float = 300.0  # seconds "no such name" is kept when the answer carries no SOA
    breaker_rounds: int = 3  # blocklist rounds in a row with no answer before lookups pause (0 = never)
    breaker_cooldown: float = 10.0  # seconds lookups pause after a silent resolver
    failure_log_interval: float = 60.0  # failed lookups are logged as one line per this many seconds


# keys that moved to another table: a configuration that still has them is told where they went
_MOVED: dict[tuple[str, str], tuple[str, str]] = {
    ("dnsbl", "resolver"): ("dns", "resolver"),
    ("dnsbl", "resolver_port"): ("dns", "port"),
    ("dnsbl", "budget"): ("dns", "budget"),
    ("dnsbl", "workers"): ("dns", "workers"),
    ("dnsbl", "cache_entries"): ("dns", "cache_entries"),
    ("dnsbl", "negative_ttl"): ("dns", "negative_ttl"),
    ("dnsbl", "breaker_rounds"): ("dns", "breaker_rounds"),
    ("dnsbl", "breaker_cooldown"): ("dns", "breaker_cooldown"),
}


@dataclass(frozen=True)
class DnsblConfig:
    enabled: bool = True
    # zones, return codes and weights are in the rule files (kind = "dnsbl"); the resolver is [dns]
    max_uri_domains: int = 20  # link domains looked up per message
    past_limit_score: float = 2.0  # added to the spam score of a message with more link domains than that
    reply_text: str = (
        f"{{what_vi}} {{subject}} nam trong danh sach chan thu rac {{zone}} ({reg.BLOCKLISTS})"
        " - {what_en} {subject} is listed by {zone}"
    )


@dataclass(frozen=True)
class AuthConfig:
    """Inbound sender authentication: SPF, DKIM, DMARC and ARC (checks/auth/)."""

    enabled: bool = True
    authserv_id: str = ""  # the name in Authentication-Results; "" = this host's name
    dmarc_reject: str = "reject"  # a DMARC failure under p=reject: reject (550 5.7.1) | tag | monitor
    trusted_arc_sealers: tuple[str, ...] = ()  # domains whose ARC seal may override a DMARC failure
    max_signatures: int = 5  # DKIM signatures verified per message; the rest are reported as not checked
    max_message_bytes: int = 33554432  # messages past this are not verified: DKIM streams, ARC reads it whole (32 MiB)
    reply_text: str = (
        f"Thu gia mao ten mien {{domain}}: chinh sach DMARC cua ten mien yeu cau tu choi ({reg.BLOCKLISTS})"
        " - {domain} publishes DMARC p={policy} and this message failed DMARC authentication"
    )


@dataclass(frozen=True)
class ImpersonationConfig:
    """Mail posing as the state: spoofed state domains, look-alikes, fake state senders (checks/impersonation/)."""

    enabled: bool = True
    max_links: int = 200  # distinct links judged per message; past it the finding links-past-limit
    reply_text: str = (
        f"Thu gia mao co quan nha nuoc, ten mien {{domain}} ({reg.IMPERSONATION})"
        " - message refused: it impersonates the state domain {domain}"
    )
    reply_text_tempfail: str = (
        f"Chua xac thuc duoc thu cua ten mien {{domain}} do loi DNS, vui long gui lai sau ({reg.IMPERSONATION})"
        " - try again later: the sender of the state domain {domain} could not be verified (DNS)"
    )


@dataclass(frozen=True)
class DkimKey:
    """One signing key: mail whose From domain is `domain` is signed with selector `selector`."""

    domain: str
    selector: str
    key_file: str  # PEM private key (RSA 2048 or Ed25519), mode 0600


@dataclass(frozen=True)
class DkimConfig:
    """Outbound DKIM signing of mail from trusted relays and authenticated users."""

    enabled: bool = True
    keys: tuple[DkimKey, ...] = ()  # [{domain, selector, key_file}, ...]; empty = no signing


@dataclass(frozen=True)
class ContentConfig:
    enabled: bool = True
    tag_threshold: float = 5.0  # score at which X-Spam-Flag: YES is added
    reject_threshold: float = 10.0  # score at which the message is refused
    # the same for outbound mail (trusted relays, AUTH users): a compromised account sends the phishing it
    # received; an outbound message judged spam also counts against the account ([ratelimit] spam_factor)
    outbound_tag_threshold: float = 5.0
    outbound_reject_threshold: float = 10.0
    reply_code: str = "550"
    reply_enhanced: str = "5.7.1"
    gtube: bool = True  # the GTUBE test string scores 1000 (an end-to-end test of the reject path)
    # attached documents' text (.txt, .docx/.xlsx/.pptx, .pdf), read only for a rule with target = "document"
    document_max_bytes: int = 33554432  # per document: decoded bytes, decompressed XML, text written (32 MiB)
    document_max_count: int = 10  # documents read per message; the rest are unreadable
    document_seconds: float = 10.0  # wall-clock seconds per document (pdftotext is killed after)
    document_memory: int = 536870912  # address space of pdftotext, bytes (512 MiB)
    document_unreadable: str = "monitor"  # encrypted, damaged or over budget: monitor (log, count, tag) | reject
    # a pattern RE2 cannot run (lookaround, backreference) runs with this time limit per rule and message;
    # past it the rule is skipped for that message (counted, logged): a score rule is left out,
    # a reject rule refuses the message unchecked
    pattern_time_limit_ms: int = 100
    # links read per message for the rules with target = "link" / "link-domain" or a link_domain condition
    max_links: int = 200
    # the refusal by a reject rule that has no reply of its own
    reply_text: str = (
        f"Noi dung thu vi pham quy dinh cua he thong thu cong vu ({reg.CONTENT})"
        " - message refused by content rule {rule}"
    )
    # the refusal by score to an internal sender (trusted relay or authenticated): may name the rules
    reply_text_spam: str = (
        f"Thu bi tu choi vi bi bo loc danh gia la thu rac, diem {{score}} ({reg.SPAM_SCORE})"
        " - message refused as spam, score {score} >= {threshold}: {rules}"
    )
    # the same to an outside sender: the rule names are internal ({rules} may still be written here)
    reply_text_spam_inbound: str = (
        f"Thu bi tu choi vi bi bo loc danh gia la thu rac ({reg.SPAM_SCORE})"
        " - message refused as spam (score {score}, limit {threshold})"
    )
    reply_text_unreadable: str = (
        f"Khong mo duoc tep dinh kem de kiem tra dau tai lieu mat, tep co mat khau hoac bi hong ({reg.SECRET_MARKINGS})"
        " - an attached document could not be opened to check it for state-secret markings"
    )


@dataclass(frozen=True)
class RatelimitConfig:
    """Outbound rate limits (checks/ratelimit/): the limits are in rule files of kind "ratelimit"."""

    enabled: bool = True
    redis_url: str = ""  # redis://127.0.0.1:6379/0: the buckets shared by every node; "" = per node
    redis_timeout: float = 0.5  # seconds per Redis call; past it this node's own buckets answer
    redis_retry_interval: float = 10.0  # seconds Redis is left alone after a failure (one log line each)
    redis_prefix: str = "govmilter:rl:"  # key namespace in a shared Redis
    # buckets, over-limit marks and holds kept in process (no Redis, or Redis failing); past it the least
    # recently used bucket is dropped and starts full again when next used (counted)
    local_max_keys: int = 100000
    over_limit_seconds: int = 3600  # how long a deferred account stays marked over its limit (gauge, status)
    hold_seconds: int = 0  # how long a hold lasts; 0 = until `govmilter ratelimit release`
    spam_factor: float = 10.0  # each recipient of an outbound message judged spam counts this many times
    reply_text: str = (
        f"Vuot qua gioi han gui thu {{limit}}: {{what_vi}}, thu se duoc gui lai sau ({reg.SPAM})"
        " - sending limit {limit} reached: {what_en}, the message will be retried later"
    )
    reply_text_held: str = (
        f"Tai khoan bi tam dung gui thu sau khi vuot gioi han {{limit}}, lien he quan tri he thong ({reg.SPAM})"
        " - sending is held after the limit {limit} was exceeded; contact the mail administrators"
    )
    reply_text_too_large: str = (
        f"Thu co qua nhieu nguoi nhan cho gioi han {{limit}} (toi da {{burst}} mot lan) ({reg.SPAM})"
        " - more recipients in one message than the limit {limit} allows at once ({burst})"
    )


@dataclass(frozen=True)
class MetricsConfig:
    listen: str = "127.0.0.1:9101"  # "" disables the HTTP endpoint


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"
    # the daemon's stderr (the journal): "logfmt" (key=value, every value quoted as needed) or "json"
    # (one object per line); either way nothing from the wire can add a field
    format: str = "logfmt"


@dataclass(frozen=True)
class HistoryConfig:
    # one decision record per message, written off the hot path (docs/history.md)
    enabled: bool = True
    path: str = "/var/lib/govmilter/history.sqlite"  # the SQLite store (one node), mode file_mode
    url: str = ""  # "postgresql://user:password@host/db": several nodes share it (path is then unused)
    retention_days: float = 30.0  # records older than this are pruned
    max_size_mb: int = 2048  # SQLite: past it the oldest records go first; 0 = no cap
    prune_interval: float = 3600.0  # seconds between background prunes
    queue_size: int = 10000  # records waiting for the store; past it a record is dropped and counted
    file_mode: str = "0640"  # the SQLite file: the govmilter user writes, the group (officers) reads
    group: str = ""  # group given the SQLite file ("" leaves it alone), e.g. an officers' group


@dataclass(frozen=True)
class Config:
    milter: MilterConfig = field(default_factory=MilterConfig)
    domains: DomainsConfig = field(default_factory=DomainsConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    rules: RulesConfig = field(default_factory=RulesConfig)
    forwarding: ForwardingConfig = field(default_factory=ForwardingConfig)
    size: SizeConfig = field(default_factory=SizeConfig)
    attachments: AttachmentsConfig = field(default_factory=AttachmentsConfig)
    antivirus: AntivirusConfig = field(default_factory=AntivirusConfig)
    dns: DnsConfig = field(default_factory=DnsConfig)
    dnsbl: DnsblConfig = field(default_factory=DnsblConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    impersonation: ImpersonationConfig = field(default_factory=ImpersonationConfig)
    content: ContentConfig = field(default_factory=ContentConfig)
    dkim: DkimConfig = field(default_factory=DkimConfig)
    ratelimit: RatelimitConfig = field(default_factory=RatelimitConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    log: LogConfig = field(default_factory=LogConfig)
    history: HistoryConfig = field(default_factory=HistoryConfig)
    source: str = "<defaults>"  # the file it came from, for messages


_CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("size", "parse_error_action"): ("accept", "tempfail", "reject"),
    ("size", "malformed_action"): ("accept", "tempfail", "reject"),
    ("antivirus", "strategy"): ("ordered", "spread"),
    ("antivirus", "on_failure_inbound"): ("tempfail", "accept", "reject"),
    ("antivirus", "on_failure_outbound"): ("tempfail", "accept", "reject"),
    ("antivirus", "on_size_limit"): ("tempfail", "accept", "reject"),
    ("antivirus", "on_expansion_limit"): ("tempfail", "accept", "reject"),
    ("log", "level"): ("debug", "info", "warning", "error"),
    ("log", "format"): ("logfmt", "json"),
    ("content", "document_unreadable"): ("monitor", "reject"),
    ("auth", "dmarc_reject"): ("reject", "tag", "monitor"),
}


# The names each reply text may fill in: checked when the configuration is read, so a typo in a
# text is a configuration error, never a failure while answering a message.
_TEMPLATES: dict[tuple[str, str], frozenset[str]] = {
    ("forwarding", "reply_text"): frozenset(),
    ("forwarding", "reply_text_inbound"): frozenset(),
    ("size", "reply_text_attachment_cap"): frozenset({"limit", "found"}),
    ("size", "reply_text_declared_size"): frozenset({"limit", "ceiling", "declared"}),
    ("size", "reply_text_raw_size"): frozenset({"limit", "ceiling", "received"}),
    ("size", "reply_text_parse_error"): frozenset(),
    ("size", "reply_text_parse_error_tempfail"): frozenset(),
    ("size", "reply_text_malformed"): frozenset({"what_vi", "what_en"}),
    ("size", "reply_text_malformed_tempfail"): frozenset({"what_vi", "what_en"}),
    ("attachments", "reply_text"): frozenset({"what_vi", "what_en", "name"}),
    ("antivirus", "reply_text_virus"): frozenset({"signature"}),
    ("antivirus", "reply_text_scan_failed"): frozenset(),
    ("antivirus", "reply_text_scan_failed_tempfail"): frozenset(),
    ("antivirus", "reply_text_size_limit"): frozenset(),
    ("antivirus", "reply_text_size_limit_tempfail"): frozenset(),
    ("antivirus", "reply_text_expansion_limit"): frozenset(),
    ("antivirus", "reply_text_expansion_limit_tempfail"): frozenset(),
    ("dnsbl", "reply_text"): frozenset({"what_vi", "what_en", "subject", "zone"}),
    ("auth", "reply_text"): frozenset({"domain", "policy"}),
    ("impersonation", "reply_text"): frozenset({"domain"}),
    ("impersonation", "reply_text_tempfail"): frozenset({"domain"}),
    ("content", "reply_text"): frozenset({"rule"}),
    ("content", "reply_text_spam"): frozenset({"score", "threshold", "rules"}),
    ("content", "reply_text_spam_inbound"): frozenset({"score", "threshold", "rules"}),
    ("content", "reply_text_unreadable"): frozenset(),
    ("ratelimit", "reply_text"): frozenset({"limit", "what_vi", "what_en"}),
    ("ratelimit", "reply_text_held"): frozenset({"limit", "what_vi", "what_en"}),
    ("ratelimit", "reply_text_too_large"): frozenset({"limit", "what_vi", "what_en", "burst"}),
}


def template_names(text: str) -> set[str]:
    """The {names} a reply text fills in; ValueError for a malformed one, a format spec or a conversion."""
    names: set[str] = set()
    for _, name, spec, conversion in string.Formatter().parse(text):
        if name is None:
            continue
        if spec or conversion or not name.isidentifier():
            raise ValueError(f"{{{name}}}: only plain {{name}} placeholders are filled in")
        names.add(name)
    return names


def _check_reply(where: str, text: str, allowed: frozenset[str]) -> None:
    # what the adapter would have to mangle is refused here: libmilter drops a reply with a '%'
    if not text or len(text) > 500 or not all(" " <= c < "\x7f" and c != "%" for c in text):
        raise ConfigError(f"{where}: a reply text is one line of printable ASCII without '%', at most 500 characters")
    try:
        names = template_names(text)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    unknown = sorted(names - allowed)
    if unknown:
        offered = ", ".join("{" + n + "}" for n in sorted(allowed)) or "none"
        raise ConfigError(f"{where}: unknown placeholder {{{unknown[0]}}} (this text may use: {offered})")


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Read a TOML file (or the defaults when path is None) and apply `table.key=value` overrides."""
    source = str(path) if path is not None else "<defaults>"
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as handle:
                raw = tomllib.load(handle)
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    for item in overrides:
        _apply_override(raw, item)
    return _build(raw, source)


def _apply_override(raw: dict[str, Any], item: str) -> None:
    name, sep, text = item.partition("=")
    table, dot, key = name.strip().partition(".")
    if not sep or not dot or not table or not key:
        raise ConfigError(f"--set {item!r}: expected table.key=value")
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text  # a bare word is a string
    raw.setdefault(table, {})
    if not isinstance(raw[table], dict):
        raise ConfigError(f"--set {item!r}: [{table}] is not a table")
    raw[table][key] = value


def _build(raw: dict[str, Any], source: str) -> Config:
    tables: dict[str, Any] = {}
    config_fields = {f.name: f for f in dataclasses.fields(Config) if f.name != "source"}
    for table, values in raw.items():
        if table not in config_fields:
            raise ConfigError(f"{source}: unknown table [{table}]")
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: [{table}] must be a table")
        cls = typing.get_type_hints(Config)[table]
        tables[table] = _build_table(cls, table, values, source)
    config = Config(**tables, source=source)
    _validate(config)
    return config


def _build_table(cls: type, table: str, values: dict[str, Any], source: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            moved = _MOVED.get((table, key))
            if moved:
                raise ConfigError(f"{source}: [{table}] {key} moved to [{moved[0]}] {moved[1]}")
            raise ConfigError(f"{source}: [{table}] unknown key '{key}'")
        kwargs[key] = _coerce(hints[key], value, f"{source}: [{table}] {key}")
        choices = _CHOICES.get((table, key))
        if choices and kwargs[key] not in choices:
            raise ConfigError(f"{source}: [{table}] {key} = {value!r}: expected one of {', '.join(choices)}")
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if typing.get_origin(hint) is tuple and dataclasses.is_dataclass(typing.get_args(hint)[0]):
        return _coerce_tables(typing.get_args(hint)[0], value, where)
    if typing.get_origin(hint) is tuple:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
    raise ConfigError(f"{where}: unsupported type {hint!r}")  # pragma: no cover


def _coerce_tables(cls: Any, value: Any, where: str) -> tuple[Any, ...]:
    """A list of inline tables of string values, each with exactly the fields of `cls`."""
    names = [f.name for f in dataclasses.fields(cls)]
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ConfigError(f"{where}: expected a list of tables {{{', '.join(names)}}}, got {value!r}")
    items = []
    for number, item in enumerate(value, 1):
        unknown = sorted(set(item) - set(names))
        missing = [name for name in names if name not in item]
        if unknown or missing:
            problem = f"unknown key '{unknown[0]}'" if unknown else f"missing {missing[0]}"
            raise ConfigError(f"{where}: entry {number}: {problem} (expected {', '.join(names)})")
        for name in names:
            if not isinstance(item[name], str) or not item[name].strip():
                raise ConfigError(f"{where}: entry {number}: {name} = {item[name]!r}: expected a non-empty string")
        items.append(cls(**{name: item[name].strip() for name in names}))
    return tuple(items)


def _validate(config: Config) -> None:
    src = config.source
    for key in ("trusted_relays", "gateway_host"):
        for relay in getattr(config.network, key):
            try:
                ipaddress.ip_network(relay, strict=False)
            except ValueError as exc:
                raise ConfigError(f"{src}: [network] {key}: {relay!r} is not a network") from exc
    socket = config.milter.socket
    if not socket.startswith(("unix:", "inet:", "inet6:")):
        raise ConfigError(f"{src}: [milter] socket = {socket!r}: expected unix:PATH or inet:PORT@HOST")
    try:
        int(config.milter.socket_mode, 8)
    except ValueError as exc:
        raise ConfigError(f"{src}: [milter] socket_mode = {config.milter.socket_mode!r}: expected octal") from exc
    milter = config.milter
    if milter.spool_threshold < 1:  # 0 would keep every message in memory, however large
        raise ConfigError(f"{src}: [milter] spool_threshold must be at least 1 byte")
    if not 1 <= milter.max_header_fields <= 1_000_000:
        raise ConfigError(f"{src}: [milter] max_header_fields must be between 1 and 1000000")
    if not 1024 <= milter.max_header_bytes <= 256 * 1024 * 1024:
        raise ConfigError(f"{src}: [milter] max_header_bytes must be between 1024 and 268435456 (256 MiB)")
    if not 0 <= milter.shutdown_grace <= 3600:
        raise ConfigError(f"{src}: [milter] shutdown_grace must be between 0 and 3600 seconds")
    if milter.timeout < 0:  # 0 keeps libmilter's own (7210 s)
        raise ConfigError(f"{src}: [milter] timeout must be 0 (libmilter's default) or a number of seconds")
    if milter.reply_contact:
        _check_reply(f"{src}: [milter] reply_contact", milter.reply_contact, frozenset())
    antivirus = config.antivirus
    for address in antivirus.clamd:
        try:
            ClamdAddress.parse(address)
        except ValueError as exc:
            raise ConfigError(f"{src}: [antivirus] {exc}") from exc
    if antivirus.enabled and not antivirus.clamd:
        raise ConfigError(f"{src}: [antivirus] clamd: no address (or enabled = false)")
    if antivirus.connect_timeout <= 0 or antivirus.scan_timeout <= 0:
        raise ConfigError(f"{src}: [antivirus] connect_timeout and scan_timeout must be positive")
    if antivirus.clamd_max_file_size < 1:
        raise ConfigError(f"{src}: [antivirus] clamd_max_file_size must be positive (clamd.conf's MaxFileSize)")
    if not 0 <= antivirus.max_embedded_scans <= 10000:
        raise ConfigError(f"{src}: [antivirus] max_embedded_scans must be between 0 and 10000")
    if antivirus.breaker_failures < 1 or antivirus.breaker_cooldown < 0:
        raise ConfigError(f"{src}: [antivirus] breaker_failures must be at least 1, breaker_cooldown not negative")
    if config.size.attachment_limit <= 0:
        raise ConfigError(f"{src}: [size] attachment_limit must be positive")
    if config.size.text_memory < 0:
        raise ConfigError(f"{src}: [size] text_memory must not be negative")
    if config.dnsbl.max_uri_domains < 0:
        raise ConfigError(f"{src}: [dnsbl] max_uri_domains must not be negative")
    if config.dnsbl.past_limit_score < 0:
        raise ConfigError(f"{src}: [dnsbl] past_limit_score must not be negative")
    dns = config.dns
    if dns.budget <= 0 or dns.workers < 1 or not 1 <= dns.port <= 65535 or not dns.resolver:
        raise ConfigError(f"{src}: [dns] resolver must be set, budget and workers positive, port 1-65535")
    if dns.cache_entries < 0 or dns.negative_ttl < 0 or dns.breaker_rounds < 0 or dns.breaker_cooldown < 0:
        raise ConfigError(f"{src}: [dns] cache_entries, negative_ttl and the breaker must not be negative")
    if dns.failure_log_interval <= 0:
        raise ConfigError(f"{src}: [dns] failure_log_interval must be positive")
    if config.impersonation.max_links < 0:
        raise ConfigError(f"{src}: [impersonation] max_links must be 0 or more")
    if config.auth.max_message_bytes < 1:
        raise ConfigError(f"{src}: [auth] max_message_bytes must be positive")
    if not 0 <= config.auth.max_signatures <= 50:
        raise ConfigError(f"{src}: [auth] max_signatures must be between 0 and 50")
    seen_keys: set[tuple[str, str]] = set()
    for dkim_key in config.dkim.keys:
        pair = (dkim_key.domain.lower().rstrip("."), dkim_key.selector.lower())
        if pair in seen_keys:
            raise ConfigError(f"{src}: [dkim] keys: {dkim_key.domain} selector {dkim_key.selector} is given twice")
        seen_keys.add(pair)
    if config.content.reject_threshold < config.content.tag_threshold:
        raise ConfigError(f"{src}: [content] reject_threshold must not be below tag_threshold")
    if config.content.outbound_reject_threshold < config.content.outbound_tag_threshold:
        raise ConfigError(f"{src}: [content] outbound_reject_threshold must not be below outbound_tag_threshold")
    ratelimit = config.ratelimit
    if ratelimit.redis_timeout <= 0 or ratelimit.redis_retry_interval < 0:
        raise ConfigError(f"{src}: [ratelimit] redis_timeout must be positive, redis_retry_interval not negative")
    if ratelimit.local_max_keys < 1 or ratelimit.over_limit_seconds < 1 or ratelimit.hold_seconds < 0:
        raise ConfigError(
            f"{src}: [ratelimit] local_max_keys and over_limit_seconds must be positive, hold_seconds not negative"
        )
    if ratelimit.spam_factor < 1:
        raise ConfigError(f"{src}: [ratelimit] spam_factor must be at least 1")
    content = config.content
    if content.document_max_bytes < 1 or content.document_max_count < 0 or content.document_seconds <= 0:
        raise ConfigError(
            f"{src}: [content] document_max_bytes and document_seconds must be positive, max_count not negative"
        )
    if not 1 <= content.pattern_time_limit_ms <= 10000:
        raise ConfigError(f"{src}: [content] pattern_time_limit_ms must be between 1 and 10000")
    if not 1 <= content.max_links <= 10000:
        raise ConfigError(f"{src}: [content] max_links must be between 1 and 10000")
    if content.document_memory < 16 * 1024 * 1024:
        raise ConfigError(f"{src}: [content] document_memory must be at least 16777216 (16 MiB)")
    for (table, key), allowed in _TEMPLATES.items():
        _check_reply(f"{src}: [{table}] {key}", getattr(getattr(config, table), key), allowed)
    history = config.history
    if history.url and not history.url.startswith(("postgresql://", "postgres://")):
        raise ConfigError(f"{src}: [history] url must start with postgresql:// (or be empty for SQLite)")
    if history.enabled and not history.url and not history.path:
        raise ConfigError(f"{src}: [history] path: no file (or enabled = false)")
    if history.retention_days <= 0 or history.max_size_mb < 0 or history.prune_interval <= 0:
        raise ConfigError(
            f"{src}: [history] retention_days and prune_interval must be positive, max_size_mb not negative"
        )
    if not 1 <= history.queue_size <= 1_000_000:
        raise ConfigError(f"{src}: [history] queue_size must be between 1 and 1000000")
    try:
        int(history.file_mode, 8)
    except ValueError as exc:
        raise ConfigError(f"{src}: [history] file_mode = {history.file_mode!r}: expected octal") from exc
    if config.metrics.listen:
        host, sep, port = config.metrics.listen.rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise ConfigError(f"{src}: [metrics] listen = {config.metrics.listen!r}: expected HOST:PORT")


def _history_summary(history: HistoryConfig) -> str:
    if not history.enabled:
        return "off"
    where = "PostgreSQL ([history] url)" if history.url else history.path  # the url may hold a password
    return f"{where}, {history.retention_days:g} days"


def summary(config: Config) -> str:
    """A short human summary for `config check`."""
    return "\n".join(
        [
            f"config {config.source}: OK",
            f"  milter socket    {config.milter.socket}",
            f"  local domains    {', '.join(config.domains.local)}",
            f"  government       {', '.join(config.domains.government)}",
            f"  trusted relays   {', '.join(config.network.trusted_relays)}",
            f"  rules directory  {config.rules.dir}",
            f"  clamd            {', '.join(config.antivirus.clamd)}",
            f"  DNS resolver     {config.dns.resolver}:{config.dns.port}",
            f"  attachment cap   {config.size.attachment_limit} bytes",
            f"  metrics          {config.metrics.listen or 'off'}",
            f"  history          {_history_summary(config.history)}",
        ]
    )
