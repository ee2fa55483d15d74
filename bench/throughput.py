"""`make bench`: Postfix throughput alone, with govmilter (unix and inet) and with clamav-milter.

One private Postfix relays to Postfix's smtp-sink. By default the load is the traffic corpus of
bench/corpus.py (distinct messages in a provincial gateway's mix, both directions, sent by
bench/smtpload.py with PIPELINING and XCLIENT); `--load fixed` instead has `smtp-source` inject N
copies of one L-byte body over S parallel sessions (the milter's fixed cost). The variants are interleaved
over several rounds (each round in a rotated order) on the same machine in the
same run, and reported as ratios (the machines are shared and noisy: absolute numbers from another day
mean nothing). govmilter runs with every check on; the load plays Internet
clients sending to a local mailbox, so DNS blocklist lookups happen too.

With `--load fixed` smtp-source sends the same body every time, so after the first message the
scan cache answers for clamd (copies of one message are scanned once). The
"gov every copy" variant turns the cache off (antivirus.cache_ttl = 0): clamd
scans every message. On the corpus only circulars are copies, so the two differ little.

Both milters have clamd scan every message: the bench's clamd reads up to 100M (StreamMaxLength and
MaxFileSize, CLAMD_LIMIT), clamav-milter's MaxFileSize is set to the same (its default, 25M, would let the
corpus's large and oversized messages through unscanned, and they carry most of the bytes), and
govmilter's antivirus.clamd_max_file_size says the same to govmilter; clamd's own cache of clean
files is off (DisableCache), or every round after the first would send it the same corpus to
answer from memory. Its DNS serves the records with a TTL of 300 s, as the Internet does. The clamd runs the system's
signatures when they are installed, else the lab's test signatures (then clamd's cost is mostly
parsing: MIME, archives, documents).

`--large`: instead of the corpus, LARGE_COUNT messages of about 25 MB (an 18 MiB attachment of
random bytes in base64, distinct in every message, under the 20 MiB cap so they are accepted) over
LARGE_SESSIONS sessions at once, to govmilter and clamav-milter: the wall time of each and the peak
RSS of the milter process (VmHWM, and VmRSS sampled every 20 ms).

`--half-load` (on by default; `--no-half-load`) adds one round per variant sent open-loop at half
of that variant's saturated rate: the milter time per message users feel below saturation, from
govmilter's histogram, and for every variant (Postfix alone and clamav-milter too) the time the
load generator waits from the DATA payload's first byte to the reply: p50, p99, and p99 of the
messages under 1 MiB.

The outbound rate limits (checks/ratelimit/) run in every govmilter variant on the corpus's outbound
messages, with each node's own buckets (no Redis): the `ratelimit` row of the per-check shares is their
cost. `--ratelimit-redis` adds the variant "gov ratelimit redis": the same govmilter with the buckets in
a redis-server of the bench's own (emptied before each round, so no round inherits another's buckets),
and "gov no ratelimit" ([ratelimit] enabled = false): the cost of the check with and without Redis.

Every govmilter variant writes its decision history (history/: a SQLite file beside its log, as
the loopback stack's config names it). `--history` adds "gov history off" ([history] enabled =
false): "govmilter unix" / "gov history off" is the cost of the history (issue 21: >= 0.95).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lab"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import corpus as traffic
import smtpload

from stack import (
    Clamd,
    Dns,
    Govmilter,
    Postfix,
    SmtpSink,
    free_dns_port,
    free_port,
    govmilter_settings,
    proc_status_kb,
    wait_until,
)

ROOT = Path(__file__).resolve().parent.parent
# One size limit for every variant: the bench's clamd reads streams and files up to this
# (StreamMaxLength, MaxFileSize), clamav-milter scans messages up to it (MaxFileSize), and
# govmilter is told it (antivirus.clamd_max_file_size). Every corpus message fits under it,
# so both milters have clamd scan every message, the 30 MB ones included.
CLAMD_LIMIT = "100M"
CLAMD_LIMIT_BYTES = 100 * 2**20


class ClamavMilter:
    """Debian's clamav-milter on the same clamd, for comparison."""

    def __init__(self, root: Path, clamd_socket: Path):
        self.root = root
        self.socket = root / "clamav-milter.sock"
        self.clamd_socket = clamd_socket
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        conf = self.root / "clamav-milter.conf"
        conf.write_text(
            "\n".join(
                [
                    f"MilterSocket unix:{self.socket}",
                    "MilterSocketMode 666",
                    "FixStaleSocket true",
                    f"ClamdSocket unix:{self.clamd_socket}",
                    "Foreground true",
                    "OnClean Accept",
                    "OnInfected Reject",
                    "OnFail Defer",
                    "AddHeader Replace",
                    f"LogFile {self.root / 'clamav-milter.log'}",
                    f"TemporaryDirectory {self.root}",
                    # the bench's clamd scans up to 100M (CLAMD_LIMIT): so does clamav-milter, which
                    # otherwise passes larger messages unscanned (its MaxFileSize defaults to 25M)
                    f"MaxFileSize {CLAMD_LIMIT}",
                    "",
                ]
            )
        )
        log = open(self.root / "clamav-milter.out", "ab")
        self.proc = subprocess.Popen(["clamav-milter", "--config-file", str(conf)], stdout=log, stderr=log)
        wait_until(self.socket.exists, 30, "clamav-milter")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


