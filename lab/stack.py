"""The loopback mail stack: a private Postfix, clamd, dnsmasq, a capturing sink and govmilter.

Used by the end-to-end tests, `make run` and `make bench`. Every part is a
private instance in a directory of its own; the machine's /etc/postfix and
/etc/clamav are never touched.

    python lab/stack.py up      # the default stack on fixed ports, govmilter in the foreground
"""

from __future__ import annotations

import argparse
import email
import email.message
import email.policy
import hashlib
import os
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
TESTFILES = Path("/usr/share/clamav-testfiles")
SYSTEM_CLAMAV_DB = Path("/var/lib/clamav")
MESSAGE_ID = re.compile(rb"^Message-ID:\s*<([^>\r\n]+)>", re.I | re.M)

# DNS test entries: RFC 5782 test points as the public lists publish them
DNS_RECORDS = (
    "2.0.0.127.zen.spamhaus.org,127.0.0.2",
    "dbltest.com.dbl.spamhaus.org,127.0.1.2",
    "test.uribl.com.multi.uribl.com,127.0.0.14",
)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_dns_port() -> int:
    """A port free for both UDP and TCP: dnsmasq listens on both."""
    while True:
        port = free_port(socket.SOCK_DGRAM)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{what} did not come up within {timeout:.0f}s")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def proc_status_kb(pid: int, field: str) -> int:
    """A field of /proc/PID/status in kB (VmRSS, VmHWM), 0 if absent."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def govmilter_settings(
    *, socket: str, spool_dir: Path, rules_dir: Path, clamd_socket: Path, dns_port: int, metrics_port: int
) -> dict[str, str]:
    """`--set` values pointing govmilter at the parts of a loopback stack."""
    return {
        "milter.socket": f'"{socket}"',
        "milter.spool_dir": f'"{spool_dir}"',
        "rules.dir": f'"{rules_dir}"',
        "antivirus.clamd": f'["unix:{clamd_socket}"]',
        "dns.resolver": '"127.0.0.1"',
        "dns.port": str(dns_port),
        "metrics.listen": f'"127.0.0.1:{metrics_port}"',
        # no copy of the rules kept unless the caller gives a directory of its own: never the host's
        # /var/lib/govmilter, which is a real gateway's state where the package is installed
        "rules.last_good_dir": '""',
        # 127.0.0.1 plays a mailbox server (a trusted relay) here, not the gateway host
        "network.gateway_host": "[]",
    }


# --- clamd -------------------------------------------------------------------


def lab_signatures() -> dict[str, str]:
    """the lab's test database, file name -> content (Clamd's database unless the system's is asked for).

    test.hdb: the MD5 of the exact 68-byte EICAR file and of clam.exe. test.ndb: EICAR as a
    body signature at offset 0 of any file (target type 0), so that EICAR followed by a line
    break or other trailing white space is found, as the EICAR specification allows and as
    ClamAV's own database finds it; the hash alone matched only the exact 68 bytes, and a
    text part or quoted-printable attachment ending in CRLF went through as clean.
    """
    hashes = [f"{hashlib.md5(EICAR).hexdigest()}:{len(EICAR)}:Eicar-Test-Signature"]
    clam_exe = TESTFILES / "clam.exe"
    if clam_exe.exists():
        data = clam_exe.read_bytes()
        hashes.append(f"{hashlib.md5(data).hexdigest()}:{len(data)}:ClamAV-Test-File")
    return {
        "test.hdb": "\n".join(hashes) + "\n",
        "test.ndb": f"Eicar-Test-Signature:0:0:{EICAR.hex()}\n",
    }


CLAMD = shutil.which("clamd") or "/usr/sbin/clamd"


class Clamd:
    """A private clamd on a unix socket in `root` (and on 127.0.0.1:`tcp_port` when given).

    The one clamd of the lab, the tests (tests/support/lab_clamd.py) and the benchmarks. It runs
    from a directory of its own with the lab's test database (lab_signatures), so it starts in
    about a second with no Internet and never touches /etc/clamav or the system's clamd; with
    `system_database` the system's signatures are used when they are installed (`make run`).
    Usable as a context manager; stop() and start() again keep the same socket, which is how
    the tests play "clamd went away and came back".
    """

    def __init__(
        self,
        root: Path,
        *,
        tcp_port: int | None = None,
        stream_max_length: str = "100M",
        settings: dict[str, str] | None = None,
        start_timeout: float = 60.0,
        system_database: bool = False,
    ):
        self.root = Path(root)
        self.socket = self.root / "clamd.sock"
        self.tcp_port = tcp_port
        self.stream_max_length = stream_max_length
        self.settings = settings or {}
        self.start_timeout = start_timeout
        self.system_database = system_database
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        return self.socket

    @property
    def address(self) -> str:
        """The unix address in govmilter's configuration syntax."""
        return f"unix:{self.socket}"

    @property
    def tcp_address(self) -> str:
        if self.tcp_port is None:
            raise ValueError("this clamd has no TCP socket")
        return f"tcp:127.0.0.1:{self.tcp_port}"

    def database(self) -> Path:
        """The system signatures when asked for and present, else the lab's test signatures."""
        if self.system_database and any(SYSTEM_CLAMAV_DB.glob("*.c[lv]d")):
            return SYSTEM_CLAMAV_DB
        db = self.root / "db"
        db.mkdir(parents=True, exist_ok=True)
        for name, text in lab_signatures().items():
            (db / name).write_text(text)
        return db

    def _write_config(self) -> Path:
        settings = {
            "LocalSocket": str(self.socket),
            "DatabaseDirectory": str(self.database()),
            "TemporaryDirectory": str(self.root),
            "Foreground": "yes",
            "LogFile": str(self.root / "clamd.log"),
            "StreamMaxLength": self.stream_max_length,
            "AlertExceedsMax": "yes",  # nesting past the limits is an evasion technique
            "SelfCheck": "3600",
        }
        if self.tcp_port is not None:
            settings.update(TCPSocket=str(self.tcp_port), TCPAddr="127.0.0.1")
        settings.update(self.settings)
        config = self.root / "clamd.conf"
        config.write_text("".join(f"{key} {value}\n" for key, value in settings.items()))
        return config

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        self.socket.unlink(missing_ok=True)
        with open(self.root / "clamd.out", "ab") as out:  # the child keeps its own copy
            self.proc = subprocess.Popen(
                [CLAMD, "--config-file", str(config)], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = (self.root / "clamd.out").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"clamd exited with {self.proc.returncode}:\n{log}")
            if self.ping():
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"clamd did not answer PING within {self.start_timeout}s")

    def ping(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(2.0)
                sock.connect(str(self.socket))
                sock.sendall(b"zPING\0")
                return sock.recv(16).startswith(b"PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> Clamd:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- DNS ---------------------------------------------------------------------


class Dns:
    """dnsmasq answering test records on 127.0.0.1:port and NXDOMAIN for every other name."""

    def __init__(
        self,
        root: Path,
        port: int,
        records: Sequence[str] = DNS_RECORDS,
        ttl: int | None = None,
        txt: Sequence[tuple[str, str]] = (),
        options: Sequence[str] = (),
    ):
        self.root = root
        self.port = port
        self.records = records
        self.ttl = ttl
        self.txt = txt  # (name, text): SPF, DKIM and DMARC records of the authentication tests
        self.options = options  # more dnsmasq options (e.g. --server=/domain/address#port)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        args = [
            "dnsmasq",
            "--no-daemon",
            "--no-resolv",
            "--no-hosts",
            f"--port={self.port}",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--address=/#/",
            f"--pid-file={self.root / 'dnsmasq.pid'}",
            *(f"--host-record={r}" for r in self.records),
            # a TXT string holds 255 octets: a longer text (a DKIM key) is several strings, joined by readers
            *(f"--txt-record={name},{','.join(text[i : i + 255] for i in range(0, len(text), 255))}"
              for name, text in self.txt),
            *([f"--local-ttl={self.ttl}"] if self.ttl is not None else []),
            *self.options,
        ]
        log = open(self.root / "dnsmasq.out", "ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=log)
        wait_until(self._answers, 15, "dnsmasq")

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"dnsmasq exited: see {self.root / 'dnsmasq.out'}")
        query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.5)
            sock.sendto(query, ("127.0.0.1", self.port))
            return sock.recv(512)[:2] == b"\x12\x34"

    def stop(self) -> None:
        _terminate(self.proc)
        self.proc = None


