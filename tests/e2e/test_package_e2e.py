"""The Debian package, as an operator gets it: build, install, the documented steps, mail, upgrade, purge.

`make deb` (packaging/build-deb.sh) is built and installed with dpkg on this machine, then the
steps of docs/install-package.md are followed in their order, against a private loopback clamd,
dnsmasq and Postfix (never the machine's /etc/postfix or /etc/clamav):

1. /etc/govmilter/govmilter.toml is edited (clamd, the resolver, the metrics address, the
   mailbox servers); the installed `govmilter doctor`, run as the service user with
   `--postconf-dir` on a bare Postfix (Postfix's defaults, no milter line), lists what a bare
   gateway lacks: FAIL for clamd and the resolver, WARN for Postfix's message_size_limit and
   non_smtpd_milters, and exits 1;
2. clamd and the resolver are started: `doctor` passes; the INSTALLED daemon is started the way
   its unit runs it (its ExecStartPre= and ExecStart= lines, Environment=, UMask=, User=,
   NoNewPrivileges=, no capabilities, and in a private mount namespace ProtectSystem=strict with
   its ReadWritePaths=, PrivateTmp=, ProtectHome=, ProtectProc=: see package.sandboxed);
3. Postfix's lines of docs/operating.md are set with `postconf -e` (all but the milter lines,
   `doctor`, then the milter lines, `postfix reload`, `doctor`): it passes with every Postfix
   line OK, and a message goes through to the mailbox;
4. in monitor mode (as installed) an officer's new reject rule (saved with umask 077) only
   tags; after "Leaving monitor mode" (monitor = false, restart) it refuses;
5. a broken rule file at start: the daemon starts on the last good rules its service user kept
   in /var/lib/govmilter/last-good-rules, says so (log, govmilter_rules_fallback 1, /health
   503), keeps refusing with them, and takes the fixed directory back;
6. a rebuilt package whose shipped rules changed is installed over it: the officer's edit and the
   operator's configuration are kept, the shipped version arrives as .dpkg-dist;
7. `dpkg --purge` leaves no user, group, file or directory of ours.

Refuses to run (fails) on a machine where a real govmilter is installed.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.helpers import INTERNET_CLIENT, _lab_available, message, unique
from e2e.package import (
    CONFIG,
    LAST_GOOD,
    OFFICERS,
    PATHS,
    PREFIX,
    RULES,
    SOCKET,
    TEST_SUFFIX,
    UNIT,
    USER,
    as_officer,
    as_user,
    build,
    installed_version,
    leftovers,
    mode,
    preexisting,
    purge_test_install,
    run,
    sandboxed,
    unit_environment,
    unit_service,
)
from stack import Clamd, Dns, Postfix, Sink, free_dns_port, free_port, send, wait_until
from support.harness import ROOT

MESSAGE_ID = re.compile(rb"^Message-ID:\s*<([^>\r\n]+)>", re.I | re.M)
SHIPPED_CHANGE = "# shipped change of the rebuilt package {tag}\n"
# "list exactly the mailbox servers" (install-package.md, step 1): the test's one, on loopback
MAILBOX_SERVER = "127.0.0.2/32"
# Postfix's own default (a stock Debian main.cf does not set it): the bare gateway's value
POSTFIX_DEFAULT_SIZE_LIMIT = "message_size_limit = 10240000"
MILTER_LINES = ("smtpd_milters", "non_smtpd_milters")
POSTFIX_CHECKS = (*MILTER_LINES, "milter_default_action", "milter_protocol", "milter_command_timeout",
                  "milter_content_timeout", "message_size_limit")


@pytest.fixture
def workdir() -> Iterator[Path]:
    reason = _lab_available()
    if reason:
        pytest.fail(reason)
    purge_test_install()
    reason = preexisting()
    if reason:
        pytest.fail(reason)
    # not under pytest's tmp (root-only): the postfix user reaches the private Postfix's files here;
    # not under /tmp either: the daemon runs with the unit's PrivateTmp= and must reach clamd's socket
    root = Path(tempfile.mkdtemp(prefix="govmilter-package-", dir="/run"))
    os.chmod(root, 0o755)
    try:
        yield root
    finally:
        purge_test_install()
        if not os.environ.get("GOVMILTER_KEEP_STACK"):
            shutil.rmtree(root, ignore_errors=True)


def documented_postfix_lines() -> dict[str, str]:
    """The main.cf block of docs/operating.md ("Postfix"), which install-package.md step 6 sends to."""
    section = (ROOT / "docs" / "operating.md").read_text().split("\n## Postfix\n", 1)[1]
    block = section.split("```\n", 2)[1]
    lines = dict(line.split(" = ", 1) for line in block.splitlines() if line.strip())
    assert set(POSTFIX_CHECKS) <= set(lines), lines
    # install-package.md names the same size limit as operating.md
    install = (ROOT / "docs" / "install-package.md").read_text()
    assert f"message_size_limit = {lines['message_size_limit']}" in install
    return lines


class InstalledDaemon:
    """/opt/govmilter/bin/govmilter run, as the unit runs it, against a private loopback stack."""

    def __init__(self, root: Path):
        self.root = root
        self.service: dict[str, list[str]] = {}
        self.clamd = Clamd(root / "clamd", settings={"LocalSocketMode": "666"})
        self.dns_port = free_dns_port()
        self.dns = Dns(root / "dns", self.dns_port)
        self.sink = Sink(free_port())
        self.smtp_port = free_port()
        self.metrics_port = free_port()
        # the gateway's Postfix before govmilter: no milter line, Postfix's default size limit
        self.postfix = Postfix(root / "postfix", self.smtp_port, self.sink.port, "",
                               extra=(POSTFIX_DEFAULT_SIZE_LIMIT,))
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / "govmilter.log"

    def configure(self) -> None:
        """install-package.md step 1, in /etc/govmilter/govmilter.toml: where clamd and the resolver
        are, the mailbox servers, and (this machine may have 9101 taken) the metrics address."""
        set_config(CONFIG, {
            ("antivirus", "clamd"): f'["{self.clamd.address}"]',
            ("dns", "resolver"): '"127.0.0.1"',
            ("dns", "port"): str(self.dns_port),
            ("network", "trusted_relays"): f'["{MAILBOX_SERVER}"]',
            ("metrics", "listen"): f'"127.0.0.1:{self.metrics_port}"',
        })

    def doctor(self) -> tuple[int, dict[str, list[str]], str]:
        """`runuser -u govmilter -- govmilter doctor` on the private Postfix: exit status, the
        things looked at by level, the whole output."""
        result = as_user(USER, "/usr/sbin/govmilter", "doctor", "--postconf-dir", str(self.postfix.etc), check=False)
        found: dict[str, list[str]] = {"OK": [], "NOTE": [], "WARN": [], "FAIL": []}
        for line in result.stdout.splitlines():
            level, _, rest = line.partition(" ")
            if level in found:
                found[level].append(rest.strip().split(": ", 1)[0])
        assert result.returncode in (0, 1) and "Traceback" not in result.stderr, result.stdout + result.stderr
        return result.returncode, found, result.stdout

    def postconf(self, lines: dict[str, str]) -> None:
        """`postconf -e` of documented lines on the private Postfix, then `postfix reload`. Its queue
        directory is not /var/spool/postfix, so the socket is named by its absolute path."""
        edits = [f"{name} = {value.replace('unix:govmilter/govmilter.sock', f'unix:{SOCKET}')}"
                 for name, value in lines.items()]
        run("postconf", "-c", str(self.postfix.etc), "-e", *edits)
        run("postfix", "-c", str(self.postfix.etc), "reload")

    def command(self, exec_line: str) -> list[str]:
        """A command line of the installed unit, sandboxed as the unit would, without overrides."""
        return sandboxed(self.service, shlex.split(exec_line.lstrip("-+!@:")))

    def start_milter(self) -> None:
        self.service = unit_service(UNIT.read_text())
        env = unit_environment(self.service)
        assert env.get("GOVMILTER_CONFIG") == str(CONFIG)
        umask = int(self.service.get("UMask", ["0022"])[-1], 8)
        for pre in self.service.get("ExecStartPre", []):
            result = subprocess.run(self.command(pre), capture_output=True, text=True, env=env, umask=umask, cwd="/")
            assert result.returncode == 0, f"ExecStartPre={pre}: {result.stdout}{result.stderr}"
        [start] = self.service["ExecStart"]
        SOCKET.unlink(missing_ok=True)  # a socket left by the previous run is not this one's
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.command(start), stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                         env=env, umask=umask, cwd="/", start_new_session=True)

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"the installed govmilter exited: {self.log.read_text()[-3000:]}")
            return SOCKET.exists()

        wait_until(ready, 30, "the installed govmilter")

    def stop_milter(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                status = self.proc.wait(70)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                raise
            assert status == 0, f"the installed govmilter exited {status} at SIGTERM"
        self.proc = None

    def restart_milter(self) -> None:
        """`systemctl restart govmilter`: the unit's stop (SIGTERM), then its start."""
        self.stop_milter()
        self.start_milter()

    def stop(self) -> None:
        for stop in (self.postfix.stop, self.stop_milter, self.sink.stop, self.dns.stop, self.clamd.stop):
            try:
                stop()
            except Exception as exc:  # stop everything we can
                print(f"package test: stopping failed: {exc}")

    def send(self, subject: str, body: str = "Xin chao.\r\n") -> tuple[int, str, str]:
        data = message(subject, body)
        found = MESSAGE_ID.search(data)
        assert found
        reply = send(self.smtp_port, "sender@example.com", ["user@bacninh.gov.vn"], data, source_ip=INTERNET_CLIENT)
        return reply.code, reply.text, found.group(1).decode()

    def scrape(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as response:
            return str(response.read().decode())

    def health(self) -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/health", timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())


def set_config(path: Path, values: dict[tuple[str, str], str]) -> None:
    """Replace `key = ...` lines of a TOML file's tables, as an operator's editor would (in place:
    the owner and mode stay). Each key must be on exactly one line of its table."""
    lines = path.read_text().splitlines()
    for (table, key), value in values.items():
        current, hits = "", []
        for index, line in enumerate(lines):
            header = re.match(r"\[([A-Za-z0-9_.-]+)\]\s*$", line)
            if header:
                current = header.group(1)
            elif current == table and re.match(rf"{re.escape(key)}\s*=", line):
                hits.append(index)
        assert len(hits) == 1, f"[{table}] {key}: {len(hits)} lines in {path}"
        lines[hits[0]] = f"{key} = {value}"
    with open(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")


def metric(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert found, f"{name} not exported"
    return float(found.group(1))


def check_layout(user_groups: set[str], first_install: bool = True) -> None:
    assert pwd.getpwnam(USER).pw_shell == "/usr/sbin/nologin"
    assert {USER, "postfix"} <= user_groups, user_groups
    assert mode(CONFIG) == f"root:{USER} 0640"
    assert mode(RULES) == f"root:{OFFICERS} 2775"
    conffiles = run("dpkg-query", "-W", "-f=${Conffiles}", "govmilter").stdout
    shipped = sorted(line.split()[0] for line in conffiles.splitlines() if line.strip())
    assert shipped == sorted([str(CONFIG), *(str(RULES / name.name) for name in (ROOT / "rules").glob("*.toml"))])
    for rule_file in shipped[1:]:
        assert mode(Path(rule_file)) == f"root:{OFFICERS} 0664", (rule_file, mode(Path(rule_file)))
    assert mode(Path("/var/spool/govmilter")) == f"{USER}:{USER} 0750"
    assert mode(Path("/var/lib/govmilter")) == f"{USER}:{USER} 0750"
    assert mode(LAST_GOOD) == f"{USER}:{USER} 0750"  # the service keeps its last good rules here
    assert mode(SOCKET.parent) == f"{USER}:postfix 0750"
    if first_install:
        # the installed configuration: nothing trusted until the operator lists the mailbox servers
        assert re.search(r"^trusted_relays = \[\]$", CONFIG.read_text(), re.M)
        assert re.search(r"^monitor = true$", CONFIG.read_text(), re.M)
    unit = UNIT.read_text()
    for line in ("SyslogIdentifier=govmilter", "SyslogFacility=mail", "User=govmilter"):
        assert re.search(rf"^{line}$", unit, re.M), line
    assert not re.search(r"^ProcSubset=", unit, re.M)
    docs = re.findall(r"^Documentation=(\S+)$", unit, re.M)
    assert docs and all(doc.startswith("file:///usr/share/doc/govmilter/") for doc in docs), docs
    for doc in (doc.removeprefix("file://") for doc in docs):
        assert Path(doc).is_file(), f"Documentation= names {doc}, which the package does not install"
    for path in re.findall(r"^ReadWritePaths=(.*)$", unit, re.M)[0].split():
        assert Path(path).is_dir(), f"ReadWritePaths= names {path}, which the package does not make"
    assert Path("/etc/systemd/system/multi-user.target.wants/govmilter.service").is_symlink()  # enabled
    # systemd accepts the installed unit with its real paths (ExecStart= exists, users exist)
    verify = subprocess.run(["systemd-analyze", "verify", str(UNIT)], capture_output=True, text=True)
    assert verify.returncode == 0 and "govmilter.service" not in verify.stderr, verify.stderr
    # the venv runs on Debian's Python, not on the build machine's
    assert os.readlink(PREFIX / "bin" / "python3") == "/usr/bin/python3"
    as_user(USER, str(PREFIX / "bin" / "govmilter"), "config", "check", "--config", str(CONFIG))
    as_user(USER, str(PREFIX / "bin" / "govmilter"), "rules", "check", "--config", str(CONFIG))


def test_package_installs_as_documented_runs_upgrades_and_purges(workdir: Path) -> None:
    started = time.monotonic()
    deb1 = build(workdir, f"{TEST_SUFFIX}1")
    built = time.monotonic() - started
    run("dpkg", "-i", str(deb1))
    assert installed_version() == deb1.name.split("_")[1]
    uid, gid = pwd.getpwnam(USER).pw_uid, grp.getgrnam(USER).gr_gid
    officers_gid = grp.getgrnam(OFFICERS).gr_gid
    groups = set(as_user(USER, "id", "-nG").stdout.split())
    check_layout(groups)
    postfix_lines = documented_postfix_lines()

    daemon = InstalledDaemon(workdir)
    try:
        daemon.postfix.start()  # the gateway's Postfix, running before govmilter is installed
        # step 1: the configuration (step 2, the officers' group, is as_officer's)
        daemon.configure()
        as_user(USER, "/usr/sbin/govmilter", "config", "check")
        # step 4 on a bare gateway: no clamd, no resolver, Postfix as Debian ships it
        status, found, out = daemon.doctor()
        assert status == 1, out
        assert sorted(found["FAIL"]) == sorted([f"clamd {daemon.clamd.address}",
                                                f"resolver 127.0.0.1:{daemon.dns_port}"]), out
        assert {"non_smtpd_milters", "message_size_limit"} <= set(found["WARN"]), out
        # the private Postfix's queue directory is not /var/spool/postfix, where the socket is
        assert set(found["WARN"]) <= {"non_smtpd_milters", "message_size_limit", "socket and chroot"}, out
        assert {"smtpd_milters", "[milter] monitor"} <= set(found["NOTE"]), out
        assert {"config", f"rules {RULES}", "spool directory", "socket directory", "[network] trusted_relays",
                "milter_default_action", "milter_protocol"} <= set(found["OK"]), out
        # step 3: clamd with its signatures, and a resolver
        daemon.clamd.start()
        daemon.dns.start()
        daemon.sink.start()
        status, found, out = daemon.doctor()
        assert status == 0 and not found["FAIL"], out
        assert f"resolver 127.0.0.1:{daemon.dns_port}" in found["OK"], out
        # step 5: start it
        daemon.start_milter()
        # step 6: Postfix's lines but the milter ones, doctor, the milter lines, reload, doctor
        daemon.postconf({name: value for name, value in postfix_lines.items() if name not in MILTER_LINES})
        status, found, out = daemon.doctor()
        assert status == 0 and "message_size_limit" in found["OK"] and "smtpd_milters" in found["NOTE"], out
        daemon.postconf({name: postfix_lines[name] for name in MILTER_LINES})
        status, found, out = daemon.doctor()
        assert status == 0 and not found["FAIL"], out
        assert set(POSTFIX_CHECKS) <= set(found["OK"]), out
        # the lab's test signatures carry no date (WARN); the system's do (OK)
        assert set(found["WARN"]) <= {"socket and chroot", f"clamd {daemon.clamd.address}"}, out

        # mail flows: a clean message from the Internet goes through the installed milter to the mailbox
        code, text, message_id = daemon.send(f"package {unique()}")
        assert 200 <= code < 300, (code, text)
        delivered = daemon.sink.find_id(message_id)
        assert delivered.rcpts == ["user@bacninh.gov.vn"]
        metrics = daemon.scrape()
        assert "process_cpu_seconds_total" in metrics and "process_resident_memory_bytes" in metrics
        assert metric(metrics, "govmilter_rules_fallback") == 0
        assert daemon.health()[0] == 200

        # an officer edits a rule file in place, and creates one, with umask 077
        phrase = f"goi-kiem-thu-{unique()}"
        as_officer(
            f"printf '%s\\n' '' '[[rule]]' 'id = \"package-test\"' 'description = \"added by an officer\"' "
            f"'target = \"body\"' 'pattern = \"{phrase}\"' 'direction = \"inbound\"' 'action = \"reject\"' "
            f">> {RULES / 'content-spam.toml'}"
        )
        as_officer(
            f"printf '%s\\n' 'kind = \"content\"' '[[rule]]' 'id = \"officer-file\"' 'description = \"x\"' "
            f"'target = \"body\"' 'pattern = \"officer-file-{phrase}\"' 'direction = \"inbound\"' "
            f"'score = 1.0' > {RULES / 'officer.toml'}"
        )
        # the directory's default ACL, not the editor's umask 077, decides: officers and the service
        assert mode(RULES / "officer.toml") == f"nobody:{OFFICERS} 0664"
        as_user(USER, "cat", str(RULES / "officer.toml"))
        as_user(USER, str(PREFIX / "bin" / "govmilter"), "rules", "check", "--config", str(CONFIG))

        # monitor mode (as installed): the running daemon picks the edit up and only tags
        tagged: list[str] = []

        def tags() -> bool:
            code, text, message_id = daemon.send(f"monitor {unique()}", f"Noi dung {phrase} het.\r\n")
            assert 200 <= code < 300, (code, text)
            tag = daemon.sink.find_id(message_id).message.get("X-Govmilter-Monitor", "")
            tagged.append(tag)
            return "rule=package-test would=reject" in tag

        wait_until(tags, 20, f"a monitor tag after the rule edit (tags: {tagged[-3:]})")
        assert "would=reject" in daemon.log.read_text()

        # "Leaving monitor mode": monitor = false, systemctl restart; the edit now refuses
        set_config(CONFIG, {("milter", "monitor"): "false"})
        daemon.restart_milter()
        code, text, _ = daemon.send(f"enforce {unique()}", f"Noi dung {phrase} het.\r\n")
        assert code == 550, (code, text)
        # the service user kept the rule set it loaded, the officer's edit in it (what a broken start serves)
        version = daemon.health()[1]["ruleset"]
        kept = LAST_GOOD / version
        # (a root-owned entry here is another process on this machine running govmilter with the
        # default [rules] last_good_dir while the package is installed)
        assert kept.is_dir(), run("ls", "-la", str(LAST_GOOD)).stdout
        assert mode(kept) == f"{USER}:{USER} 0750" and mode(kept / "content-spam.toml") == f"{USER}:{USER} 0640"
        assert phrase in (kept / "content-spam.toml").read_text()
        assert os.readlink(LAST_GOOD / "current") == version

        # a broken rule file at start: the daemon starts on the last good rules, loudly
        daemon.stop_milter()
        as_officer(f"printf '%s\\n' 'kind = \"content\"' '[[rule]]' 'id = \"broken\"' > {RULES / 'broken.toml'}")
        assert as_user(USER, "/usr/sbin/govmilter", "rules", "check", check=False).returncode != 0
        daemon.start_milter()
        assert re.search(r"ERROR govmilter\.\S+: rules start=fallback .*broken\.toml", daemon.log.read_text())
        status_code, report = daemon.health()
        assert status_code == 503 and report["last_reload"] == "fallback", report
        assert report["ruleset"] == version and report["rules"]["serving"] == str(kept), (
            report, run("ls", "-la", str(LAST_GOOD)).stdout)
        assert metric(daemon.scrape(), "govmilter_rules_fallback") == 1
        code, text, _ = daemon.send(f"fallback {unique()}", f"Noi dung {phrase} het.\r\n")
        assert code == 550, (code, text)  # the officer's rule, from the last good copy
        # the officer fixes the directory: the daemon takes it back without a restart
        as_officer(f"rm {RULES / 'broken.toml'}")
        wait_until(lambda: daemon.health()[0] == 200, 20, "/health 200 after the fix")
        assert metric(daemon.scrape(), "govmilter_rules_fallback") == 0
    finally:
        daemon.stop()
    log = daemon.log.read_text()
    assert "Traceback" not in log and "cannot keep the last good copy" not in log, log[-3000:]

    # a rebuilt package whose shipped rules changed: the one the officer edited and one they did not
    rules_v2 = workdir / "rules-v2"
    shutil.copytree(ROOT / "rules", rules_v2)
    tag = unique()
    for name in ("content-spam.toml", "dnsbl.toml"):
        with open(rules_v2 / name, "a") as handle:
            handle.write(SHIPPED_CHANGE.format(tag=tag))
    deb2 = build(workdir, f"{TEST_SUFFIX}2", rules_v2)
    run("dpkg", "-i", "--force-confold", str(deb2))
    assert installed_version() == deb2.name.split("_")[1]
    spam = (RULES / "content-spam.toml").read_text()
    assert phrase in spam and tag not in spam  # the officer's edit kept
    assert tag in (RULES / "content-spam.toml.dpkg-dist").read_text()  # the shipped one beside it
    assert tag in (RULES / "dnsbl.toml").read_text()  # unedited: updated silently
    assert (RULES / "officer.toml").exists()
    config = CONFIG.read_text()  # the operator's configuration kept
    assert f'trusted_relays = ["{MAILBOX_SERVER}"]' in config and "monitor = false" in config
    assert not (CONFIG.parent / "govmilter.toml.dpkg-dist").exists()  # its shipped version did not change
    check_layout(groups, first_install=False)
    as_user(USER, "cat", str(RULES / "officer.toml"))
    assert (LAST_GOOD / "current").is_symlink()  # the state survives the upgrade

    run("dpkg", "--purge", "govmilter")
    assert installed_version() is None
    for name, lookup in ((USER, pwd.getpwnam), (USER, grp.getgrnam), (OFFICERS, grp.getgrnam)):
        with pytest.raises(KeyError):
            lookup(name)
    assert USER not in grp.getgrnam("postfix").gr_mem
    left = [str(path) for path in PATHS if path.exists() or path.is_symlink()]
    assert not left, left
    assert not leftovers(uid, gid, officers_gid)
    print(f"package test: first build {built:.1f}s, whole test {time.monotonic() - started:.1f}s")