LARGE_COUNT = 40
LARGE_SESSIONS = 20
LARGE_ATTACHMENT = 18 * 2**20  # decoded bytes: about 25 MB on the wire


def large_corpus(out: Path, count: int, attachment: int) -> None:
    """`count` distinct messages of one text line and one PDF of `attachment` random bytes, one per connection.

    Signed by their sender's domain, whose SPF, DMARC and key the bench's DNS serves (dns.json, as
    for the corpus): unsigned mail claiming a government domain from the Internet is refused as an
    impersonation before it is scanned, which is not what this run measures.
    """
    out.mkdir(parents=True, exist_ok=True)
    keys = traffic._keys(out)
    connections = []
    for number in range(count):
        rng = random.Random(number)
        writer = traffic._Writer(rng, number, "lan.nguyen1@hanoi.gov.vn", ["an.tran2@bacninh.gov.vn"], "Tai lieu lon")
        writer.text("Kinh gui anh chi tai lieu hop.\n")
        writer.attach(traffic._pdf(rng, attachment, "tai lieu"), "tai-lieu.pdf", "application/pdf")
        name = f"{number:06d}.eml"
        data = traffic._signed(writer.render(), keys["hanoi.gov.vn"])
        (out / name).write_bytes(data)
        sender, rcpts = "lan.nguyen1@hanoi.gov.vn", ["an.tran2@bacninh.gov.vn"]
        message = traffic.Message("large", "inbound", sender, rcpts, name, len(data))
        connections.append(traffic.Connection(f"192.0.2.{number % 250 + 1}", "mail1.example.net", [message]))
    (out / "manifest.json").write_text(json.dumps([dataclasses.asdict(c) for c in connections]))


class PeakRss:
    """The highest VmRSS of a process, read every 20 ms in a thread."""

    def __init__(self, pid: int):
        self.pid = pid
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            try:
                self.peak_kb = max(self.peak_kb, proc_status_kb(self.pid, "VmRSS"))
            except OSError:
                return

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class RedisForBench:
    """A redis-server without persistence on a free loopback port: the shared rate-limit buckets."""

    def __init__(self, root: Path):
        self.root = root
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.root)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_until(lambda: self._cli("PING") == "PONG", 15, "redis-server")

    def flush(self) -> None:
        self._cli("FLUSHALL")

    def _cli(self, *command: str) -> str:
        command_line = ["redis-cli", "-p", str(self.port), *command]
        done = subprocess.run(command_line, check=False, capture_output=True, text=True)
        return done.stdout.strip()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0  # utime + stime in clock ticks


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine, all cores, from /proc/stat."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields) - idle) / 100.0, sum(fields) / 100.0


def rss_mb(pid: int) -> float:
    return proc_status_kb(pid, "VmRSS") / 1024


def histogram(url: str, name: str) -> dict[float, float]:
    """Cumulative bucket counts of an unlabelled histogram from the exposition text."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    buckets: dict[float, float] = {}
    for match in re.finditer(rf'^{name}_bucket{{le="([^"]+)"}} (\S+)$', text, re.M):
        buckets[float(match.group(1))] = float(match.group(2))
    return buckets


def quantile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """Quantile of the observations between two scrapes, interpolated inside buckets."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    if total <= 0:
        return float("nan")
    rank = q * total
    previous_bound, previous_count = 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= rank:
            if bound == float("inf"):
                return previous_bound
            share = (rank - previous_count) / max(count - previous_count, 1e-9)
            return previous_bound + (bound - previous_bound) * share
        previous_bound, previous_count = bound, count
    return previous_bound


