"""A deterministic traffic corpus for the benchmark: distinct messages in the mix a provincial gateway sees.

Seeded, nothing downloaded: the same seed and count give the same bytes. Each message comes with its
envelope and the SMTP connection it travels in (client address, HELO name), grouped as a gateway sees
them: mailbox servers relay outbound mail several messages per connection, Internet senders mostly one.

The mix (share of messages) and the sizes, and why:

| kind        | share | what                                                        | size (decoded)                 |
|-------------|-------|-------------------------------------------------------------|--------------------------------|
| text        | 27 %  | Vietnamese plain text, half with an HTML alternative         | lognormal, median 2 KB         |
| reply       | 12 %  | a reply with 2-6 levels of quoted history                    | 0.5-3 KB per level             |
| document    | 18 %  | 1-3 official documents: PDF, DOCX, XLSX                      | lognormal, median 150 KB each  |
| image       | 6 %   | scanned pages, photos: JPEG, PNG                             | lognormal, median 400 KB each  |
| archive     | 4 %   | a zip of 2-5 documents                                       | lognormal, median 120 KB each  |
| newsletter  | 8 %   | HTML with 20-80 links                                        | 8-60 KB                        |
| circular    | 6 %   | one text circular sent to 8 separate mailboxes (copies)      | median 40 KB, a PDF            |
| spam        | 12 %  | Vietnamese spam the shipped rules score (prizes, loans...)   | 1-20 KB                        |
| forward     | 3 %   | an automatic forward from an official mailbox to a webmail   | as text                        |
| virus       | 2 %   | the EICAR test file in a .txt, attached or zipped            | 68 bytes                       |
| large       | 1 %   | documents totalling 15-19.5 MiB, under the 20 MiB cap        | uniform                        |
| oversized   | 1 %   | attachments totalling 20.5-22 MiB, over the cap              | uniform                        |

Why these: most official mail is short text and replies; the documents that state bodies exchange
(công văn as signed PDF, DOCX drafts, XLSX reports) are the bulk of the bytes; mail sizes are
heavy-tailed (a lognormal body with a few attachments near the provider's cap is the usual model of
mailbox traffic: median message around 10 KB, mean dominated by attachments). Spam and viruses are
what reaches the gateway after the Internet-facing filters of the big providers, so a minority.
Directions: about two thirds inbound (Internet senders to provincial mailboxes, each connection
from its own address in the documentation ranges, so DNS blocklist answers are not all cached),
one third outbound (mailbox servers at 10.x relaying, several messages per connection).

Attachment bytes are random (incompressible, distinct in every message), behind the right magic
numbers, so libmagic types them as what they claim and clamd reads every byte.

Sender authentication: every inbound message but spam carries a DKIM signature (RSA-2048,
relaxed/relaxed) of its sender's domain, as most mail from government bodies and the big
providers does; spam is unsigned. `dns.json` beside the manifest holds the TXT records the
benchmark's DNS serves: SPF of every sender domain (the documentation ranges the inbound clients
come from; spam domains `-all`), DMARC (p=reject for the government domains, p=none for the
others), the DKIM keys, and the key of the local domain, which outbound mail is signed with
(`dkim/bacninh.gov.vn.pem`). The keys are made at build time: their signatures are the only bytes
that differ between two builds of the same seed.
"""

from __future__ import annotations

import base64
import io
import json
import random
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

MIX: tuple[tuple[str, float], ...] = (
    ("text", 0.27),
    ("reply", 0.12),
    ("document", 0.18),
    ("image", 0.06),
    ("archive", 0.04),
    ("newsletter", 0.08),
    ("circular", 0.06),
    ("spam", 0.12),
    ("forward", 0.03),
    ("virus", 0.02),
    ("large", 0.01),
    ("oversized", 0.01),
)
CIRCULAR_COPIES = 8
OUTBOUND_SHARE = 0.35
LOCAL = "bacninh.gov.vn"
GOVERNMENT = ("hanoi.gov.vn", "mof.gov.vn", "bacgiang.gov.vn", "chinhphu.vn", "mic.gov.vn")
OUTSIDE = ("gmail.com", "yahoo.com", "outlook.com", "vnpt.vn", "fpt.com.vn", "viettel.com.vn", "company.com.vn")
SPAM_DOMAINS = ("km-trungthuong.xyz", "vaynhanh24h.top", "nhacai-uytin.club", "quatang-online.icu")
EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
MIB = 1024 * 1024