# --- the capturing sink --------------------------------------------------------


@dataclass
class Delivered:
    mail_from: str
    rcpts: list[str]
    data: bytes

    @property
    def message(self) -> email.message.Message:
        return email.message_from_bytes(self.data, policy=email.policy.compat32)


class Sink:
    """An SMTP server that keeps what Postfix delivers (or writes it to a directory)."""

    def __init__(self, port: int, spool_dir: Path | None = None, announce: bool = False):
        from aiosmtpd.controller import Controller

        self.port = port
        self.messages: list[Delivered] = []
        self.by_message_id: dict[str, Delivered] = {}
        self.changed = threading.Condition()
        sink = self

        class Handler:
            async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
                item = Delivered(
                    envelope.mail_from,  # type: ignore[attr-defined]
                    list(envelope.rcpt_tos),  # type: ignore[attr-defined]
                    envelope.original_content or envelope.content,  # type: ignore[attr-defined]
                )
                if spool_dir is not None:
                    spool_dir.mkdir(parents=True, exist_ok=True)
                    path = spool_dir / f"{time.time():.6f}.eml"
                    path.write_bytes(item.data)
                    if announce:
                        print(f"sink: delivered from=<{item.mail_from}> to={item.rcpts} -> {path}", flush=True)
                found = MESSAGE_ID.search(item.data)
                with sink.changed:
                    sink.messages.append(item)
                    if found:
                        sink.by_message_id[found.group(1).decode(errors="replace")] = item
                    sink.changed.notify_all()
                return "250 OK"

        self.controller = Controller(
            Handler(), hostname="127.0.0.1", port=port, data_size_limit=0, decode_data=False
        )

    def start(self) -> None:
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()

    def wait_for(self, predicate: Callable[[Delivered], bool], timeout: float = 30) -> Delivered:
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for item in self.messages:
                    if predicate(item):
                        return item
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("the sink received no matching message")
                self.changed.wait(remaining)

    def find_id(self, message_id: str, timeout: float = 30) -> Delivered:
        """The delivered message with this Message-ID (without angle brackets)."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while message_id not in self.by_message_id:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"the sink received no message <{message_id}>")
                self.changed.wait(remaining)
            return self.by_message_id[message_id]

    def find(self, marker: str, timeout: float = 30) -> Delivered:
        """The delivered message whose bytes contain `marker` (a unique Message-ID or subject)."""
        needle = marker.encode()
        return self.wait_for(lambda item: needle in item.data, timeout)


class SmtpSink:
    """Postfix's smtp-sink: accepts and discards, for load (the capturing Sink is for tests)."""

    def __init__(self, port: int):
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["smtp-sink", "-u", "root", f"127.0.0.1:{self.port}", "1000"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: port_open(self.port), 10, "smtp-sink")

    def stop(self) -> None:
        _terminate(self.proc)
        self.proc = None


