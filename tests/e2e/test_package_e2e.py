"""The Debian package, as an operator gets it: build, install, run, mail, edit a rule, upgrade, purge.

`make deb` (packaging/build-deb.sh) is built, installed with dpkg on this machine, and the
INSTALLED daemon is run the way its unit runs it (its ExecStartPre= and ExecStart= lines,
Environment=, UMask=, User=, NoNewPrivileges=, no capabilities, and in a private mount namespace
ProtectSystem=strict with its ReadWritePaths=, PrivateTmp=, ProtectHome=, ProtectProc=/ProcSubset=:
see package.sandboxed) with --set overrides pointing at a private loopback clamd, dnsmasq and Postfix.
A message goes through and is
delivered; an officer (umask 077) edits a rule file and the daemon enforces it; a rebuilt package
whose shipped rules changed is installed over it (the officer's edit is kept, the shipped version
arrives as .dpkg-dist); `dpkg --purge` then leaves no user, group, file or directory of ours.
The machine's /etc/postfix and /etc/clamav are never touched. Refuses to run (fails) on a
machine where a real govmilter is installed.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.helpers import INTERNET_CLIENT, _lab_available, message, unique
from e2e.package import (
    CONFIG,
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
        self.postfix = Postfix(root / "postfix", self.smtp_port, self.sink.port, f"unix:{SOCKET}")
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / "govmilter.log"

    def command(self, exec_line: str) -> list[str]:
        """A command line of the installed unit, sandboxed as the unit would; `run` gets the overrides."""
        argv = shlex.split(exec_line.lstrip("-+!@:"))
        settings = {
            "antivirus.clamd": f'["unix:{self.clamd.socket}"]',
            "dns.resolver": '"127.0.0.1"',
            "dns.port": str(self.dns_port),
            "metrics.listen": f'"127.0.0.1:{self.metrics_port}"',
            "rules.reload_interval": "0.5",
            # the installed configuration starts in monitor mode (checked below); this run enforces,
            # to see an officer's rule edit refuse
            "milter.monitor": "false",
        }
        if argv[1:2] == ["run"]:
            for key, value in settings.items():
                argv += ["--set", f"{key}={value}"]
        return sandboxed(self.service, argv)

    def start(self) -> None:
        self.clamd.start()
        self.dns.start()
        self.sink.start()
        self.start_milter()
        self.postfix.start()

    def start_milter(self) -> None:
        self.service = unit_service(UNIT.read_text())
        env = unit_environment(self.service)
        assert env.get("GOVMILTER_CONFIG") == str(CONFIG)
        umask = int(self.service.get("UMask", ["0022"])[-1], 8)
        for pre in self.service.get("ExecStartPre", []):
            result = subprocess.run(self.command(pre), capture_output=True, text=True, env=env, umask=umask, cwd="/")
            assert result.returncode == 0, f"ExecStartPre={pre}: {result.stdout}{result.stderr}"
        [start] = self.service["ExecStart"]
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
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

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


def check_layout(user_groups: set[str]) -> None:
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
    assert mode(SOCKET.parent) == f"{USER}:postfix 0750"
    # the installed configuration: nothing trusted until the operator lists the mailbox servers
    assert re.search(r"^trusted_relays = \[\]$", CONFIG.read_text(), re.M)
    assert re.search(r"^monitor = true$", CONFIG.read_text(), re.M)
    unit = UNIT.read_text()
    for line in ("SyslogIdentifier=govmilter", "SyslogFacility=mail", "User=govmilter"):
        assert re.search(rf"^{line}$", unit, re.M), line
    assert not re.search(r"^ProcSubset=", unit, re.M)
    for doc in re.findall(r"^Documentation=file://(\S+)$", unit, re.M):
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


def test_package_builds_installs_runs_upgrades_and_purges(workdir: Path) -> None:
    started = time.monotonic()
    deb1 = build(workdir, f"{TEST_SUFFIX}1")
    built = time.monotonic() - started
    run("dpkg", "-i", str(deb1))
    assert installed_version() == deb1.name.split("_")[1]
    uid, gid = pwd.getpwnam(USER).pw_uid, grp.getgrnam(USER).gr_gid
    officers_gid = grp.getgrnam(OFFICERS).gr_gid
    groups = set(as_user(USER, "id", "-nG").stdout.split())
    check_layout(groups)

    daemon = InstalledDaemon(workdir)
    try:
        daemon.start()
        # a clean message from the Internet goes through the installed milter to the mailbox
        code, text, message_id = daemon.send(f"package {unique()}")
        assert 200 <= code < 300, (code, text)
        delivered = daemon.sink.find_id(message_id)
        assert delivered.rcpts == ["user@bacninh.gov.vn"]
        metrics = daemon.scrape()
        assert "process_cpu_seconds_total" in metrics and "process_resident_memory_bytes" in metrics

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

        # the running daemon picks the edit up and refuses the phrase
        replies: list[tuple[int, str]] = []

        def refused() -> bool:
            code, text, _ = daemon.send(f"edit {unique()}", f"Noi dung {phrase} het.\r\n")
            replies.append((code, text))
            return code == 550

        wait_until(refused, 20, f"a refusal after the rule edit (replies: {replies[-3:]})")
    finally:
        daemon.stop()
    assert "Traceback" not in daemon.log.read_text()

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
    check_layout(groups)
    as_user(USER, "cat", str(RULES / "officer.toml"))

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