def check_seconds(url: str) -> dict[str, tuple[float, float]]:
    """(sum of seconds, calls) of each check from govmilter_check_duration_seconds."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    sums = dict(re.findall(r'^govmilter_check_duration_seconds_sum{check="([^"]+)"} (\S+)$', text, re.M))
    counts = dict(re.findall(r'^govmilter_check_duration_seconds_count{check="([^"]+)"} (\S+)$', text, re.M))
    return {name: (float(sums[name]), float(counts.get(name, 0))) for name in sums}


def inject(port: int, messages: int, sessions: int, length: int, sender: str, rcpt: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        ["smtp-source", "-s", str(sessions), "-m", str(messages), "-l", str(length),
         "-f", sender, "-t", rcpt, f"127.0.0.1:{port}"],
        check=True,
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return time.perf_counter() - started


def baseline_govmilter(tree: Path, root: Path, settings: Callable[..., dict[str, str]]) -> Govmilter:
    """The every-copy govmilter of another source tree, with that tree's rules and example config."""
    tree = tree.resolve()
    values = settings(f"unix:{root / 'milter'}/b.sock", ("antivirus.cache_ttl", "0"))
    values["rules.dir"] = f'"{tree / "rules"}"'
    baseline = Govmilter(root / "govmilter-baseline", values)
    baseline.root.mkdir(parents=True, exist_ok=True)
    shutil.copy(tree / "config.example.toml", baseline.root / "govmilter.toml")
    starter = (
        f"import sys; sys.path.insert(0, {str(tree / 'milter')!r});"
        " from govmilter.__main__ import main; sys.exit(main())"
    )
    baseline.entry = [sys.executable, "-c", starter]
    return baseline


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--load", choices=("corpus", "fixed"), default="corpus",
                        help="corpus: distinct messages of bench/corpus.py (default); fixed: smtp-source copies")
    # 500 messages x 5 rounds x 5 variants, and the half-load round: about 20 minutes on the 2-core machine
    parser.add_argument("--corpus-messages", type=int, default=500, help="messages in the corpus (--load corpus)")
    parser.add_argument("--seed", type=int, default=1, help="the corpus's seed")
    parser.add_argument("--large", action="store_true",
                        help=f"{LARGE_COUNT} messages of 25 MB, {LARGE_SESSIONS} in flight, instead of the corpus:"
                             " wall time and peak RSS (default variants: govmilter unix, clamav-milter)")
    parser.add_argument("--large-count", type=int, default=LARGE_COUNT, help="messages of 25 MB (--large)")
    parser.add_argument("--half-load", action=argparse.BooleanOptionalAction, default=True,
                        help="one more round per variant at half its saturated rate (open loop; corpus only)")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--length", type=int, default=10240)
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default: 5 on the corpus, 7 with --load fixed)")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--profile", help="py-spy the unix-socket govmilter of round 1 into this file")
    parser.add_argument("--perf", help="perf record the whole machine during round 1 of each variant into this folder")
    parser.add_argument(
        "--baseline", metavar="DIR",
        help="also run the 'baseline every copy' variant: the govmilter of another source tree (an earlier"
             " commit, `git archive REV | tar -x -C DIR`) with its own rules and example config, interleaved"
             " with the others, so that a change is measured against what it changes in one run",
    )  # fmt: skip
    parser.add_argument("--ratelimit-redis", action="store_true",
                        help="add the variants 'gov ratelimit redis' (buckets in Redis) and 'gov no ratelimit'")
    parser.add_argument("--history", action="store_true",
                        help="add the variant 'gov history off' ([history] enabled = false): every other govmilter"
                             " variant writes its decision history (SQLite beside its log); issue 21 targets"
                             " 'govmilter unix' >= 0.95 x 'gov history off'")
    parser.add_argument(
        "--only", action="append", metavar="VARIANT",
        help="run only these variants (repeatable), e.g. --only 'govmilter unix' --only 'govmilter inet'",
    )  # fmt: skip
    args = parser.parse_args()
    if args.rounds is None:
        args.rounds = 7 if args.load == "fixed" else 5

    # a SIGTERM (timeout, kill) runs the finally below too: no Postfix, clamd or milter is left behind
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    root = Path(tempfile.mkdtemp(prefix="govmilter-bench-"))
    root.chmod(0o755)
    smtp_port, sink_port, dns_port = free_port(), free_port(), free_dns_port()
    clamd = Clamd(
        root / "clamd",
        stream_max_length=CLAMD_LIMIT,
        # DisableCache: clamd remembers the hashes of clean files it scanned, so from round 2 on (the
        # same corpus again) it answered from its cache: measured 35-38 CPU s per 1 000 messages for
        # the first variant of each milter in round 1, 2.5-4.4 for every later one. Every round scans.
        settings={"MaxThreads": "8", "MaxFileSize": CLAMD_LIMIT, "DisableCache": "yes"},
        system_database=True,
    )
    # TTLs as on the Internet (minutes for SPF, DMARC, DKIM keys and blocklist answers): dnsmasq's
    # default local TTL is 0, which made govmilter's DNS cache useless and every message ask again
    dns = Dns(root / "dns", dns_port, ttl=300)
    sink = SmtpSink(sink_port)
    clamav_milter = ClamavMilter(root / "clamav-milter", clamd.socket)
    milter_dir = root / "milter"
    milter_dir.mkdir(mode=0o755)
    inet_port = free_port()
    metrics_port = free_port()
    def settings(socket: str, *extra: tuple[str, str]) -> dict[str, str]:
        values = govmilter_settings(
            socket=socket,
            spool_dir=root,
            rules_dir=ROOT / "rules",
            clamd_socket=clamd.socket,
            dns_port=dns_port,
            metrics_port=metrics_port,
        )
        # the load comes from 127.0.0.1: make it an Internet client so every check runs
        values["network.trusted_relays"] = '["10.0.0.0/8"]'
        values["log.level"] = '"warning"'
        values["antivirus.clamd_max_file_size"] = str(CLAMD_LIMIT_BYTES)  # the bench's clamd's MaxFileSize
        values.update(extra)
        return values

    govmilter_unix = Govmilter(root / "govmilter-unix", settings(f"unix:{milter_dir}/g.sock"))
    govmilter_inet = Govmilter(root / "govmilter-inet", settings(f"inet:{inet_port}@127.0.0.1"))
    # smtp-source sends one body to every recipient: without the scan cache clamd scans each copy
    govmilter_every_copy = Govmilter(
        root / "govmilter-every-copy", settings(f"unix:{milter_dir}/c.sock", ("antivirus.cache_ttl", "0"))
    )
    # sender authentication's cost (corpus load): inbound without the auth check, outbound without signing
    govmilter_auth_off = Govmilter(
        root / "govmilter-auth-off", settings(f"unix:{milter_dir}/a.sock", ("auth.enabled", "false"))
    )
    govmilter_signing_off = Govmilter(root / "govmilter-signing-off", settings(f"unix:{milter_dir}/s.sock"))
    # the corpus's clients are XCLIENT addresses outside mynetworks: the private Postfix relays for them
    relay_for_corpus = [
        "smtpd_authorized_xclient_hosts = 127.0.0.0/8",
        "mynetworks = 127.0.0.0/8 10.0.0.0/8 192.0.2.0/24 198.51.100.0/24 203.0.113.0/24",
    ]
    postfix = Postfix(root / "postfix", smtp_port, sink_port, "", relay_for_corpus)
    load: smtpload.Corpus | None = None
    sessions = args.sessions
    if args.large:
        large_corpus(root / "large", args.large_count, LARGE_ATTACHMENT)
        load = smtpload.Corpus(root / "large")
        sessions = LARGE_SESSIONS
        dns.txt = traffic.dns_records(root / "large")
        args.only = args.only or ["govmilter unix", "clamav-milter"]
        print(f"large: {load.messages} messages of {load.bytes / load.messages / 1e6:.1f} MB,"
              f" {sessions} in flight", flush=True)
    elif args.load == "corpus":
        traffic.build(args.seed, args.corpus_messages, root / "corpus")
        load = smtpload.Corpus(root / "corpus")
        # the corpus's SPF, DMARC and DKIM records; outbound mail of the local domain is signed
        # (by every variant but "gov signing off")
        dns.txt = traffic.dns_records(root / "corpus")
        key_file = traffic.signing_key(root / "corpus")
        keys = f'[{{domain="{traffic.LOCAL}", selector="{traffic.SELECTOR}", key_file="{key_file}"}}]'
        for signer in (govmilter_unix, govmilter_inet, govmilter_every_copy, govmilter_auth_off):
            signer.settings["dkim.keys"] = keys
        print(f"corpus: {load.messages} messages, {load.bytes / 2**20:.0f} MiB on the wire,"
              f" {len(load.connections)} connections (seed {args.seed})", flush=True)
    count = load.messages if load else args.messages
    megabytes = (load.bytes if load else args.messages * args.length) / 2**20
    govmilter_baseline = baseline_govmilter(Path(args.baseline), root, settings) if args.baseline else None
    variants: dict[str, tuple[str, Callable[[], None], Callable[[], None], Govmilter | None]] = {
        "no milter": ("", lambda: None, lambda: None, None),
        "govmilter unix": (f"unix:{milter_dir}/g.sock", govmilter_unix.start, govmilter_unix.stop, govmilter_unix),
        "govmilter inet": (f"inet:127.0.0.1:{inet_port}", govmilter_inet.start, govmilter_inet.stop, govmilter_inet),
        "clamav-milter": (f"unix:{clamav_milter.socket}", clamav_milter.start, clamav_milter.stop, None),
        "gov every copy": (
            f"unix:{milter_dir}/c.sock",
            govmilter_every_copy.start,
            govmilter_every_copy.stop,
            govmilter_every_copy,
        ),
    }
    redis_bench: RedisForBench | None = None
    if args.ratelimit_redis:
        redis_bench = RedisForBench(root / "redis")
        with_redis = Govmilter(
            root / "govmilter-ratelimit-redis",
            settings(f"unix:{milter_dir}/r.sock", ("ratelimit.redis_url", f'"{redis_bench.url}"')),
        )
        without = Govmilter(
            root / "govmilter-no-ratelimit", settings(f"unix:{milter_dir}/n.sock", ("ratelimit.enabled", "false"))
        )

        def start_with_redis(gov: Govmilter = with_redis, redis: RedisForBench = redis_bench) -> None:
            redis.flush()  # no round inherits the buckets another round emptied
            gov.start()

        variants["gov ratelimit redis"] = (f"unix:{milter_dir}/r.sock", start_with_redis, with_redis.stop, with_redis)
        variants["gov no ratelimit"] = (f"unix:{milter_dir}/n.sock", without.start, without.stop, without)
        extra_parts: list[Govmilter | RedisForBench] = [with_redis, without, redis_bench]
    else:
        extra_parts = []
    if args.history:
        history_off = Govmilter(
            root / "govmilter-history-off", settings(f"unix:{milter_dir}/h.sock", ("history.enabled", "false"))
        )
        if load and not args.large:
            history_off.settings["dkim.keys"] = govmilter_unix.settings.get("dkim.keys", "[]")
        variants["gov history off"] = (f"unix:{milter_dir}/h.sock", history_off.start, history_off.stop, history_off)
        extra_parts.append(history_off)
    if load and not args.large:
        variants["gov auth off"] = (
            f"unix:{milter_dir}/a.sock", govmilter_auth_off.start, govmilter_auth_off.stop, govmilter_auth_off
        )
        variants["gov signing off"] = (
            f"unix:{milter_dir}/s.sock", govmilter_signing_off.start, govmilter_signing_off.stop, govmilter_signing_off
        )
    if govmilter_baseline is not None:
        variants["baseline every copy"] = (
            f"unix:{milter_dir}/b.sock",
            govmilter_baseline.start,
            govmilter_baseline.stop,
            govmilter_baseline,
        )
    rates: dict[str, list[float]] = {name: [] for name in variants if not args.only or name in args.only}
    cpu: dict[str, list[float]] = {name: [] for name in rates if variants[name][3]}
    latency: dict[str, list[tuple[float, float]]] = {name: [] for name in cpu}
    rss: dict[str, list[float]] = {name: [] for name in cpu}
    machine: dict[str, list[float]] = {name: [] for name in rates}
    shares: dict[str, dict[str, list[float]]] = {name: {} for name in cpu}  # check -> ms per message, per round
    replies: dict[str, Counter[str]] = {name: Counter() for name in rates}
    generator_cpu: list[float] = []
    peak: dict[str, list[float]] = {name: [] for name in rates if name != "no milter"}  # milter peak RSS, MB
    hwm: dict[str, list[float]] = {name: [] for name in peak}  # VmHWM, MB
    wall: dict[str, list[float]] = {name: [] for name in rates}
    clamd_cpu: dict[str, list[float]] = {name: [] for name in rates}  # clamd CPU s per 1000 messages
    half: dict[str, tuple[float, float, float]] = {}  # variant -> (rate sent, p50, p99) of the milter
    # variant -> client-side seconds, DATA to its reply: p50, p99 of every message, p99 of those under 1 MiB
    felt_half: dict[str, tuple[float, float, float]] = {}
    try:
        clamd.start()
        dns.start()
        sink.start()
        if redis_bench is not None:
            redis_bench.start()
        postfix.start()
        names = args.only or list(variants)
        unknown = set(names) - set(variants)
        if unknown:
            parser.error(f"unknown variants {sorted(unknown)}; known: {list(variants)}")
        schedule = []
        for round_no in range(1, args.rounds + 1):
            # each round starts with another variant, so no variant always follows the same one
            shift = (round_no - 1) % len(names)
            schedule += [(round_no, name) for name in names[shift:] + names[:shift]]
        if args.half_load and load and not args.large:
            schedule += [(0, name) for name in names]  # round 0: half load, after the rates are known
        for round_no, name in schedule:
            half_rate = statistics.median(rates[name]) / 2 if round_no == 0 else None
            milter, start, stop, gov = variants[name]
            start()
            postfix.milter = milter
            postfix.reload()
            # the previous variant's mail may still be on its way to the sink: let it go first,
            # or this variant would pay for its delivery
            wait_until(lambda: postfix.queue_size() == 0, 300, "the queue to drain")
            time.sleep(1.0)
            url = f"http://127.0.0.1:{metrics_port}/metrics"
            before_cpu = cpu_seconds(gov.proc.pid) if gov and gov.proc else 0.0
            before_clamd = cpu_seconds(clamd.proc.pid) if clamd.proc else 0.0
            before_busy, before_total = machine_busy_seconds()
            before_hist = histogram(url, "govmilter_message_duration_seconds") if gov else {}
            before_checks = check_seconds(url) if gov else {}
            profilers: list[subprocess.Popen[bytes]] = []
            if args.profile and gov is govmilter_unix and round_no == 1 and gov.proc:
                profilers.append(subprocess.Popen(
                    [str(ROOT / ".venv/bin/py-spy"), "record", "--pid", str(gov.proc.pid), "--format", "raw",
                     "--output", args.profile, "--rate", "250", "--gil"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                ))  # fmt: skip
                time.sleep(1.0)
            if args.perf and round_no == 1:
                Path(args.perf).mkdir(parents=True, exist_ok=True)
                profilers.append(subprocess.Popen(
                    ["perf", "record", "-a", "-g", "-F", "499", "-e", "cpu-clock",
                     "-o", str(Path(args.perf) / (name.replace(" ", "-") + ".data"))],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                ))  # fmt: skip
                time.sleep(1.0)
            milter_proc = gov.proc if gov else clamav_milter.proc if name == "clamav-milter" else None
            sampler = PeakRss(milter_proc.pid) if milter_proc else None
            if sampler:
                sampler.__enter__()
            if load:
                sent = smtpload.send("127.0.0.1", smtp_port, load, sessions, half_rate)
                seconds = sent.seconds
                if sent.errors:
                    print(f"  {len(sent.errors)} connections failed, first: {sent.errors[0]}", flush=True)
            else:
                seconds = inject(smtp_port, args.messages, args.sessions, args.length,
                                 "bench@example.com", "user@bacninh.gov.vn")  # fmt: skip
            if sampler and milter_proc:
                sampler.__exit__()
                if round_no:
                    # the load's peak (sampled) and the process's (VmHWM, start-up included: each round
                    # starts the milter anew)
                    peak[name].append(sampler.peak_kb / 1024)
                    hwm[name].append(proc_status_kb(milter_proc.pid, "VmHWM") / 1024)
            for profiler in profilers:
                profiler.send_signal(signal.SIGINT)
                profiler.wait(30)
            rate = count / seconds
            label = f"round {round_no}" if round_no else "half load"
            line = f"{label}  {name:15s} {rate:7.1f} msg/s {megabytes / seconds:6.1f} MB/s"
            line += f"  queue {postfix.queue_size():4d}"
            if load:
                line += f"  load generator {sent.cpu_seconds * 1000 / count:.2f} CPU s/1000 msg"
            if round_no == 0:
                if load:
                    felt_half[name] = (sent.quantile(0.5), sent.quantile(0.99), sent.quantile(0.99, below=1 << 20))
                    line += "  client p50 {:.1f} ms  p99 {:.1f} ms  p99 under 1 MiB {:.1f} ms".format(
                        *(t * 1000 for t in felt_half[name]))
                if gov and gov.proc:
                    after_hist = histogram(url, "govmilter_message_duration_seconds")
                    p50, p99 = quantile(before_hist, after_hist, 0.5), quantile(before_hist, after_hist, 0.99)
                    half[name] = (rate, p50, p99)
                    line += f"  milter p50 {p50 * 1000:.1f} ms  p99 {p99 * 1000:.1f} ms"
                print(line, flush=True)
                stop()
                continue
            rates[name].append(rate)
            wall[name].append(seconds)
            if load:
                replies[name].update(sent.replies)
                generator_cpu.append(sent.cpu_seconds * 1000 / count)
            busy, total = machine_busy_seconds()
            clamd_used = (cpu_seconds(clamd.proc.pid) if clamd.proc else 0.0) - before_clamd
            machine[name].append((busy - before_busy) * 1000 / count)
            clamd_cpu[name].append(clamd_used * 1000 / count)
            line += f"  machine {(busy - before_busy) / (total - before_total):.0%} busy,"
            line += f" {machine[name][-1]:.2f} CPU s/1000 msg (clamd {clamd_used * 1000 / count:.2f})"
            if gov and gov.proc:
                used = cpu_seconds(gov.proc.pid) - before_cpu
                cpu[name].append(used * 1000 / count)
                after_hist = histogram(url, "govmilter_message_duration_seconds")
                p50, p99 = quantile(before_hist, after_hist, 0.5), quantile(before_hist, after_hist, 0.99)
                latency[name].append((p50, p99))
                rss[name].append(rss_mb(gov.proc.pid))
                for check, (total, _calls) in check_seconds(url).items():
                    spent = total - before_checks.get(check, (0.0, 0.0))[0]
                    shares[name].setdefault(check, []).append(spent * 1000 / count)
                line += f"  cpu {cpu[name][-1]:.2f} s/1000 msg  p50 {p50 * 1000:.1f} ms  p99 {p99 * 1000:.1f} ms"
                line += f"  rss {rss[name][-1]:.0f} MB"
            if peak.get(name):
                line += f"  peak rss {peak[name][-1]:.0f} MB (VmHWM {hwm[name][-1]:.0f} MB)  wall {seconds:.1f} s"
            print(line, flush=True)
            stop()
    finally:
        parts = (postfix, govmilter_unix, govmilter_inet, govmilter_every_copy, govmilter_baseline, clamav_milter,
                 govmilter_auth_off, govmilter_signing_off)  # fmt: skip
        for part in (*parts, *extra_parts, sink, dns, clamd):
            if part is None:
                continue
            try:
                part.stop()
            except Exception as exc:
                print(f"stopping {type(part).__name__}: {exc}", file=sys.stderr)

    median = {name: statistics.median(values) for name, values in rates.items()}
    print()
    if load:
        what = f"the corpus ({count} distinct messages, {megabytes:.0f} MiB, seed {args.seed})"
    else:
        what = f"{args.messages} messages of {args.length} bytes"
    print(f"{what}, {args.sessions} sessions, {args.rounds} rounds (median)")
    for name, value in median.items():
        print(f"  {name:15s} {value:7.1f} msg/s {value * megabytes / count:6.1f} MB/s")
    if load:
        print(f"  load generator: {statistics.median(generator_cpu):.2f} CPU s per 1000 messages (median)")
        for name, counted in replies.items():
            mix = ", ".join(f"{reply} {n}" for reply, n in sorted(counted.items()))
            print(f"  replies, {name}, all rounds: {mix}")
    pairs = {
        "govmilter unix / no milter": ("govmilter unix", "no milter"),
        "govmilter unix / clamav-milter": ("govmilter unix", "clamav-milter"),
        "govmilter inet / govmilter unix": ("govmilter inet", "govmilter unix"),
        "clamav-milter / no milter": ("clamav-milter", "no milter"),
        "every copy scanned / no milter": ("gov every copy", "no milter"),
        "every copy scanned / clamav-milter": ("gov every copy", "clamav-milter"),
        "baseline every copy / clamav-milter": ("baseline every copy", "clamav-milter"),
        "every copy scanned / baseline every copy": ("gov every copy", "baseline every copy"),
        "auth on / auth off (target >= 0.9)": ("govmilter unix", "gov auth off"),
        "signing on / signing off (target >= 0.9)": ("govmilter unix", "gov signing off"),
    }
    pairs = {label: (a, b) for label, (a, b) in pairs.items() if a in median and b in median}
    ratios = {label: median[a] / median[b] for label, (a, b) in pairs.items()}
    # the same ratio within each round (variants minutes apart), then its median: steadier on a noisy machine
    per_round = {
        label: statistics.median(x / y for x, y in zip(rates[a], rates[b], strict=True))
        for label, (a, b) in pairs.items()
    }
    print(f"  {'ratio':36s} {'of medians':>10s} {'median of per-round':>20s}")
    for label, value in ratios.items():
        print(f"  {label:36s} {value:10.2f} {per_round[label]:20.2f}")
    for name, values in machine.items():
        print(f"  {name:15s} whole machine {statistics.median(values):.2f} CPU s per 1000 messages,"
              f" clamd {statistics.median(clamd_cpu[name]):.2f}")
    for name, values in peak.items():
        if values:
            each = ", ".join(f"{v:.0f}" for v in values)
            print(f"  {name:15s} wall {statistics.median(wall[name]):.1f} s (median), milter peak RSS"
                  f" {max(values):.0f} MB under load (max over rounds; each round {each});"
                  f" VmHWM {max(hwm[name]):.0f} MB")
    if "govmilter unix" in wall and "clamav-milter" in wall:
        per_round_wall = [g / c for g, c in zip(wall["govmilter unix"], wall["clamav-milter"], strict=True)]
        print(f"  wall govmilter unix / clamav-milter: {statistics.median(per_round_wall):.2f} (median of"
              f" per-round; each {', '.join(f'{v:.2f}' for v in per_round_wall)})")
    for name in cpu:
        p50 = statistics.median(p for p, _ in latency[name]) * 1000
        p99 = statistics.median(p for _, p in latency[name]) * 1000
        print(
            f"  {name}: {statistics.median(cpu[name]):.2f} CPU s per 1000 messages,"
            f" milter time p50 {p50:.1f} ms p99 {p99:.1f} ms, RSS {max(rss[name]):.0f} MB"
        )
    for name, checks in shares.items():
        if checks:
            per_check = {check: statistics.median(values) for check, values in checks.items()}
            whole = sum(per_check.values()) or 1.0
            table = ", ".join(f"{check} {ms:.2f} ms ({ms / whole:.0%})" for check, ms in sorted(
                per_check.items(), key=lambda item: -item[1]))  # fmt: skip
            print(f"  {name}: time per message in each check: {table}")
    for name, (sent_rate, p50, p99) in half.items():
        felt = f"milter time p50 {p50 * 1000:.1f} ms p99 {p99 * 1000:.1f} ms"
        print(f"  {name} at half load ({sent_rate:.0f} msg/s): {felt}")
    for name, (p50, p99, p99_small) in felt_half.items():
        # the same clock for every variant, Postfix alone and clamav-milter included: from the DATA
        # payload's first byte to the reply (the transfer, Postfix, the milter and clamd)
        print(f"  {name} at half load, seen by the client: p50 {p50 * 1000:.1f} ms p99 {p99 * 1000:.1f} ms,"
              f" p99 of the messages under 1 MiB {p99_small * 1000:.1f} ms")  # fmt: skip
    if args.json:
        figures = {"rates": rates, "median": median, "ratios": ratios, "per_round": per_round, "cpu": cpu,
                   "latency": latency, "rss": rss, "shares": shares, "half_load": half, "half_load_client": felt_half,
                   "replies": replies, "generator_cpu": generator_cpu, "peak_rss": peak, "vmhwm": hwm, "wall": wall,
                   "clamd_cpu": clamd_cpu}  # fmt: skip
        Path(args.json).write_text(json.dumps({**figures, "machine": machine}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
