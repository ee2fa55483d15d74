"""`govmilter doctor`: the preflight an operator runs before wiring Postfix and after each change.

Run it as the service user (`runuser -u govmilter -- govmilter doctor`): what it reads and
writes it reads and writes with that user's rights, as the daemon would. Each finding is one
line, `OK`, `NOTE`, `WARN` or `FAIL`, with the fix after `->`. The exit status is 0 when no
finding is FAIL, 1 otherwise.

The probes: the configuration; the rule files (valid, readable by this user); each clamd
address (PING, VERSION and the signatures' age); the DNS resolver and each blocklist zone of
the rule files (its RFC 5782 test point); the spool and socket directories (writable, the
socket reachable from Postfix's chroot); Postfix's settings read with `postconf` (the milter
lines naming our socket, milter_default_action, milter_protocol, the timeouts against ours,
message_size_limit above the raw ceiling); the trusted relays and the monitor switch.
Postfix settings that only matter once Postfix calls the milter are WARN while it does not
(before wiring), FAIL once it does.
"""

from __future__ import annotations

import contextlib
import enum
import grp
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.rdatatype
import dns.resolver

from govmilter.checks.dnsbl import RULE_KIND as DNSBL_KIND
from govmilter.checks.dnsbl import DnsblRules
from govmilter.checks.size import derived_raw_ceiling
from govmilter.clients.clamd import ClamdClient, ClamdError, short_version, signatures_time
from govmilter.clients.redis import StoreError, ping, redact_url
from govmilter.config import Config, ConfigError, load_config
from govmilter.pipeline import rule_compilers
from govmilter.ruleset import RuleErrors, RuleSet, load_ruleset

DEFAULT_MAX_SIGNATURE_AGE = 3.0  # days
DNS_TIMEOUT = 3.0  # seconds per query
POSTCONF_TIMEOUT = 20.0
OFFICERS_GROUP = "govmilter-officers"  # the package's officers' group
POSTFIX_QUEUE = "/var/spool/postfix"
# Test points of domain zones that do not list the RFC 5782 name "test"
DOMAIN_TEST_POINTS = {"dbl.spamhaus.org": "dbltest.com", "multi.uribl.com": "test.uribl.com"}
POSTFIX_PARAMETERS = (
    "queue_directory",
    "smtpd_milters",
    "non_smtpd_milters",
    "milter_default_action",
    "milter_protocol",
    "milter_connect_timeout",
    "milter_command_timeout",
    "milter_content_timeout",
    "message_size_limit",
)


class Level(enum.Enum):
    OK = "OK"
    NOTE = "NOTE"  # worth knowing, never a failure
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Finding:
    level: Level
    what: str  # the thing looked at: "clamd unix:/var/run/clamav/clamd.ctl"
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.level.value:<4} {self.what}: {self.detail}"
        return f"{text} -> {self.fix}" if self.fix else text


@dataclass(frozen=True)
class Options:
    postconf_dir: str | None = None  # `postconf -c DIR`: a private Postfix instance
    max_signature_age: float = DEFAULT_MAX_SIGNATURE_AGE  # days
    postconf: str = "postconf"


def ok(what: str, detail: str) -> Finding:
    return Finding(Level.OK, what, detail)


# --- the configuration and the rule files ----------------------------------------------------


def probe_rules(config: Config) -> tuple[list[Finding], RuleSet | None]:
    """Every rule file readable by this user and the set valid; the rule set when it loads."""
    directory = Path(config.rules.dir)
    what = f"rules {directory}"
    if not directory.is_dir():
        return [Finding(Level.FAIL, what, "no such directory", "set [rules] dir or create it")], None
    if not os.access(directory, os.R_OK | os.X_OK):
        return [Finding(Level.FAIL, what, f"directory not readable by {_user()}", _read_fix(directory))], None
    found: list[Finding] = []
    for path in sorted(directory.glob("*.toml")):
        if not os.access(path, os.R_OK):
            found.append(Finding(Level.FAIL, f"rule file {path}", f"not readable by {_user()}", _read_fix(path)))
    if found:
        return found, None
    try:
        ruleset = load_ruleset(directory, rule_compilers())
    except RuleErrors as exc:
        problems = str(exc).strip().splitlines()
        detail = "; ".join(problems[:3]) + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else "")
        return [Finding(Level.FAIL, what, detail, f"govmilter rules check {directory}")], None
    kinds = ", ".join(sorted(ruleset.compiled)) or "none"
    return [ok(what, f"valid, version {ruleset.version} ({kinds})")], ruleset