WORDS = (
    "ủy ban nhân dân tỉnh bắc ninh sở thông tin và truyền thông công văn về việc triển khai kế hoạch "
    "năm báo cáo kết quả thực hiện nhiệm vụ chuyển đổi số đề nghị các cơ quan đơn vị phối hợp "
    "tổng hợp gửi trước ngày tháng theo quy định tại quyết định số thông tư hướng dẫn nội dung "
    "cuộc họp giao ban thành phần tham dự lãnh đạo phòng chuyên viên văn thư lưu trữ hồ sơ "
    "dự toán ngân sách quyết toán kinh phí đầu tư công dự án hạ tầng kỹ thuật an toàn thông tin "
    "trân trọng cảm ơn kính gửi đồng chí xin gửi kèm theo tài liệu để anh chị tham khảo ý kiến"
).split()
SPAM = (
    "Xin chúc mừng quý khách đã trúng thưởng iphone 15 pro max, nhận quà ngay hôm nay",
    "Vay tiền nhanh không thế chấp, giải ngân trong ngày, hỗ trợ nợ xấu, lãi suất thấp",
    "Nhà cái uy tín số 1, cá độ bóng đá, game bài đổi thưởng, nạp lần đầu tặng 100%",
    "Hộp thư của bạn sẽ bị khóa, xác nhận mật khẩu tài khoản thư công vụ tại đây",
    "Cơ hội nhân đôi bitcoin trong 24 giờ, đầu tư usdt lợi nhuận cao",
)


@dataclass
class Message:
    kind: str
    direction: str  # inbound | outbound
    mail_from: str
    rcpts: list[str]
    file: str  # name of the .eml beside the manifest
    size: int = 0


@dataclass
class Connection:
    client_addr: str
    helo: str
    messages: list[Message] = field(default_factory=list)


def _words(rng: random.Random, count: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(count))


def _paragraphs(rng: random.Random, size: int) -> str:
    out: list[str] = []
    total = 0
    while total < size:
        line = _words(rng, rng.randint(8, 30)).capitalize() + "."
        out.append(line)
        total += len(line.encode()) + 1
    return "\n".join(out)


def _lognormal(rng: random.Random, median: float, sigma: float, low: int, high: int) -> int:
    return max(low, min(high, int(rng.lognormvariate(0, sigma) * median)))


def _pdf(rng: random.Random, size: int, title: str) -> bytes:
    """A small valid PDF with a text page, padded by an image stream of random bytes."""
    text = title.encode("ascii", "replace")
    content = b"BT /F1 12 Tf 72 720 Td (" + text + b") Tj ET"
    pad = rng.randbytes(max(0, size - 900))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> /XObject << /Im1 6 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Type /XObject /Subtype /Image /Width 1 /Height 1 /ColorSpace /DeviceGray /BitsPerComponent 8"
        b" /Length %d >>\nstream\n" % len(pad) + pad + b"\nendstream",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    out.writelines(b"%010d 00000 n \n" % offset for offset in offsets)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref))
    return out.getvalue()


