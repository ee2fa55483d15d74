"""Text as the content rules see it: NFC, no invisible characters, HTML as plain text.

Vietnamese can be written precomposed (NFC) or with combining marks (NFD);
TCVN 6909 mail is normally NFC, so patterns and texts are both brought to
NFC before matching. Spam also drops the diacritics, so a rule may ask to
match the text and its own pattern with every mark removed.
"""

from __future__ import annotations

import re
import unicodedata
from email.header import decode_header, make_header
from html.parser import HTMLParser

# zero-width spaces and joiners, the BOM and the soft hyphen split words invisibly
_INVISIBLE = re.compile("[\u00ad\u180e\u200b-\u200f\u2060-\u2064\ufeff]")
_BLANK_LINES = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")
_BLOCK_TAGS = frozenset(
    "address article aside blockquote br caption dd div dl dt fieldset figcaption figure footer form"
    " h1 h2 h3 h4 h5 h6 header hr li main nav ol p pre section table tbody td tfoot th thead tr ul".split()
)
_SKIP_TAGS = frozenset({"script", "style", "head", "title", "template"})


def normalize(text: str) -> str:
    """NFC without invisible characters."""
    if text.isascii():  # already NFC, and every invisible character is outside ASCII
        return text
    return _INVISIBLE.sub("", unicodedata.normalize("NFC", text))


def strip_diacritics(text: str) -> str:
    """`Tối mật` -> `Toi mat`, `Đăng ký` -> `Dang ky`."""
    if text.isascii():  # nothing to strip, and the per-character work below is the costly part
        return text
    decomposed = unicodedata.normalize("NFD", text)
    bare = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return unicodedata.normalize("NFC", bare.replace("đ", "d").replace("Đ", "D"))


def decode_header_value(value: str) -> str:
    """An RFC 2047 header value as text; the value itself when it cannot be decoded."""
    if any("\udc80" <= ch <= "\udcff" for ch in value):
        # raw 8-bit bytes carried as surrogates: read them as UTF-8
        try:
            value = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        except UnicodeEncodeError:  # other lone surrogates: drop them
            value = value.encode("utf-8", "replace").decode("utf-8")
    if "=?" not in value:
        return value
    try:
        return str(make_header(decode_header(value)))
    except Exception:  # email.header raises several kinds (CharsetError, ValueError, ...) on wire junk
        return value


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.pieces: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self._skipping += 1
        elif tag in _BLOCK_TAGS:
            self.pieces.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self._skipping = max(self._skipping - 1, 0)
        elif tag in _BLOCK_TAGS:
            self.pieces.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.pieces.append(data)


def html_to_text(markup: str) -> str:
    """The text a reader sees: tags gone, entities decoded, one line per block element."""
    parser = _TextExtractor()
    try:
        parser.feed(markup)
        parser.close()
    except Exception:  # HTMLParser is lenient; whatever it still raises must not lose the text
        return markup
    text = "".join(parser.pieces).replace("\xa0", " ")
    return _BLANK_LINES.sub("\n\n", text)