def _user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def _read_fix(path: Path) -> str:
    """The officers' group of the rule directory (the package's govmilter-officers) and read rights."""
    group = OFFICERS_GROUP
    with contextlib.suppress(KeyError, OSError):
        group = grp.getgrgid(path.parent.stat().st_gid if path.is_file() else path.stat().st_gid).gr_name
    if path.is_dir():
        return f"chgrp {group} {path}; chmod 2775 {path}"
    return f"chgrp {group} {path}; chmod g+r,o+r {path}"


# --- clamd -------------------------------------------------------------------------------------


def probe_clamd(config: Config, max_age_days: float, now: Callable[[], float] = time.time) -> list[Finding]:
    settings = config.antivirus
    if not settings.enabled:
        return [Finding(Level.NOTE, "clamd", "the antivirus check is off ([antivirus] enabled = false)")]
    found: list[Finding] = []
    for address in settings.clamd:
        what = f"clamd {address}"
        client = ClamdClient(address, settings.connect_timeout)
        deadline = time.monotonic() + settings.connect_timeout + 2.0
        try:
            pong = client.command("PING", deadline)
            if pong != "PONG":
                raise ClamdError(f"PING answered {pong[:40]!r}")
            reply = client.version_reply(time.monotonic() + settings.connect_timeout + 2.0)
        except ClamdError as exc:
            found.append(
                Finding(
                    Level.FAIL,
                    what,
                    f"no answer ({exc})",
                    "systemctl status clamav-daemon (it does not start without signatures: "
                    "freshclam or the data centre's mirror, docs/install-package.md)",
                )
            )
            continue
        built = signatures_time(reply)
        version = short_version(reply)
        if built is None:
            found.append(
                Finding(
                    Level.WARN,
                    what,
                    f"answers (ClamAV {version}) but reports no signature database date (only local signatures?)",
                    "install the official databases (freshclam, or the data centre's mirror) and `clamdscan --reload`",
                )
            )
            continue
        age = (now() - built) / 86400
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(built))
        if age > max_age_days:
            found.append(
                Finding(
                    Level.WARN,
                    what,
                    f"ClamAV {version}, signatures built {when}, {age:.1f} days old (over {max_age_days:g})",
                    "check freshclam (`journalctl -u clamav-freshclam`) or the mirror sync, then `clamdscan --reload`",
                )
            )
        else:
            found.append(ok(what, f"ClamAV {version}, signatures built {when} ({age:.1f} days old)"))
    return found


# --- DNS ------------------------------------------------------------------------------------


def test_point(zone: str, kind: str) -> str:
    """The name a zone lists for testing (RFC 5782): 127.0.0.2 for an IP list, TEST for a domain list."""
    if kind == "ip":
        return f"2.0.0.127.{zone}"
    return f"{DOMAIN_TEST_POINTS.get(zone, 'test')}.{zone}"


def probe_dns(config: Config, ruleset: RuleSet | None) -> list[Finding]:
    if not config.dnsbl.enabled:
        return [Finding(Level.NOTE, "DNS blocklists", "off ([dnsbl] enabled = false)")]
    settings = config.dns
    rules = ruleset.get(DNSBL_KIND) if ruleset is not None else None
    zones: dict[str, str] = {}
    if isinstance(rules, DnsblRules):
        for zone in rules.zones:
            zones.setdefault(zone.zone, zone.type)
    server = f"{settings.resolver}:{settings.port}"
    if not zones:
        return [Finding(Level.NOTE, f"resolver {server}", "no blocklist zone in the rule files: not queried")]
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [settings.resolver]
    resolver.port = settings.port
    resolver.lifetime = DNS_TIMEOUT
    found: list[Finding] = []
    answered = False
    for zone_name, kind in zones.items():
        name = test_point(zone_name, kind)
        try:
            answer = resolver.resolve(name, dns.rdatatype.A, search=False)
        except dns.resolver.NXDOMAIN:
            answered = True
            found.append(
                Finding(
                    Level.WARN,
                    f"blocklist {zone_name}",
                    f"{server} answers that its test point {name} is not listed: the zone refuses this "
                    "resolver or does not reach it, so it never lists anyone",
                    "use a resolver of your own that the zone serves (not a public one), "
                    "or take the zone out of the rule files",
                )
            )
            continue
        except dns.resolver.NoAnswer:
            answered = True
            found.append(Finding(Level.WARN, f"blocklist {zone_name}", f"no A record for its test point {name}"))
            continue
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
            found.append(
                Finding(
                    Level.FAIL,
                    f"resolver {server}",
                    f"does not answer ({type(exc).__name__} asking {name})",
                    "install and start a resolver (unbound) or set [dns] resolver; "
                    "until then every blocklist lookup fails",
                )
            )
            return found
        answered = True
        addresses = ", ".join(sorted(r.to_text() for r in answer))
        found.append(ok(f"blocklist {zone_name}", f"test point {name} listed ({addresses})"))
    if answered:
        found.insert(0, ok(f"resolver {server}", "answers"))
    return found