def _office(rng: random.Random, size: int, kind: str, text: str) -> bytes:
    """A DOCX or XLSX: the parts Word and Excel need, text in XML, a stored media file of random bytes."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        if kind == "docx":
            main, main_type = "word/document.xml", "application/vnd.openxmlformats-officedocument.wordprocessingml"
            body = f'<w:document xmlns:w="urn:w"><w:body><w:p><w:r><w:t>{text}</w:t></w:r></w:p></w:body></w:document>'
            media = "word/media/image1.png"
        else:
            main, main_type = "xl/workbook.xml", "application/vnd.openxmlformats-officedocument.spreadsheetml"
            body = f'<workbook xmlns="urn:x"><sheets><sheet name="{text[:20]}"/></sheets></workbook>'
            media = "xl/media/image1.png"
        archive.writestr(
            "[Content_Types].xml",
            f'<?xml version="1.0"?><Types><Override PartName="/{main}" ContentType="{main_type}.main+xml"/></Types>',
        )
        archive.writestr("_rels/.rels", '<?xml version="1.0"?><Relationships/>')
        archive.writestr(main, body)
        archive.writestr(
            zipfile.ZipInfo(media), b"\x89PNG\r\n\x1a\n" + rng.randbytes(max(0, size - 1200)), zipfile.ZIP_STORED
        )
    return out.getvalue()


def _image(rng: random.Random, size: int) -> tuple[bytes, str, str]:
    if rng.random() < 0.7:
        return (
            b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + rng.randbytes(size),
            "jpg",
            "image/jpeg",
        )
    return b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + rng.randbytes(size), "png", "image/png"


def _document(rng: random.Random, size: int, title: str) -> tuple[bytes, str, str]:
    pick = rng.random()
    if pick < 0.45:
        return _pdf(rng, size, title), "pdf", "application/pdf"
    if pick < 0.8:
        return (
            _office(rng, size, "docx", title),
            "docx",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        )
    return (
        _office(rng, size, "xlsx", title),
        "xlsx",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    )


def _zip(files: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files:
            archive.writestr(name, data)
    return out.getvalue()


def _b64(data: bytes) -> str:
    return base64.encodebytes(data).decode("ascii")


class _Writer:
    """Builds one message's text: headers, then a body of MIME parts, CRLF line ends."""

    def __init__(self, rng: random.Random, number: int, mail_from: str, to: list[str], subject: str):
        self.rng = rng
        self.boundary = f"=_bench_{number}_{rng.getrandbits(48):x}"
        self.headers = [
            f"From: {mail_from}",
            f"To: {', '.join(to[:3])}",
            f"Subject: =?UTF-8?B?{base64.b64encode(subject.encode()).decode()}?=",
            f"Date: Thu, 03 Dec 2026 {8 + number % 10:02d}:{number % 60:02d}:{(number * 7) % 60:02d} +0700",
            f"Message-ID: <bench.{number}.{rng.getrandbits(64):x}@{mail_from.rsplit('@', 1)[1]}>",
            "MIME-Version: 1.0",
        ]
        self.parts: list[str] = []

    def text(self, text: str, html: bool = False) -> None:
        body = base64.encodebytes(text.encode()).decode("ascii")
        kind = "html" if html else "plain"
        self.parts.append(f"Content-Type: text/{kind}; charset=utf-8\nContent-Transfer-Encoding: base64\n\n{body}")

    def attach(self, data: bytes, name: str, mime_type: str) -> None:
        self.parts.append(
            f'Content-Type: {mime_type}; name="{name}"\nContent-Transfer-Encoding: base64\n'
            f'Content-Disposition: attachment; filename="{name}"\n\n{_b64(data)}'
        )

    def render(self, extra_headers: tuple[str, ...] = ()) -> bytes:
        head = "\n".join([*self.headers, *extra_headers])
        if len(self.parts) == 1:
            text = f"{head}\n{self.parts[0]}"
        else:
            sections = "".join(f"--{self.boundary}\n{part}\n" for part in self.parts)
            text = (
                f'{head}\nContent-Type: multipart/mixed; boundary="{self.boundary}"\n\n{sections}--{self.boundary}--\n'
            )
        return text.replace("\n", "\r\n").encode()


def _address(rng: random.Random, domain: str) -> str:
    family = rng.choice(("nguyen", "tran", "le", "pham", "hoang", "vu", "dang", "bui", "do", "ngo"))
    given = rng.choice(("an", "binh", "cuong", "dung", "giang", "ha", "hung", "lan", "minh", "nam", "thao", "tuan"))
    return f"{given}.{family}{rng.randint(1, 999)}@{domain}"


def _inbound_client(rng: random.Random) -> tuple[str, str]:
    # documentation ranges only: these are strings in the SMTP session, nothing is sent there
    net = rng.choice(("192.0.2", "198.51.100", "203.0.113"))
    return f"{net}.{rng.randint(1, 254)}", f"mail{rng.randint(1, 99)}.example.net"


SELECTOR = "bench"
INBOUND_NETS = "ip4:192.0.2.0/24 ip4:198.51.100.0/24 ip4:203.0.113.0/24"  # _inbound_client's ranges


def signing_key(out: Path) -> Path:
    """The local domain's key (outbound signing): `[dkim] keys = [{domain = LOCAL, selector = SELECTOR, ...}]`."""
    return out / "dkim" / f"{LOCAL}.pem"


def dns_records(out: Path) -> list[tuple[str, str]]:
    """The TXT records the corpus's messages need (written by build)."""
    return [(name, text) for name, text in json.loads((out / "dns.json").read_text())]


