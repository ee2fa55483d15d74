"""`make bench-memory`: the milter's memory with big messages in flight and over many messages.

A private Postfix (relaying to Postfix's smtp-sink, which discards) runs
govmilter with every check on and the shipped rules, on a real clamd and
dnsmasq. The milter's RSS is read from /proc:

1. steady state: a mix of everyday messages (text, HTML, PDF, zip, a refused
   program, a virus, a uuencoded file) sent over 8 sessions; RSS after 1 000
   and after 5 000 messages. The target is no growth.
2. hostile text: 20 messages of one 1 MB text part of 0xFF bytes (each byte
   decodes to U+FFFD, the costliest text per input byte) in flight at once,
   then one message with a 22 MB text part; the peak RSS sampled every 20 ms.
   The target is a peak under 150 MB.
3. big messages: 20 messages of 25 MB (an 18 MiB attachment in base64) in
   flight at once; the peak RSS (VmHWM, and VmRSS sampled every 20 ms). The
   target is a peak under 64 MB.
4. big real PDFs: the same 20 x 25 MB, but the attachment is a valid PDF
   (bench/corpus.py's `_pdf`, as `bench/throughput.py --large` sends), sent
   inbound from an Internet client and outbound from a trusted relay
   (127.0.0.1) to an outside domain: outbound, the content rules read the
   document's text (pdftotext), so the whole document path is measured. The
   peak of each direction is read from a fresh milter (VmHWM is the process's
   high-water mark). The target is a peak under 64 MB.

`--phases` picks some of them (the start-up RSS is always read).

The walk alone (no daemon) is measured first with tracemalloc, on the same
25 MB message: Python heap at its peak while walking.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import io
import json
import random
import smtplib
import sys
import tempfile
import threading
import time
import tracemalloc
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "lab"))
sys.path.insert(0, str(ROOT / "milter"))
sys.path.insert(0, str(ROOT / "bench"))

import corpus as traffic  # noqa: E402

from govmilter.mime import walk  # noqa: E402
from stack import (  # noqa: E402
    EICAR,
    TESTFILES,
    Clamd,
    Dns,
    Govmilter,
    Postfix,
    SmtpSink,
    free_dns_port,
    free_port,
    govmilter_settings,
    proc_status_kb,
)

CLIENT = "127.0.0.3"  # an Internet client: every check runs (127.0.0.2 is DNS-listed)
RELAY = "127.0.0.1"  # a trusted relay (a mailbox server): its mail to outside domains is outbound
MIB = 1024 * 1024


# ---- messages ---------------------------------------------------------------------------------


def _entity(body: bytes, content_type: str, name: str = "", encoding: str = "base64") -> bytes:
    head = f"Content-Type: {content_type}" + (f'; name="{name}"' if name else "") + "\r\n"
    if name:
        head += f'Content-Disposition: attachment; filename="{name}"\r\n'
    head += f"Content-Transfer-Encoding: {encoding}\r\n\r\n"
    if encoding == "base64":
        body = base64.encodebytes(body).replace(b"\n", b"\r\n")
    return head.encode() + body


def _message(number: int, *parts: bytes, outbound: bool = False) -> bytes:
    author, recipient = ("sender@bacninh.gov.vn", "partner@example.com") if outbound else (
        f"sender{number % 50}@example.com", "user@bacninh.gov.vn")  # fmt: skip
    top = (
        f"From: <{author}>\r\nTo: <{recipient}>\r\n"
        f"Subject: bench {number}\r\nMessage-ID: <bench-{number}-{random.getrandbits(40):x}@example.com>\r\n"
        "MIME-Version: 1.0\r\n"
    ).encode()
    if len(parts) == 1:
        return top + parts[0]
    boundary = f"=_bench_{number}"
    body = b"".join(f"--{boundary}\r\n".encode() + part + b"\r\n" for part in parts)
    return top + f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'.encode() + body + (
        f"--{boundary}--\r\n".encode()
    )


def everyday(number: int) -> bytes:
    """One of eight kinds of message, in turn."""
    rng = random.Random(number)
    text = _entity(f"Kinh gui anh chi, van ban so {number}.\r\n".encode() * 20, "text/plain; charset=utf-8", "", "8bit")
    kind = number % 8
    if kind == 0:
        return _message(number, text)
    if kind == 1:
        html = _entity(b"<p>Kinh gui</p>" * 200, "text/html; charset=utf-8", "", "quoted-printable")
        return _message(number, text, html)
    if kind == 2:
        return _message(number, text, _entity(b"%PDF-1.4\n" + rng.randbytes(50_000), "application/pdf", "bc.pdf"))
    if kind == 3:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("bao cao.docx", rng.randbytes(10_000))
            archive.writestr("bang.xlsx", rng.randbytes(10_000))
        return _message(number, text, _entity(buffer.getvalue(), "application/zip", "ho so.zip"))
    if kind == 4:  # refused by the attachment rules
        return _message(number, text, _entity((TESTFILES / "clam.exe").read_bytes(), "application/pdf", "hd.pdf"))
    if kind == 5:  # refused by clamd
        return _message(number, text, _entity(EICAR, "application/octet-stream", "eicar.txt"))
    if kind == 6:
        payload = rng.randbytes(9_000)
        lines = b"".join(binascii.b2a_uu(payload[i : i + 45]) for i in range(0, len(payload), 45))
        uu = (b"Tep kem:\nbegin 644 bang.xls\n" + lines + b"`\nend\n").replace(b"\n", b"\r\n")
        return _message(number, _entity(uu, "text/plain", "", "7bit"))
    return _message(number, text, _entity(rng.randbytes(200_000), "image/jpeg", "anh.jpg"))


def big(number: int, attachment: int) -> bytes:
    return _message(number, _entity(b"x" * 100, "text/plain", "", "7bit"),
                    _entity(random.Random(number).randbytes(attachment), "application/pdf", "lon.pdf"))  # fmt: skip


def big_pdf(number: int, attachment: int, outbound: bool) -> bytes:
    """A 25 MB message whose attachment is a valid PDF of `attachment` bytes (a text page, an image stream)."""
    pdf = traffic._pdf(random.Random(number), attachment, f"Bao cao so {number}")
    return _message(number, _entity(b"Kinh gui anh chi.\r\n", "text/plain", "", "7bit"),
                    _entity(pdf, "application/pdf", "bao-cao.pdf"), outbound=outbound)  # fmt: skip


def hostile_text(number: int, size: int) -> bytes:
    """One text/plain part of `size` bytes of 0xFF declared UTF-8, in lines of 998 bytes."""
    line = b"\xff" * 998 + b"\r\n"
    body = line * (size // len(line) + 1)
    return _message(number, _entity(body[:size], "text/plain; charset=utf-8", "", "8bit"))


def send(port: int, data: bytes, outbound: bool = False) -> int:
    """One message; `outbound`: from a trusted relay, from a local sender to an outside recipient."""
    client_ip = RELAY if outbound else CLIENT
    with smtplib.SMTP("127.0.0.1", port, timeout=600, source_address=(client_ip, 0)) as client:
        client.ehlo("bench.example")
        client.mail("sender@bacninh.gov.vn" if outbound else "sender@example.com")
        client.rcpt("partner@example.com" if outbound else "user@bacninh.gov.vn")
        try:
            code, _ = client.data(data)
        except smtplib.SMTPDataError as exc:
            code = exc.smtp_code
    return code


# ---- measuring ----------------------------------------------------------------------------------


def mb(kb: int) -> float:
    return round(kb / 1024, 1)


class Sampler:
    """The highest VmRSS seen, read every 20 ms in a thread."""

    def __init__(self, pid: int):
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, proc_status_kb(self.pid, "VmRSS"))

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def walk_alone(data: bytes) -> dict[str, float]:
    def chunks() -> Iterator[bytes]:
        for i in range(0, len(data), 65536):
            yield data[i : i + 65536]

    tracemalloc.start()
    started = time.perf_counter()
    facts = walk(chunks())
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "message_mb": round(len(data) / 1e6, 1),
        "attachment_bytes": facts.attachment_bytes,
        "seconds": round(elapsed, 3),
        "python_heap_peak_mb": round(peak / MIB, 2),
    }


def run_many(port: int, numbers: range, sessions: int, make: Callable[[int], bytes]) -> dict[int, int]:
    codes: dict[int, int] = {}
    with ThreadPoolExecutor(sessions) as pool:
        for code in pool.map(lambda n: send(port, make(n)), numbers):
            codes[code] = codes.get(code, 0) + 1
    return codes


@contextlib.contextmanager
def lab_stack(extra: list[str]) -> Iterator[tuple[int, int]]:
    """A private Postfix, clamd, dnsmasq and govmilter; yields Postfix's SMTP port and the milter's pid."""
    root = Path(tempfile.mkdtemp(prefix="govmilter-bench-memory-"))
    root.chmod(0o755)
    smtp_port, sink_port, dns_port, metrics_port = free_port(), free_port(), free_dns_port(), free_port()
    clamd = Clamd(root / "clamd", settings={"MaxThreads": "8"}, system_database=True)
    dns = Dns(root / "dns", dns_port)
    milter_dir = root / "milter"
    milter_dir.mkdir(mode=0o755)
    socket = f"unix:{milter_dir}/g.sock"
    settings = govmilter_settings(
        socket=socket,
        spool_dir=root,
        rules_dir=ROOT / "rules",
        clamd_socket=clamd.socket,
        dns_port=dns_port,
        metrics_port=metrics_port,
    )
    settings["log.level"] = '"warning"'
    settings.update(item.split("=", 1) for item in extra)
    govmilter = Govmilter(root / "govmilter", settings)
    postfix = Postfix(root / "postfix", smtp_port, sink_port, socket, extra=["in_flow_delay = 0"])
    sink = SmtpSink(sink_port)
    try:
        sink.start()
        clamd.start()
        dns.start()
        govmilter.start()
        postfix.start()
        assert govmilter.proc is not None
        yield smtp_port, govmilter.proc.pid
    finally:
        for part in (postfix, govmilter, sink, dns, clamd):
            try:
                part.stop()
            except Exception as exc:
                print(f"stopping {type(part).__name__}: {exc}", file=sys.stderr)


def run_phases(args: argparse.Namespace, phases: set[str], figures: dict[str, object], smtp_port: int,
               pid: int) -> None:  # fmt: skip
    if "everyday" in phases:
        # RSS after every 1000 messages: growth that levels off is caches filling, growth that
        # goes on is a leak
        codes: dict[int, int] = {}
        trend: dict[int, float] = {}
        for start in range(0, args.messages, 1000):
            stop = min(start + 1000, args.messages)
            for code, count in run_many(smtp_port, range(start, stop), 8, everyday).items():
                codes[code] = codes.get(code, 0) + count
            time.sleep(1)
            trend[stop] = mb(proc_status_kb(pid, "VmRSS"))
            print(f"after {stop}: rss {trend[stop]} MB, replies {codes}", flush=True)
        figures["rss_trend_mb"] = trend
        figures["rss_after_1000_mb"] = trend.get(1000)
        figures["rss_after_5000_mb"] = trend.get(5000)
        figures["everyday_replies"] = codes

    if "hostile-text" in phases:
        hostile = [hostile_text(n, MIB) for n in range(20)]
        with Sampler(pid) as sampler, ThreadPoolExecutor(len(hostile)) as pool:
            hostile_codes = list(pool.map(lambda data: send(smtp_port, data), hostile))
        figures["hostile_text_20x1mb_peak_rss_sampled_mb"] = mb(sampler.peak)
        figures["hostile_text_20x1mb_replies"] = {c: hostile_codes.count(c) for c in set(hostile_codes)}
        with Sampler(pid) as sampler:
            figures["hostile_text_22mb_reply"] = send(smtp_port, hostile_text(99, 22 * MIB))
        figures["hostile_text_22mb_peak_rss_sampled_mb"] = mb(sampler.peak)
        figures["rss_after_hostile_text_mb"] = mb(proc_status_kb(pid, "VmRSS"))
        print("hostile text:", {k: v for k, v in figures.items() if "hostile" in k}, flush=True)

    if "big" in phases:
        figures.update(big_phase(args, smtp_port, pid, "", lambda n: big(n, args.big_attachment)))


def big_phase(args: argparse.Namespace, smtp_port: int, pid: int, prefix: str, make: Callable[[int], bytes],
              outbound: bool = False) -> dict[str, object]:  # fmt: skip
    """`args.big` messages from `make` in flight at once: the milter's peak RSS, the replies, the wall time."""
    messages = [make(n) for n in range(args.big)]
    figures: dict[str, object] = {f"{prefix}big_message_mb": round(len(messages[0]) / 1e6, 1)}
    with Sampler(pid) as sampler:
        started = time.perf_counter()
        with ThreadPoolExecutor(args.big) as pool:
            codes = list(pool.map(lambda data: send(smtp_port, data, outbound), messages))
        figures[f"{prefix}big_seconds"] = round(time.perf_counter() - started, 1)
    figures[f"{prefix}big_replies"] = {code: codes.count(code) for code in set(codes)}
    figures[f"{prefix}peak_rss_sampled_mb"] = mb(sampler.peak)
    figures[f"{prefix}peak_rss_vmhwm_mb"] = mb(proc_status_kb(pid, "VmHWM"))
    figures[f"{prefix}rss_after_big_mb"] = mb(proc_status_kb(pid, "VmRSS"))
    print(
        f"{prefix}{args.big} x {figures[f'{prefix}big_message_mb']} MB at once: peak rss"
        f" {figures[f'{prefix}peak_rss_vmhwm_mb']} MB (sampled {figures[f'{prefix}peak_rss_sampled_mb']} MB),"
        f" replies {figures[f'{prefix}big_replies']}",
        flush=True,
    )
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=5000, help="everyday messages (RSS read at 1000 and here)")
    parser.add_argument("--big", type=int, default=20, help="big messages in flight at once")
    parser.add_argument("--big-attachment", type=int, default=18 * MIB, help="decoded bytes per big message")
    parser.add_argument("--phases", default="everyday,hostile-text,big,big-pdf",
                        help="comma-separated: everyday, hostile-text, big, big-pdf")  # fmt: skip
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--set", action="append", default=[], metavar="TABLE.KEY=VALUE",
                        help="a govmilter setting for this run (repeatable)")  # fmt: skip
    args = parser.parse_args()
    phases = set(args.phases.split(","))

    figures: dict[str, object] = {}
    if "big" in phases:
        figures["walk_alone"] = walk_alone(big(0, args.big_attachment))
        print("walk alone:", figures["walk_alone"], flush=True)

    if phases - {"big-pdf"}:
        with lab_stack(args.set) as (smtp_port, pid):
            figures["rss_start_mb"] = mb(proc_status_kb(pid, "VmRSS"))
            run_phases(args, phases, figures, smtp_port, pid)
    if "big-pdf" in phases:
        for direction in ("inbound", "outbound"):
            with lab_stack(args.set) as (smtp_port, pid):  # a fresh milter: VmHWM is this direction's
                figures[f"big_pdf_{direction}_rss_start_mb"] = mb(proc_status_kb(pid, "VmRSS"))
                figures.update(big_phase(args, smtp_port, pid, f"big_pdf_{direction}_",
                                         lambda n, o=direction == "outbound": big_pdf(n, args.big_attachment, o),
                                         outbound=direction == "outbound"))  # fmt: skip

    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