# --- directories -----------------------------------------------------------------------------


def probe_directories(config: Config, queue_directory: str = POSTFIX_QUEUE) -> list[Finding]:
    found = [_writable("spool directory", Path(config.milter.spool_dir), "[milter] spool_dir", "govmilter")]
    socket = config.milter.socket
    if not socket.startswith("unix:"):
        found.append(Finding(Level.NOTE, "milter socket", f"{socket}: a TCP socket, no directory to check"))
        return found
    path = Path(socket.removeprefix("unix:"))
    found.append(
        _writable("socket directory", path.parent, "[milter] socket", config.milter.socket_group or "govmilter")
    )
    queue = Path(queue_directory)
    if queue in path.parents:
        found.append(
            ok("socket and chroot", f"under {queue}: a chrooted smtpd reaches it as /{path.relative_to(queue)}")
        )
    else:
        found.append(
            Finding(
                Level.WARN,
                "socket and chroot",
                f"{path} is outside Postfix's queue directory {queue}: a chrooted smtpd cannot reach it",
                f'socket = "unix:{queue}/govmilter/govmilter.sock"',
            )
        )
    return found


def _writable(what: str, directory: Path, key: str, group: str) -> Finding:
    owner = "govmilter" if os.geteuid() == 0 else _user()  # the package's service user
    fix = f"install -d -o {owner} -g {group} -m 0750 {directory} (or set {key})"
    if not directory.is_dir():
        return Finding(Level.FAIL, what, f"{directory} does not exist", fix)
    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        return Finding(Level.FAIL, what, f"{directory} not writable by {_user()}: {exc.strerror or exc}", fix)
    return ok(what, f"{directory} writable")


# --- Postfix -------------------------------------------------------------------------------


def read_postconf(options: Options) -> dict[str, str]:
    """Postfix's values of the parameters we compare, from `postconf` (OSError, ValueError on failure)."""
    command = [options.postconf]
    if options.postconf_dir:
        command += ["-c", options.postconf_dir]
    result = subprocess.run(
        [*command, *POSTFIX_PARAMETERS], capture_output=True, text=True, timeout=POSTCONF_TIMEOUT, check=False
    )
    if result.returncode != 0:
        said = (result.stderr or result.stdout).strip().splitlines()
        raise ValueError(said[-1] if said else f"exit status {result.returncode}")
    values: dict[str, str] = {}
    for line in result.stdout.splitlines():
        name, sep, value = line.partition(" = ")
        if sep:
            values[name.strip()] = value.strip()
        elif line.rstrip().endswith(" ="):
            values[line.rstrip()[:-2].strip()] = ""
    return values