def _keys(out: Path) -> dict[str, object]:
    """A signing key per sender domain and the local domain's; dns.json with every record."""
    from govmilter.checks.auth.signing import keygen, load_key, public_record
    from govmilter.config import DkimKey

    folder = out / "dkim"
    folder.mkdir(parents=True, exist_ok=True)
    keys: dict[str, object] = {}
    records: list[tuple[str, str]] = []
    for domain in (*GOVERNMENT, *OUTSIDE, LOCAL):
        path = folder / f"{domain}.pem"
        if not path.exists():
            keygen(domain, SELECTOR, "rsa", str(path))
        keys[domain] = load_key(DkimKey(domain, SELECTOR, str(path)))
        records.append((f"{SELECTOR}._domainkey.{domain}", public_record(str(path))))
        records.append((domain, f"v=spf1 {INBOUND_NETS} -all"))
        policy = "reject" if domain in GOVERNMENT or domain == LOCAL else "none"
        records.append((f"_dmarc.{domain}", f"v=DMARC1; p={policy}"))
    records += [(domain, "v=spf1 -all") for domain in SPAM_DOMAINS]
    (out / "dns.json").write_text(json.dumps(records))
    return keys


def _signed(data: bytes, key: object) -> bytes:
    from govmilter.checks.auth.signing import sign

    return f"DKIM-Signature: {sign(data, key)}\r\n".encode() + data  # type: ignore[arg-type]


def build(seed: int, count: int, out: Path) -> list[Connection]:
    """Write `count` messages (copies of a circular each count) under `out`, with manifest.json and dns.json."""
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    keys = _keys(out)
    kinds = [kind for kind, _ in MIX]
    # a circular pick yields CIRCULAR_COPIES messages: weigh picks so that messages follow MIX
    weights = [share / (CIRCULAR_COPIES if kind == "circular" else 1) for kind, share in MIX]
    connections: list[Connection] = []
    open_outbound: Connection | None = None
    number = 0
    while number < count:
        kind = rng.choices(kinds, weights)[0]
        outbound = kind == "forward" or (kind not in ("spam", "virus") and rng.random() < OUTBOUND_SHARE)
        for message, data in _make(rng, kind, outbound, number, min(CIRCULAR_COPIES, count - number)):
            author = message.mail_from.rpartition("@")[2]
            if not outbound and author in keys:  # inbound, from a domain that signs (not spam)
                data = _signed(data, keys[author])
            (out / message.file).write_bytes(data)
            message.size = len(data)
            if message.direction == "outbound":
                # mailbox servers keep their connection for up to 10 messages
                if open_outbound is None or len(open_outbound.messages) >= rng.randint(1, 10):
                    open_outbound = Connection(
                        f"10.10.{rng.randint(0, 3)}.{rng.randint(2, 20)}", f"mbox{rng.randint(1, 4)}.{LOCAL}"
                    )
                    connections.append(open_outbound)
                open_outbound.messages.append(message)
            else:
                addr, helo = _inbound_client(rng)
                connections.append(Connection(addr, helo, [message]))
            number += 1
    rng.shuffle(connections)
    (out / "manifest.json").write_text(json.dumps([asdict(connection) for connection in connections]))
    return connections


def load(out: Path) -> list[Connection]:
    raw = json.loads((out / "manifest.json").read_text())
    return [Connection(c["client_addr"], c["helo"], [Message(**m) for m in c["messages"]]) for c in raw]