# --- Postfix -------------------------------------------------------------------


class Postfix:
    def __init__(self, root: Path, port: int, relay_port: int, milter: str, extra: Sequence[str] = ()):
        self.root = root
        self.port = port
        self.relay_port = relay_port
        self.milter = milter
        self.extra = extra
        self.etc = root / "etc"

    def write_config(self) -> None:
        for sub in ("etc", "queue", "data"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        shutil.chown(self.root / "data", user="postfix")
        self.etc.joinpath("master.cf").write_text(self._master_cf())
        main = [
            "compatibility_level = 3.6",
            f"queue_directory = {self.root / 'queue'}",
            f"data_directory = {self.root / 'data'}",
            f"maillog_file = {self.root / 'postfix.log'}",
            f"maillog_file_prefixes = /var, /dev/stdout, {self.root}",
            "inet_interfaces = loopback-only",
            "inet_protocols = ipv4",
            "myhostname = gateway.bacninh.gov.vn",
            "mydestination =",
            "mynetworks = 127.0.0.0/8",
            f"relayhost = [127.0.0.1]:{self.relay_port}",
            "smtpd_relay_restrictions = permit_mynetworks, reject",
            "smtpd_peername_lookup = no",
            "smtp_dns_support_level = disabled",
            f"smtpd_milters = {self.milter}",
            "milter_default_action = tempfail",
            "milter_protocol = 6",
            "message_size_limit = 73400320",
            "smtpd_client_connection_count_limit = 0",
            "default_process_limit = 100",
            "smtp_connection_cache_on_demand = yes",
        ]
        # an extra setting replaces the default of the same name: a key given twice makes every Postfix
        # process warn at start, and that burst of warnings can deadlock postlogd on its own socket
        extra = {line.split("=", 1)[0].strip(): line for line in self.extra}
        main = [extra.pop(line.split("=", 1)[0].strip(), line) for line in main] + list(extra.values())
        self.etc.joinpath("main.cf").write_text("\n".join(main) + "\n")

    def _master_cf(self) -> str:
        lines = []
        for line in Path("/usr/share/postfix/master.cf.dist").read_text().splitlines():
            fields = line.split()
            if line and not line[0].isspace() and not line.startswith("#") and len(fields) >= 8:
                if fields[0] == "smtp" and fields[1] == "inet":
                    fields[0] = f"127.0.0.1:{self.port}"
                fields[4] = "n"  # no chroot: the private instance lives outside /var/spool/postfix
                line = " ".join(fields)
            lines.append(line)
        return "\n".join(lines) + "\n"

    def postfix(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["postfix", "-c", str(self.etc), *args], capture_output=True, text=True)

    def start(self) -> None:
        self.write_config()
        check = self.postfix("check")
        if check.returncode != 0:
            raise RuntimeError(f"postfix check failed: {check.stderr}")
        started = self.postfix("start")
        if started.returncode != 0:
            raise RuntimeError(f"postfix start failed: {started.stderr} (see {self.root / 'postfix.log'})")
        wait_until(lambda: port_open(self.port), 30, "postfix")

    def reload(self) -> None:
        self.write_config()
        self.postfix("reload")

    def stop(self) -> None:
        self.postfix("stop")
        pid_file = self.root / "queue" / "pid" / "master.pid"
        deadline = time.monotonic() + 10
        while pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)

    def queue_size(self) -> int:
        count = 0
        for sub in ("incoming", "active", "deferred", "maildrop"):
            count += sum(len(files) for _, _, files in os.walk(self.root / "queue" / sub))
        return count