def postfix_seconds(value: str) -> float | None:
    """A Postfix time value ("30s", "5m", "300") in seconds; None when it is not one."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhdw]?)\s*", value)
    if not match:
        return None
    unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[match.group(2)]
    return float(int(match.group(1)) * unit)


def milter_entries(value: str) -> list[str]:
    """The milter addresses of a smtpd_milters value (plain or in `{ address, options }` form)."""
    return re.findall(r"(?:unix|inet|local):[^\s,{}]+", value)


def postfix_address(config: Config, queue_directory: str) -> str:
    """Our socket as Postfix names it: relative to its queue directory (chroot-safe) or inet:HOST:PORT."""
    socket = config.milter.socket
    if socket.startswith("unix:"):
        path = Path(socket.removeprefix("unix:"))
        queue = Path(queue_directory)
        return f"unix:{path.relative_to(queue)}" if queue in path.parents else f"unix:{path}"
    port, _, host = socket.partition(":")[2].partition("@")
    return f"inet:{host or '127.0.0.1'}:{port}"


def probe_postfix(config: Config, options: Options) -> tuple[list[Finding], str]:
    """Postfix's settings against ours; also returns its queue directory for the chroot check."""
    where = f"postconf{' -c ' + options.postconf_dir if options.postconf_dir else ''}"
    try:
        values = read_postconf(options)
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        return [
            Finding(
                Level.FAIL,
                "Postfix",
                f"`{where}` failed: {exc}",
                "install Postfix (apt install postfix) or give --postconf-dir for a private instance",
            )
        ], POSTFIX_QUEUE
    queue = values.get("queue_directory") or POSTFIX_QUEUE
    ours = postfix_address(config, queue)
    absolute = f"unix:{config.milter.socket.removeprefix('unix:')}"
    smtpd = milter_entries(values.get("smtpd_milters", ""))
    wired = ours in smtpd or absolute in smtpd
    # settings that only matter once Postfix calls us: a warning before wiring, a failure after
    late = Level.FAIL if wired else Level.WARN
    found: list[Finding] = []
    if ours in smtpd:
        found.append(ok("smtpd_milters", f"names {ours}"))
    elif absolute in smtpd and absolute != ours:
        found.append(
            Finding(
                Level.WARN,
                "smtpd_milters",
                f"names {absolute}: an absolute path, which a chrooted smtpd cannot open",
                f"postconf -e 'smtpd_milters = {ours}'",
            )
        )
    elif smtpd:
        found.append(
            Finding(
                Level.FAIL,
                "smtpd_milters",
                f"= {values.get('smtpd_milters')}: does not name our socket {ours}",
                f"postconf -e 'smtpd_milters = {ours}'",
            )
        )
    else:
        found.append(
            Finding(
                Level.NOTE,
                "smtpd_milters",
                "empty: Postfix does not call govmilter yet",
                f"when every other line is OK: postconf -e 'smtpd_milters = {ours}'",
            )
        )
    if ours not in milter_entries(values.get("non_smtpd_milters", "")):
        found.append(
            Finding(
                Level.WARN,
                "non_smtpd_milters",
                "does not name our socket: mail submitted on the gateway (sendmail, cron) is not checked",
                f"postconf -e 'non_smtpd_milters = {ours}'",
            )
        )
    else:
        found.append(ok("non_smtpd_milters", f"names {ours}"))
    action = values.get("milter_default_action", "")
    if action == "tempfail":
        found.append(ok("milter_default_action", "tempfail"))
    else:
        found.append(
            Finding(
                late,
                "milter_default_action",
                f"= {action or '?'}: while govmilter is down mail would be "
                + ("delivered unchecked" if action == "accept" else "refused or lost"),
                "postconf -e milter_default_action=tempfail",
            )
        )
    protocol = values.get("milter_protocol", "")
    if protocol.isdigit() and int(protocol) >= 6:
        found.append(ok("milter_protocol", protocol))
    else:
        found.append(Finding(late, "milter_protocol", f"= {protocol or '?'}", "postconf -e milter_protocol=6"))
    found += _timeouts(config, values, late)
    found.append(_size_limit(config, values.get("message_size_limit", ""), late))
    return found, queue


def _timeouts(config: Config, values: dict[str, str], level: Level) -> list[Finding]:
    dns_budget = config.dns.budget
    redis = config.forwarding.redis_timeout if config.forwarding.redis_url else 0.0
    # the end of the message: the clamd scan, the DNS lookups, the documents read, Redis
    documents = config.content.document_seconds * config.content.document_max_count if config.content.enabled else 0
    scan = config.antivirus.scan_timeout if config.antivirus.enabled else 0.0
    needs = {
        "milter_command_timeout": dns_budget + redis,
        "milter_content_timeout": scan + dns_budget + redis + documents,
    }
    found: list[Finding] = []
    for name, needed in needs.items():
        value = postfix_seconds(values.get(name, ""))
        if value is None:
            found.append(Finding(Level.WARN, name, f"= {values.get(name, '?')}: not a time value Postfix uses"))
        elif value <= needed:
            found.append(
                Finding(
                    level,
                    name,
                    f"{value:g}s is not above the {needed:g}s govmilter may take "
                    "(Postfix gives up first: the message is deferred without our reply)",
                    f"postconf -e {name}={int(needed * 1.5) + 10}s",
                )
            )
        else:
            found.append(ok(name, f"{value:g}s, above the {needed:g}s govmilter may take"))
    return found


