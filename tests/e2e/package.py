"""Building, installing and inspecting the Debian package for tests/e2e/test_package_e2e.py."""

from __future__ import annotations

import grp
import os
import pwd
import shlex
import subprocess
from pathlib import Path

from support.harness import ROOT

PACKAGE = "govmilter"
TEST_SUFFIX = "+e2etest"  # only a package with this in its version is ever purged by the tests
USER = "govmilter"
OFFICERS = "govmilter-officers"
PREFIX = Path("/opt/govmilter")
CONFIG = Path("/etc/govmilter/govmilter.toml")
RULES = Path("/etc/govmilter/rules")
SOCKET = Path("/var/spool/postfix/govmilter/govmilter.sock")
UNIT = Path("/lib/systemd/system/govmilter.service")
LAST_GOOD = Path("/var/lib/govmilter/last-good-rules")  # [rules] last_good_dir of the installed configuration
# every path the package or its postinst makes
PATHS = (
    Path("/etc/govmilter"),
    PREFIX,
    Path("/var/spool/govmilter"),
    Path("/var/lib/govmilter"),
    SOCKET.parent,
    UNIT,
    Path("/usr/sbin/govmilter"),
    Path("/usr/share/doc/govmilter"),
    Path("/etc/systemd/system/multi-user.target.wants/govmilter.service"),
    Path("/var/lib/systemd/deb-systemd-helper-enabled/govmilter.service.dsh-also"),
    Path("/var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants/govmilter.service"),
)


def run(*args: str, cwd: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """A command that must succeed; its output is in the failure message when it does not."""
    result = subprocess.run(args, capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd=cwd, env=env)
    assert result.returncode == 0, f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


def build(out_dir: Path, suffix: str, rules_dir: Path | None = None) -> Path:
    """packaging/build-deb.sh as `make deb` runs it; the path of the .deb."""
    env = dict(os.environ, DEB_OUT_DIR=str(out_dir), DEB_VERSION_SUFFIX=suffix)
    if rules_dir is not None:
        env["DEB_RULES_DIR"] = str(rules_dir)
    result = run("bash", str(ROOT / "packaging" / "build-deb.sh"), cwd=str(ROOT), env=env)
    deb = Path(result.stdout.strip().splitlines()[-1])
    assert deb.is_file() and deb.name.endswith(".deb"), result.stdout
    return deb


def installed_version() -> str | None:
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status} ${Version}", PACKAGE], capture_output=True, text=True
    )
    if result.returncode != 0:
        return None
    status, _, version = result.stdout.rpartition(" ")
    return None if status.endswith("not-installed") else version


def purge_test_install() -> None:
    """Remove a package left by an interrupted run of this test (never an operator's install)."""
    version = installed_version()
    if version is not None and TEST_SUFFIX in version:
        subprocess.run(["dpkg", "--purge", PACKAGE], capture_output=True, stdin=subprocess.DEVNULL)


def preexisting() -> str | None:
    """Why this machine must not run the test: a real govmilter is installed here."""
    version = installed_version()
    if version is not None and TEST_SUFFIX not in version:
        return f"govmilter {version} is installed on this machine; the package test would purge it"
    for name, lookup in ((USER, pwd.getpwnam), (OFFICERS, grp.getgrnam)):
        try:
            lookup(name)
            return f"{name} exists on this machine without the test's package"
        except KeyError:
            pass
    return None


def mode(path: Path) -> str:
    stat = path.stat()
    return f"{pwd.getpwuid(stat.st_uid).pw_name}:{grp.getgrgid(stat.st_gid).gr_name} {stat.st_mode & 0o7777:04o}"


def as_user(user: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """A command as the user with the groups /etc/group gives it (as `runuser -u` does)."""
    result = subprocess.run(["runuser", "-u", user, "--", *args], capture_output=True, text=True,
                            stdin=subprocess.DEVNULL)
    if check:
        assert result.returncode == 0, f"as {user}: {' '.join(args)}: {result.stdout}{result.stderr}"
    return result


def as_officer(script: str) -> None:
    """A shell script run as an officer: an unprivileged user in the officers' group, umask 077."""
    gid = grp.getgrnam(OFFICERS).gr_gid
    run("setpriv", "--reuid=nobody", f"--regid={gid}", "--clear-groups", "sh", "-c", f"umask 077; {script}")


def leftovers(uid: int, gid: int, officers_gid: int) -> list[str]:
    """Files anywhere the package could have written that still belong to its user or groups."""
    found = subprocess.run(
        ["find", "/etc", "/opt", "/var", "/usr", "/run", "/tmp", "-xdev",
         "(", "-uid", str(uid), "-o", "-gid", str(gid), "-o", "-gid", str(officers_gid), ")", "-print"],
        capture_output=True, text=True,
    )
    return found.stdout.split()


# --- the unit's settings, applied here without systemd ---------------------------------------------


def unit_service(text: str) -> dict[str, list[str]]:
    """The [Service] section of a unit: each key with its values in order."""
    settings: dict[str, list[str]] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line:
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def sandboxed(service: dict[str, list[str]], argv: list[str]) -> list[str]:
    """argv run as the unit runs it, for the settings that can be applied without systemd.

    A private mount namespace gives ProtectSystem=strict (everything read-only but
    ReadWritePaths=), PrivateTmp=, ProtectHome=, and ProtectProc=/ProcSubset= (a /proc mounted
    with hidepid= and subset=pid, which is what hides /proc/stat); setpriv gives User=, Group=
    (and the supplementary groups of /etc/group, where postinst put the postfix group),
    NoNewPrivileges= and an empty CapabilityBoundingSet=/AmbientCapabilities=. Not applied here:
    the system-call filter, MemoryDenyWriteExecute=, the IP address filter, PrivateDevices=.
    """

    def last(key: str, default: str = "") -> str:
        return service.get(key, [default])[-1]

    script = ["set -e"]
    if last("ProtectSystem") == "strict":
        for path in " ".join(service.get("ReadWritePaths", [])).split():
            script.append(f"mount --bind {shlex.quote(path)} {shlex.quote(path)}")
        script.append("mount -o remount,bind,ro /")
    if last("PrivateTmp") == "yes":
        script += ["mount -t tmpfs -o mode=1777 tmpfs /tmp", "mount -t tmpfs -o mode=1777 tmpfs /var/tmp"]
    if last("ProtectHome") == "yes":
        script += ["mount -t tmpfs -o mode=000 tmpfs /home", "mount -t tmpfs -o mode=000 tmpfs /root"]
    proc_options = []
    if last("ProtectProc") in ("invisible", "noaccess", "ptraceable"):
        proc_options.append(f"hidepid={last('ProtectProc')}")
    if last("ProcSubset") == "pid":
        proc_options.append("subset=pid")
    if proc_options:
        script.append(f"mount -t proc -o {','.join(proc_options)} proc /proc")
    drop = ["setpriv", f"--reuid={last('User')}", f"--regid={last('Group', last('User'))}", "--init-groups"]
    if last("NoNewPrivileges") == "yes":
        drop.append("--no-new-privs")
    if "CapabilityBoundingSet" in service and last("CapabilityBoundingSet") == "":
        drop += ["--bounding-set=-all", "--inh-caps=-all"]
    script.append("exec " + shlex.join([*drop, "--", *argv]))
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", "\n".join(script)]


def unit_environment(service: dict[str, list[str]]) -> dict[str, str]:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    for value in service.get("Environment", []):
        for item in shlex.split(value):
            key, _, val = item.partition("=")
            env[key] = val
    return env