# --- govmilter ---------------------------------------------------------------------


class Govmilter:
    def __init__(self, root: Path, settings: dict[str, str], extra_args: Sequence[str] = ()):
        self.root = root
        self.settings = dict(settings)
        self.extra_args = list(extra_args)
        # what starts the daemon; a test may put a wrapper script here (fault injection)
        self.entry: list[str] = [str(VENV_BIN / "python"), "-m", "govmilter"]
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = root / "govmilter.log"
        self.history_path = root / "history.sqlite"  # [history] path, written into govmilter.toml

    def command(self) -> list[str]:
        args = [*self.entry, "run", "--config", str(self.root / "govmilter.toml")]
        for key, value in self.settings.items():
            args += ["--set", f"{key}={value}"]
        return args + self.extra_args

    def write_config(self) -> Path:
        """The example config, copied once; a later example replaces the copy only if nobody edited it."""
        path = self.root / "govmilter.toml"
        copied = self.root / ".govmilter.toml.sha256"  # the digest of the copy as written
        if path.exists():
            unedited = copied.exists() and copied.read_text() == hashlib.sha256(path.read_bytes()).hexdigest()
            if not unedited:
                return path  # the user's own config (or another tree's, bench --baseline): kept as it is
        example = self.example_config()
        path.write_bytes(example)
        copied.write_text(hashlib.sha256(example).hexdigest())
        return path

    def example_config(self) -> bytes:
        """The example config, with the history store beside the log: `govmilter trace --config
        <root>/govmilter.toml` reads what this stack's daemon writes (the stack's other settings
        are --set on the command line; trace needs only this one)."""
        text = (ROOT / "config.example.toml").read_text()
        default = 'path = "/var/lib/govmilter/history.sqlite"'
        if default not in text:
            raise RuntimeError(f"config.example.toml: [history] {default} not found; update lab/stack.py")
        return text.replace(default, f'path = "{self.history_path}"', 1).encode()

    def start(self, wait: bool = True) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.write_config()
        socket_path = self.settings.get("milter.socket", "").strip('"')
        if socket_path.startswith("unix:"):
            Path(socket_path.removeprefix("unix:")).unlink(missing_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=log, start_new_session=True)
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        socket_setting = self.settings.get("milter.socket", "").strip('"')

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"govmilter exited: {self.log_path.read_text()[-3000:]}")
            if socket_setting.startswith("unix:"):
                return Path(socket_setting.removeprefix("unix:")).exists()
            port = int(socket_setting.split(":")[1].split("@")[0])
            return port_open(port)

        wait_until(ready, 30, "govmilter")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        _terminate(self.proc, sig)
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