def _size_limit(config: Config, value: str, level: Level) -> Finding:
    ceiling = config.size.raw_ceiling or derived_raw_ceiling(config.size.attachment_limit)
    fix = "postconf -e message_size_limit=41943040"
    if not value.isdigit():
        return Finding(Level.WARN, "message_size_limit", f"= {value or '?'}: not a number", fix)
    limit = int(value)
    if limit == 0:
        return ok("message_size_limit", "0 (no limit): govmilter's raw ceiling decides")
    if limit <= ceiling:
        return Finding(
            level,
            "message_size_limit",
            f"{limit} is not above govmilter's raw ceiling {ceiling}: Postfix refuses large mail first, "
            "without the regulation's reply",
            fix if ceiling < 41943040 else f"postconf -e message_size_limit={ceiling + 4 * 1024 * 1024}",
        )
    return ok("message_size_limit", f"{limit}, above the raw ceiling {ceiling}")


# --- policy notes ------------------------------------------------------------------------------


def probe_policy(config: Config) -> list[Finding]:
    found: list[Finding] = []
    if not config.network.trusted_relays:
        found.append(
            Finding(
                Level.NOTE,
                "[network] trusted_relays",
                "no relay is trusted yet: outbound mail from mailbox servers will be judged as inbound",
                'list exactly the mailbox servers: trusted_relays = ["10.1.2.3/32"]',
            )
        )
    else:
        found.append(ok("[network] trusted_relays", ", ".join(config.network.trusted_relays)))
    if config.milter.monitor:
        found.append(
            Finding(
                Level.NOTE,
                "[milter] monitor",
                "true: nothing is refused on policy, would-be refusals are logged and tagged",
                "after the burn-in: monitor = false and systemctl restart govmilter (docs/operating.md)",
            )
        )
    if os.geteuid() == 0:
        found.append(
            Finding(
                Level.NOTE,
                "user",
                "running as root, who reads and writes everything: the file checks prove little",
                "runuser -u govmilter -- govmilter doctor",
            )
        )
    return found


# --- Redis: the state nodes share ---------------------------------------------------------------


def probe_redis(config: Config) -> list[Finding]:
    """Each configured Redis answers PING. Without it every node falls back to its own memory:
    mail flows, but a forward seen by another node is not known here ([forwarding]) and each node
    allows the whole rate limit ([ratelimit]): a warning, not a failure."""
    users: dict[str, list[tuple[str, float]]] = {}
    if config.forwarding.redis_url:
        users.setdefault(config.forwarding.redis_url, []).append(("[forwarding]", config.forwarding.redis_timeout))
    if config.ratelimit.enabled and config.ratelimit.redis_url:
        users.setdefault(config.ratelimit.redis_url, []).append(("[ratelimit]", config.ratelimit.redis_timeout))
    found: list[Finding] = []
    for url, tables in users.items():
        what = f"redis {redact_url(url)} ({', '.join(table for table, _ in tables)})"
        try:
            ping(url, max(timeout for _, timeout in tables) + 1.0)
        except StoreError as exc:
            fallback = "each node uses its own memory and buckets until it answers"
            found.append(Finding(Level.WARN, what, f"does not answer: {exc}; {fallback}",
                                 "start Redis (systemctl start redis-server) or correct redis_url"))  # fmt: skip
        else:
            found.append(ok(what, "answers PING"))
    return found


# --- all of it ------------------------------------------------------------------------------------


def examine(config: Config, options: Options) -> list[Finding]:
    """Every probe, in the order an operator fixes things."""
    found = [ok("config", f"{config.source} valid")]
    rule_findings, ruleset = probe_rules(config)
    found += rule_findings
    found += probe_clamd(config, options.max_signature_age)
    found += probe_dns(config, ruleset)
    found += probe_redis(config)
    postfix, queue = probe_postfix(config, options)
    found += probe_directories(config, queue)
    found += postfix
    found += probe_policy(config)
    return found


def run(config_path: str | None, overrides: Sequence[str], options: Options, out: Callable[[str], None]) -> int:
    """Print every finding; 0 when none is FAIL, 1 otherwise."""
    try:
        config = load_config(config_path, overrides)
    except ConfigError as exc:
        out(Finding(Level.FAIL, "config", str(exc), "govmilter config check").line())
        return 1
    findings = examine(config, options)
    for finding in findings:
        out(finding.line())
    failed = sum(f.level is Level.FAIL for f in findings)
    warned = sum(f.level is Level.WARN for f in findings)
    out(f"doctor: {failed} FAIL, {warned} WARN" + ("" if failed else ": ready"))
    return 1 if failed else 0
