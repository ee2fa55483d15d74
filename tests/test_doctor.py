"""`govmilter doctor`: each probe against the real thing it looks at.

The rule files are real files with real modes, read by an unprivileged user (a forked child
that gave up root: root reads everything); clamd is the lab's (tests/support); the resolver is
the lab's dnsmasq and a socket that never answers; Postfix's settings come from `postconf -c`
on a main.cf the test writes.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from govmilter import doctor
from govmilter.checks.size import derived_raw_ceiling
from govmilter.clients.clamd import signatures_time
from govmilter.config import Config, load_config
from govmilter.doctor import Finding, Level, Options
from support.dns_fixture import LabDns, SilentDns
from support.harness import RULES
from support.lab_clamd import LabClamd
from support.redis_fixture import start_redis

NOBODY = pwd.getpwnam("nobody")
CEILING = derived_raw_ceiling(20971520)


def config(*overrides: str) -> Config:
    return load_config(None, list(overrides))


def levels(found: list[Finding]) -> dict[str, Level]:
    return {f.what: f.level for f in found}


def as_nobody(probe: Callable[[], list[Finding]]) -> list[Finding]:
    """Run a probe in a child that is the user nobody (no root rights), return its findings."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: give up root, probe, report, leave without running pytest's exit
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(NOBODY.pw_gid)
            os.setuid(NOBODY.pw_uid)
            data = json.dumps([[f.level.value, f.what, f.detail, f.fix] for f in probe()]).encode()
            os.write(write, data)
        finally:
            os._exit(0)
    os.close(write)
    chunks = []
    while block := os.read(read, 65536):
        chunks.append(block)
    os.close(read)
    os.waitpid(pid, 0)
    return [Finding(Level(level), what, detail, fix) for level, what, detail, fix in json.loads(b"".join(chunks))]


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory the user nobody can enter (pytest's tmp_path is root's alone)."""
    path = Path(f"/tmp/govmilter-doctor-{os.getpid()}-{time.monotonic_ns()}")
    path.mkdir(mode=0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# --- rule files -----------------------------------------------------------------------------------


def test_rule_files_that_load_are_ok() -> None:
    found, ruleset = doctor.probe_rules(config(f'rules.dir="{RULES}"'))
    assert [f.level for f in found] == [Level.OK] and ruleset is not None
    assert "forwarding" in found[0].detail


def test_a_rule_file_saved_with_umask_077_is_named_with_its_fix(public_dir: Path) -> None:
    rules = public_dir / "rules"
    shutil.copytree(RULES, rules)
    os.chmod(rules, 0o755)
    for path in rules.glob("*.toml"):
        os.chmod(path, 0o644)
    secret = rules / "content-regulation.toml"
    os.chmod(secret, 0o600)  # what an officer's editor writes under umask 077, owned by root
    settings = config(f'rules.dir="{rules}"')
    # root reads it anyway: the reason `rules check` as root said OK
    assert [f.level for f in doctor.probe_rules(settings)[0]] == [Level.OK]
    found = as_nobody(lambda: doctor.probe_rules(settings)[0])
    assert [(f.level, f.what) for f in found] == [(Level.FAIL, f"rule file {secret}")]
    assert "not readable by nobody" in found[0].detail
    assert f"chgrp root {secret}; chmod g+r,o+r {secret}" == found[0].fix  # the directory's group
    os.chmod(secret, 0o644)
    assert [f.level for f in as_nobody(lambda: doctor.probe_rules(settings)[0])] == [Level.OK]


def test_a_broken_rule_file_fails_with_the_rules_check_command(tmp_path: Path) -> None:
    shutil.copytree(RULES, tmp_path / "rules")
    (tmp_path / "rules" / "broken.toml").write_text('kind = "content"\n[[rule]]\nid = "x"\n')
    found, ruleset = doctor.probe_rules(config(f'rules.dir="{tmp_path / "rules"}"'))
    assert ruleset is None and found[0].level is Level.FAIL
    assert "broken.toml" in found[0].detail and found[0].fix.startswith("govmilter rules check")


def test_a_missing_rule_directory_fails(tmp_path: Path) -> None:
    found, _ = doctor.probe_rules(config(f'rules.dir="{tmp_path / "none"}"'))
    assert found[0].level is Level.FAIL and "no such directory" in found[0].detail


# --- clamd ------------------------------------------------------------------------------------------


def test_the_lab_clamd_answers_and_its_local_signatures_have_no_date(clamd: LabClamd) -> None:
    found = doctor.probe_clamd(config(f'antivirus.clamd=["{clamd.address}", "{clamd.tcp_address}"]'), 3.0)
    assert [f.what for f in found] == [f"clamd {clamd.address}", f"clamd {clamd.tcp_address}"]
    for finding in found:  # the lab loads a hand-written test database: no daily.cvd, no date
        assert finding.level is Level.WARN and "no signature database date" in finding.detail
        assert "ClamAV 1." in finding.detail


def test_a_stopped_clamd_fails_naming_its_address(clamd_factory: Callable[..., LabClamd]) -> None:
    server = clamd_factory()
    server.stop()
    found = doctor.probe_clamd(config(f'antivirus.clamd=["{server.address}"]'), 3.0)
    assert [(f.level, f.what) for f in found] == [(Level.FAIL, f"clamd {server.address}")]
    assert "clamav-daemon" in found[0].fix


class DatedClamd:
    """Answers PING and VERSION as clamd does with an official database of a given date.

    The lab's clamd cannot: clamd loads only signed official databases with a date, which a
    machine without the Internet does not have. Everything else is tested on the real one.
    """

    def __init__(self, version: str):
        self.version = version
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                command = conn.recv(64)
                conn.sendall(b"PONG\0" if command == b"zPING\0" else self.version.encode() + b"\0")

    def close(self) -> None:
        self.listener.close()


@pytest.mark.parametrize(("days", "level"), [(1, Level.OK), (10, Level.WARN)])
def test_the_signatures_age_from_version(days: int, level: Level) -> None:
    built = time.time() - days * 86400
    stamp = time.strftime("%a %b %e %H:%M:%S %Y", time.localtime(built))  # ctime(), as clamd writes it
    server = DatedClamd(f"ClamAV 1.4.6/27530/{stamp}")
    try:
        found = doctor.probe_clamd(config(f'antivirus.clamd=["tcp:127.0.0.1:{server.port}"]'), 3.0)
    finally:
        server.close()
    assert [f.level for f in found] == [level], found
    assert f"{days}.0 days old" in found[0].detail and "1.4.6/27530" in found[0].detail


def test_signatures_time_reads_ctime_and_refuses_the_rest() -> None:
    expected = time.mktime((2025, 1, 6, 9, 36, 2, 0, 0, -1))
    assert signatures_time("ClamAV 1.4.6/27530/Mon Jan  6 09:36:02 2025") == expected
    assert signatures_time("ClamAV 1.4.6") is None  # local signatures only
    assert signatures_time("ClamAV 1.4.6/27530/yesterday") is None


# --- DNS ----------------------------------------------------------------------------------------


def test_the_lab_resolver_answers_every_zones_test_point(lab_dns: LabDns) -> None:
    settings = config(f'rules.dir="{RULES}"', 'dns.resolver="127.0.0.1"', f"dns.port={lab_dns.port}")
    _, ruleset = doctor.probe_rules(settings)
    found = doctor.probe_dns(settings, ruleset)
    assert levels(found) == {
        f"resolver 127.0.0.1:{lab_dns.port}": Level.OK,
        "blocklist zen.spamhaus.org": Level.OK,
        "blocklist dbl.spamhaus.org": Level.OK,
        "blocklist multi.uribl.com": Level.OK,
    }


def test_a_zone_that_does_not_list_its_test_point_is_a_warning(tmp_path: Path) -> None:
    dns_server = LabDns(tmp_path, records=("2.0.0.127.zen.spamhaus.org,127.0.0.2",)).start()
    try:
        settings = config(f'rules.dir="{RULES}"', f"dns.port={dns_server.port}")
        _, ruleset = doctor.probe_rules(settings)
        found = levels(doctor.probe_dns(settings, ruleset))
    finally:
        dns_server.stop()
    assert found["blocklist zen.spamhaus.org"] is Level.OK
    assert found["blocklist multi.uribl.com"] is Level.WARN


def test_a_resolver_that_never_answers_fails(silent_dns: SilentDns) -> None:
    settings = config(f'rules.dir="{RULES}"', f"dns.port={silent_dns.port}")
    _, ruleset = doctor.probe_rules(settings)
    found = doctor.probe_dns(settings, ruleset)
    assert [(f.level, f.what) for f in found] == [(Level.FAIL, f"resolver 127.0.0.1:{silent_dns.port}")]
    assert silent_dns.received >= 1


# --- directories --------------------------------------------------------------------------------


def test_directories_writable_missing_and_outside_the_chroot(public_dir: Path) -> None:
    spool = public_dir / "spool"
    spool.mkdir(mode=0o700)  # root's
    queue = public_dir / "postfix"
    (queue / "govmilter").mkdir(parents=True, mode=0o755)
    os.chmod(queue / "govmilter", 0o777)
    settings = config(f'milter.spool_dir="{spool}"', f'milter.socket="unix:{queue}/govmilter/govmilter.sock"')
    found = levels(doctor.probe_directories(settings, str(queue)))
    assert found == {"spool directory": Level.OK, "socket directory": Level.OK, "socket and chroot": Level.OK}
    as_other = levels(as_nobody(lambda: doctor.probe_directories(settings, str(queue))))
    assert as_other["spool directory"] is Level.FAIL and as_other["socket directory"] is Level.OK
    elsewhere = config(f'milter.spool_dir="{public_dir / "none"}"', f'milter.socket="unix:{spool}/g.sock"')
    found = levels(doctor.probe_directories(elsewhere, str(queue)))
    assert found == {"spool directory": Level.FAIL, "socket directory": Level.OK, "socket and chroot": Level.WARN}


# --- Postfix ------------------------------------------------------------------------------------

SOCKET = "unix:/var/spool/postfix/govmilter/govmilter.sock"


def private_postfix(directory: Path, *lines: str) -> Options:
    directory.mkdir(exist_ok=True)
    (directory / "main.cf").write_text("compatibility_level = 3.6\n" + "".join(f"{line}\n" for line in lines))
    return Options(postconf_dir=str(directory))


WIRED = (
    "smtpd_milters = unix:govmilter/govmilter.sock",
    "non_smtpd_milters = unix:govmilter/govmilter.sock",
    "milter_default_action = tempfail",
    "milter_protocol = 6",
    "milter_command_timeout = 30s",
    "milter_content_timeout = 300s",
    "message_size_limit = 41943040",
)


def test_postfix_wired_as_documented_is_all_ok(tmp_path: Path) -> None:
    found, queue = doctor.probe_postfix(config(f'milter.socket="{SOCKET}"'), private_postfix(tmp_path, *WIRED))
    assert queue == "/var/spool/postfix"
    assert {f.level for f in found} == {Level.OK}, [f.line() for f in found]
    assert "names unix:govmilter/govmilter.sock" in found[0].detail


def test_postfix_wired_with_the_wrong_settings_fails_each_with_its_fix(tmp_path: Path) -> None:
    options = private_postfix(
        tmp_path,
        "smtpd_milters = { unix:govmilter/govmilter.sock, default_action = accept }",
        "milter_default_action = accept",
        "milter_protocol = 2",
        "milter_content_timeout = 30s",
        f"message_size_limit = {CEILING}",
    )
    found = {f.what: f for f in doctor.probe_postfix(config(f'milter.socket="{SOCKET}"'), options)[0]}
    assert found["smtpd_milters"].level is Level.OK
    assert found["non_smtpd_milters"].level is Level.WARN
    for name in ("milter_default_action", "milter_protocol", "milter_content_timeout", "message_size_limit"):
        assert found[name].level is Level.FAIL, found[name]
        assert found[name].fix.startswith(f"postconf -e {name}="), found[name]
    assert "delivered unchecked" in found["milter_default_action"].detail
    assert found["milter_command_timeout"].level is Level.OK  # Postfix's default, 30s


def test_postfix_not_yet_wired_warns_instead_of_failing(tmp_path: Path) -> None:
    found = {f.what: f for f in doctor.probe_postfix(config(), private_postfix(tmp_path))[0]}
    assert found["smtpd_milters"].level is Level.NOTE
    assert "unix:govmilter/govmilter.sock" in found["smtpd_milters"].fix
    assert found["message_size_limit"].level is Level.WARN  # Postfix's default 10240000
    assert found["milter_default_action"].level is Level.OK  # Postfix's default
    assert found["milter_protocol"].level is Level.OK


def test_postfix_naming_another_socket_fails(tmp_path: Path) -> None:
    options = private_postfix(tmp_path, "smtpd_milters = unix:other/milter.sock")
    found = {f.what: f for f in doctor.probe_postfix(config(), options)[0]}
    assert found["smtpd_milters"].level is Level.FAIL


def test_no_postfix_configuration_fails(tmp_path: Path) -> None:
    found, _ = doctor.probe_postfix(config(), Options(postconf_dir=str(tmp_path / "none")))
    assert [(f.level, f.what) for f in found] == [(Level.FAIL, "Postfix")]


def test_postfix_time_values() -> None:
    assert doctor.postfix_seconds("300s") == 300 and doctor.postfix_seconds("5m") == 300
    assert doctor.postfix_seconds("30") == 30 and doctor.postfix_seconds("$x") is None


# --- policy and the command ------------------------------------------------------------------------


def test_no_trusted_relay_and_the_monitor_switch_are_noted() -> None:
    found = {f.what: f for f in doctor.probe_policy(config("network.trusted_relays=[]", "milter.monitor=true"))}
    assert found["[network] trusted_relays"].level is Level.NOTE
    assert "outbound mail from mailbox servers will be judged as inbound" in found["[network] trusted_relays"].detail
    assert found["[milter] monitor"].level is Level.NOTE


def test_redis_is_probed_once_per_url_and_a_silent_one_warns_with_the_fallback(tmp_path: Path) -> None:
    server = start_redis(tmp_path)
    try:
        both = (f'forwarding.redis_url="{server.url}"', f'ratelimit.redis_url="{server.url}"')
        shared = doctor.probe_redis(config(*both))
        assert [(f.level, f.what, f.detail) for f in shared] == [
            (Level.OK, f"redis {server.url} ([forwarding], [ratelimit])", "answers PING")
        ]
    finally:
        server.stop()
    secret = f"redis://:hunter2@127.0.0.1:{server.port}/0"  # stopped: refused at once
    [down] = doctor.probe_redis(config(f'ratelimit.redis_url="{secret}"'))
    assert down.level is Level.WARN and "hunter2" not in down.line()
    assert "each node uses its own memory and buckets" in down.detail and "redis_url" in down.fix
    assert doctor.probe_redis(config()) == []  # none configured: nothing to say
    off = config(f'ratelimit.redis_url="{secret}"', "ratelimit.enabled=false")
    assert doctor.probe_redis(off) == []  # the check is off: its Redis is not needed


def test_the_command_exits_1_on_a_fail_and_names_it(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[milter]\nmonitr = true\n")
    result = subprocess.run(
        [sys.executable, "-m", "govmilter", "doctor", "--config", str(bad)], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert result.stdout.startswith("FAIL config: ") and "monitr" in result.stdout