def _make(rng: random.Random, kind: str, outbound: bool, number: int, copies: int) -> Iterator[tuple[Message, bytes]]:
    if outbound:
        sender = _address(rng, LOCAL)
        domain = rng.choice(GOVERNMENT + OUTSIDE) if kind != "forward" else rng.choice(OUTSIDE)
        rcpts = [_address(rng, domain) for _ in range(rng.choice((1, 1, 1, 2, 3)))]
    else:
        domain = rng.choice(SPAM_DOMAINS) if kind == "spam" else rng.choice(GOVERNMENT + OUTSIDE)
        sender = _address(rng, domain)
        rcpts = [_address(rng, LOCAL) for _ in range(rng.choice((1, 1, 1, 2, 4)))]
    direction = "outbound" if outbound else "inbound"
    subject = _words(rng, rng.randint(4, 12)).capitalize()
    writer = _Writer(rng, number, sender, rcpts, subject)
    extra: tuple[str, ...] = ()
    if kind in ("text", "forward"):
        body = _paragraphs(rng, _lognormal(rng, 2000, 0.9, 200, 64000))
        writer.text(body)
        if rng.random() < 0.5:
            writer.text("<html><body><p>" + body.replace("\n", "</p><p>") + "</p></body></html>", html=True)
        if kind == "forward":
            extra = (
                f"X-Forwarded-To: {rcpts[0]}",
                f"X-Forwarded-For: {sender} {rcpts[0]}",
                "Auto-Submitted: auto-forwarded",
            )
    elif kind == "reply":
        text = _paragraphs(rng, rng.randint(300, 1500))
        for depth in range(1, rng.randint(2, 6) + 1):
            quoted = _paragraphs(rng, rng.randint(500, 3000)).replace("\n", "\n" + "> " * depth)
            author = _address(rng, rng.choice(GOVERNMENT))
            text += f"\n\nVào ngày {depth}/12/2026, {author} đã viết:\n{'> ' * depth}{quoted}"
        writer.text(text)
    elif kind == "newsletter":
        items = []
        for _ in range(rng.randint(20, 80)):
            url = f"https://{rng.choice(OUTSIDE + GOVERNMENT)}/tin-tuc/{rng.getrandbits(32):x}"
            items.append(f'<li><a href="{url}">{_words(rng, 6)}</a></li>')
        article = _paragraphs(rng, rng.randint(4000, 40000))
        writer.text(f"<html><body><h1>{subject}</h1><p>{article}</p><ul>{''.join(items)}</ul></body></html>", html=True)
    elif kind == "spam":
        link = f"https://{rng.choice(SPAM_DOMAINS)}/{rng.getrandbits(32):x}"
        first, second = rng.sample(SPAM, 2)
        writer.text(f"{first}.\n{_paragraphs(rng, rng.randint(500, 20000))}\n{second}: {link}")
    elif kind == "virus":
        writer.text(_paragraphs(rng, 600))
        if rng.random() < 0.5:
            writer.attach(EICAR, "hoa-don.txt", "text/plain")
        else:
            writer.attach(_zip([("hoa-don.txt", EICAR)]), "hoa-don.zip", "application/zip")
    else:
        writer.text(_paragraphs(rng, _lognormal(rng, 1000, 0.7, 200, 20000)))
        for data, name, mime_type in _attachments(rng, kind, subject):
            writer.attach(data, name, mime_type)
    if kind == "circular":
        # the same circular to several mailboxes, each its own transaction: what the scan cache is for
        writer.parts = []
        writer.text(_paragraphs(rng, _lognormal(rng, 4000, 0.5, 1000, 40000)))
        writer.attach(_pdf(rng, _lognormal(rng, 40000, 0.6, 5000, 400000), subject), "cong-van.pdf", "application/pdf")
        for copy in range(copies):
            yield (
                Message(
                    kind,
                    direction,
                    sender,
                    [_address(rng, LOCAL if not outbound else rng.choice(GOVERNMENT))],
                    f"{number + copy:06d}.eml",
                ),
                writer.render(),
            )
        return
    yield Message(kind, direction, sender, rcpts, f"{number:06d}.eml"), writer.render(extra)


def _attachments(rng: random.Random, kind: str, title: str) -> Iterator[tuple[bytes, str, str]]:
    ascii_title = "-".join(title.encode("ascii", "ignore").decode().split()[:4]) or "tai-lieu"
    if kind == "document":
        for index in range(rng.choice((1, 1, 2, 3))):
            data, ext, mime_type = _document(rng, _lognormal(rng, 150_000, 1.0, 2000, 5 * MIB), title)
            yield data, f"{ascii_title}-{index}.{ext}", mime_type
    elif kind == "image":
        for index in range(rng.randint(1, 4)):
            data, ext, mime_type = _image(rng, _lognormal(rng, 400_000, 0.8, 20_000, 4 * MIB))
            yield data, f"scan-{index}.{ext}", mime_type
    elif kind == "archive":
        files = []
        for index in range(rng.randint(2, 5)):
            data, ext, _ = _document(rng, _lognormal(rng, 120_000, 0.8, 2000, 2 * MIB), title)
            files.append((f"{ascii_title}-{index}.{ext}", data))
        yield _zip(files), f"{ascii_title}.zip", "application/zip"
    elif kind in ("large", "oversized"):
        total = int(rng.uniform(15, 19.5) * MIB) if kind == "large" else int(rng.uniform(20.5, 22) * MIB)
        pieces = rng.randint(1, 3)
        for index in range(pieces):
            data, ext, mime_type = _document(rng, total // pieces, title)
            yield data, f"{ascii_title}-{index}.{ext}", mime_type


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    connections = build(args.seed, args.count, args.out)
    messages = [m for c in connections for m in c.messages]
    total = sum(m.size for m in messages)
    by_kind: dict[str, int] = {}
    for message in messages:
        by_kind[message.kind] = by_kind.get(message.kind, 0) + 1
    print(f"{len(messages)} messages in {len(connections)} connections, {total / MIB:.0f} MiB: {by_kind}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
