"""Send a corpus (bench/corpus.py) to an SMTP server: distinct messages, many sessions, PIPELINING.

Each connection of the corpus plays its client with XCLIENT (the server must authorize loopback:
`smtpd_authorized_xclient_hosts = 127.0.0.0/8`), so one loopback load generator is Internet senders
from their own addresses and mailbox servers relaying from 10.x. MAIL, RCPT and DATA go in one
write (PIPELINING); messages are held in memory dot-stuffed, so sending one is one write.

Open loop when `rate` is given: message i is not sent before i / rate seconds, which measures the
latency users feel below saturation; otherwise as fast as the server answers. The generator's own
CPU time is measured and reported, so that a reader can see it was not the bottleneck.
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from corpus import Connection, Message, load


@dataclass
class Result:
    seconds: float = 0.0
    messages: int = 0
    bytes: int = 0
    replies: Counter[str] = field(default_factory=Counter)  # "250", "550 5.7.1", ...
    latencies: list[float] = field(default_factory=list)  # end of DATA to the reply, seconds
    sizes: list[int] = field(default_factory=list)  # the size of the message of each latency, bytes
    cpu_seconds: float = 0.0  # the generator's own CPU
    errors: list[str] = field(default_factory=list)

    def quantile(self, q: float, below: int | None = None) -> float:
        """The q-quantile of the latencies, of the messages under `below` bytes only when given."""
        chosen = self.latencies if below is None else [
            t for t, size in zip(self.latencies, self.sizes, strict=True) if size < below]  # fmt: skip
        ordered = sorted(chosen)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def wire(data: bytes) -> bytes:
    """The DATA payload: CRLF lines, leading dots doubled, the final dot."""
    data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    stuffed = data.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    return stuffed + b".\r\n"


class Corpus:
    """A corpus folder loaded once: connections, and every message's wire bytes in memory."""

    def __init__(self, folder: Path):
        self.connections = load(folder)
        self.data = {m.file: wire((folder / m.file).read_bytes()) for c in self.connections for m in c.messages}
        self.messages = sum(len(c.messages) for c in self.connections)
        self.bytes = sum(len(value) for value in self.data.values())


async def _reply(reader: asyncio.StreamReader) -> str:
    """One SMTP reply (multi-line collapsed): "250", or the code and enhanced code of a refusal."""
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("connection closed")
        if line[3:4] != b"-":
            text = line.decode("ascii", "replace").strip()
            code = text[:3]
            if code.startswith("2"):
                return code
            enhanced = text[4:].split(" ", 1)[0]
            return f"{code} {enhanced}" if enhanced[:1].isdigit() else code


async def _connection(
    host: str,
    port: int,
    conn: Connection,
    corpus: Corpus,
    result: Result,
    start: float,
    rate: float | None,
    index: int,
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        await _reply(reader)
        writer.write(b"EHLO load.example\r\n")
        await _reply(reader)
        writer.write(f"XCLIENT ADDR={conn.client_addr} NAME=[UNAVAILABLE] HELO={conn.helo}\r\n".encode())
        code = await _reply(reader)
        if code != "220":
            raise ConnectionError(f"XCLIENT answered {code}: authorize the load generator")
        writer.write(f"EHLO {conn.helo}\r\n".encode())
        await _reply(reader)
        for offset, message in enumerate(conn.messages):
            if rate:
                delay = start + (index + offset) / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            await _send(reader, writer, message, corpus, result)
        writer.write(b"QUIT\r\n")
        await writer.drain()
    finally:
        writer.close()


async def _send(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, message: Message, corpus: Corpus, result: Result
) -> None:
    data = corpus.data[message.file]
    envelope = [f"MAIL FROM:<{message.mail_from}> SIZE={len(data)}"]
    envelope += [f"RCPT TO:<{rcpt}>" for rcpt in message.rcpts]
    writer.write(("\r\n".join([*envelope, "DATA"]) + "\r\n").encode())
    answers = [await _reply(reader) for _ in range(len(envelope) + 1)]
    if answers[-1] != "354":
        # refused at MAIL FROM (SIZE=) or at RCPT: that is the message's verdict
        refusal = next((a for a in answers if not a.startswith("2")), answers[-1])
        result.replies[refusal] += 1
        writer.write(b"RSET\r\n")
        await _reply(reader)
        return
    sent = time.perf_counter()
    writer.write(data)
    await writer.drain()
    answer = await _reply(reader)
    result.latencies.append(time.perf_counter() - sent)
    result.sizes.append(len(data))
    result.replies[answer] += 1
    result.messages += 1
    result.bytes += len(data)


async def _run(host: str, port: int, corpus: Corpus, sessions: int, rate: float | None) -> Result:
    result = Result()
    queue: asyncio.Queue[tuple[int, Connection]] = asyncio.Queue()
    index = 0
    for conn in corpus.connections:
        queue.put_nowait((index, conn))
        index += len(conn.messages)
    start = time.perf_counter()

    async def worker() -> None:
        while not queue.empty():
            first, conn = queue.get_nowait()
            try:
                await _connection(host, port, conn, corpus, result, start, rate, first)
            except (ConnectionError, OSError) as exc:
                result.errors.append(f"{conn.client_addr}: {exc}")

    await asyncio.gather(*(worker() for _ in range(sessions)))
    result.seconds = time.perf_counter() - start
    return result


def send(host: str, port: int, corpus: Corpus, sessions: int = 20, rate: float | None = None) -> Result:
    """Send every message of the corpus once; the reply counts, latencies and the generator's CPU."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    result = asyncio.run(_run(host, port, corpus, sessions, rate))
    after = resource.getrusage(resource.RUSAGE_SELF)
    result.cpu_seconds = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return result