def _terminate(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


# --- sending ---------------------------------------------------------------------------


@dataclass
class Reply:
    code: int
    text: str
    stage: str  # connect | mail | rcpt | data | done

    @property
    def accepted(self) -> bool:
        return self.stage == "done" and 200 <= self.code < 300

    @property
    def message(self) -> str:
        """The text without what govmilter appends to a refusal (the helpdesk reference, the contact)."""
        lines = self.text.splitlines()
        for index, line in enumerate(lines):
            if "Ma tham chieu / reference: " in line:
                return "\n".join(lines[:index])
        return self.text


def send(
    port: int,
    mail_from: str,
    rcpts: Sequence[str],
    data: bytes,
    *,
    source_ip: str = "127.0.0.1",
    size: int | None = None,
    helo: str = "client.example",
    timeout: float = 120,
) -> Reply:
    """One SMTP transaction; the reply the client saw at the stage where it ended."""
    try:
        client = smtplib.SMTP("127.0.0.1", port, local_hostname=helo, timeout=timeout, source_address=(source_ip, 0))
    except (OSError, smtplib.SMTPException) as exc:
        return Reply(0, str(exc), "connect")
    try:
        client.ehlo(helo)
        options = [f"SIZE={size}"] if size is not None else []
        code, text = client.mail(mail_from, options)
        if code >= 400:
            return Reply(code, text.decode(errors="replace"), "mail")
        accepted = 0
        last = Reply(0, "", "rcpt")
        for rcpt in rcpts:
            code, text = client.rcpt(rcpt)
            if code < 400:
                accepted += 1
            else:
                last = Reply(code, text.decode(errors="replace"), "rcpt")
        if not accepted:
            return last
        try:
            code, text = client.data(data)
        except smtplib.SMTPDataError as exc:
            return Reply(exc.smtp_code, exc.smtp_error.decode(errors="replace"), "data")
        stage = "done" if code < 400 else "data"
        return Reply(code, text.decode(errors="replace"), stage)
    except smtplib.SMTPServerDisconnected as exc:
        return Reply(0, str(exc), "disconnected")
    finally:
        try:
            client.quit()
        except (OSError, smtplib.SMTPException):
            client.close()


# --- the whole stack ----------------------------------------------------------------------


@dataclass
class Stack:
    root: Path
    smtp_port: int = field(default_factory=free_port)
    sink_port: int = field(default_factory=free_port)
    dns_port: int = field(default_factory=free_dns_port)
    metrics_port: int = field(default_factory=free_port)
    milter_transport: str = "unix"  # unix | inet
    milter_port: int = field(default_factory=free_port)
    rules_source: Path = ROOT / "rules"
    sink_dir: Path | None = None
    announce: bool = False
    settings: dict[str, str] = field(default_factory=dict)
    dns_txt: Sequence[tuple[str, str]] = ()  # (name, text): SPF, DKIM and DMARC records the zone also answers

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)  # the postfix user must reach the milter socket below
        self.rules_dir = self.root / "rules"
        self.milter_socket = (
            f"unix:{self.root / 'milter' / 'govmilter.sock'}"
            if self.milter_transport == "unix"
            else f"inet:{self.milter_port}@127.0.0.1"
        )
        self.clamd = Clamd(self.root / "clamd", settings={"MaxThreads": "8"}, system_database=True)
        self.dns = Dns(self.root / "dns", self.dns_port, txt=self.dns_txt)
        self.sink = Sink(self.sink_port, self.sink_dir, self.announce)
        # the same endpoint in each side's syntax: libmilter's inet:port@host, Postfix's inet:host:port
        postfix_milter = (
            self.milter_socket if self.milter_transport == "unix" else f"inet:127.0.0.1:{self.milter_port}"
        )
        self.postfix = Postfix(self.root / "postfix", self.smtp_port, self.sink_port, postfix_milter)
        self.govmilter = Govmilter(self.root / "govmilter", self.milter_settings())

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    def milter_settings(self) -> dict[str, str]:
        settings = govmilter_settings(
            socket=self.milter_socket,
            spool_dir=self.root / "spool",
            rules_dir=self.rules_dir,
            clamd_socket=self.clamd.socket,
            dns_port=self.dns_port,
            metrics_port=self.metrics_port,
        )
        settings["rules.reload_interval"] = "0.5"
        settings["rules.last_good_dir"] = f'"{self.root / "last-good-rules"}"'  # not the host's /var/lib
        settings.update(self.settings)
        return settings

    def start(self) -> None:
        if not self.rules_dir.exists():
            shutil.copytree(self.rules_source, self.rules_dir)
        (self.root / "spool").mkdir(exist_ok=True)
        milter_dir = self.root / "milter"
        milter_dir.mkdir(exist_ok=True)
        os.chmod(milter_dir, 0o755)
        self.clamd.start()
        self.dns.start()
        self.sink.start()
        self.govmilter.start()
        self.postfix.start()

    def stop(self) -> None:
        for stop in (self.postfix.stop, self.govmilter.stop, self.sink.stop, self.dns.stop, self.clamd.stop):
            try:
                stop()
            except Exception as exc:  # stop everything we can
                print(f"stack: stopping failed: {exc}", file=sys.stderr)

    def restart_milter(self, entry: Sequence[str] | None = None, **settings: str) -> None:
        self.govmilter.stop()
        self.govmilter.settings.update(settings)
        if entry is not None:
            self.govmilter.entry = list(entry)
        self.govmilter.start()

    def send(self, mail_from: str, rcpts: Sequence[str], data: bytes, **kwargs: object) -> Reply:
        return send(self.smtp_port, mail_from, rcpts, data, **kwargs)  # type: ignore[arg-type]

    def scrape(self) -> str:
        with urllib.request.urlopen(f"{self.metrics_url}/metrics", timeout=10) as response:
            return str(response.read().decode())


def main() -> int:
    parser = argparse.ArgumentParser(description="the loopback mail stack with govmilter")
    parser.add_argument("command", choices=["up"])
    parser.add_argument("--root", default=str(ROOT / ".stack"))
    args = parser.parse_args()
    root = Path(args.root)
    stack = Stack(
        root,
        smtp_port=2525,
        sink_port=2526,
        dns_port=5353,
        metrics_port=9101,
        sink_dir=root / "sink",
        announce=True,
    )
    # make run: the rules are the repository's own, so an officer's edit there is reloaded live
    stack.rules_dir = ROOT / "rules"
    stack.govmilter.settings["rules.dir"] = f'"{stack.rules_dir}"'
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    try:
        stack.start()
        print(
            "\n".join(
                [
                    "govmilter stack is up:",
                    f"  Postfix (gateway)  127.0.0.1:{stack.smtp_port}",
                    f"  sink (delivered)   127.0.0.1:{stack.sink_port} -> {root / 'sink'}",
                    f"  metrics            {stack.metrics_url}/metrics  health: {stack.metrics_url}/health",
                    f"  govmilter log      {stack.govmilter.log_path}",
                    f"  history            .venv/bin/govmilter trace --config {stack.govmilter.root / 'govmilter.toml'}"
                    " --since 1h",
                    "  try: swaks --server 127.0.0.1:2525 --from officer@bacninh.gov.vn --to partner@example.com",
                    "Ctrl-C stops everything.",
                ]
            ),
            flush=True,
        )
        with open(stack.govmilter.log_path, "rb") as follow:
            follow.seek(0, 2)
            while not stopping.is_set():
                line = follow.readline()
                if line:
                    sys.stdout.write(line.decode(errors="replace"))
                    sys.stdout.flush()
                elif stack.govmilter.proc is not None and stack.govmilter.proc.poll() is not None:
                    print("govmilter exited", file=sys.stderr)
                    return 1
                else:
                    stopping.wait(0.2)
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
