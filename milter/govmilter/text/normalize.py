"""Text as the content rules see it: one normal form, no invisible characters, HTML as plain text.

`normalize` is what every rule matches against (patterns get the same treatment,
less the joining of spaced letters, by `normalize_pattern`):

- NFKC: precomposed Vietnamese (TCVN 6909 mail is NFC, some senders write NFD),
  and compatibility forms read as the letters they show: fullwidth `ＭẬＴ`,
  mathematical `𝐌`, ligatures, the no-break and narrow no-break spaces.
- A right-to-left override (U+202E) shows the letters after it in reverse, up to
  the next bidi control or the end of the line: that stretch is read in the
  order it shows (`TỐI <RLO>TẬM<PDF>` reads `TỐI MẬT`).
- Format characters (Unicode category Cf: zero-width spaces and joiners, bidi
  controls, the soft hyphen, tag characters) and the other default-ignorable
  code points (the combining grapheme joiner U+034F, Hangul fillers, variation
  selectors) are removed: they split a word without showing anything.
- Every space separator (Zs) is a space; the line and paragraph separators
  U+2028/U+2029, NEL, vertical tab, form feed and a lone CR end a line (`\\n`).
- Cyrillic and Greek letters that look like Latin ones are read as the Latin
  letter (`МẬТ` with Cyrillic М and Т is `MẬT`): the single-letter prototypes of
  Unicode's confusables data (UTS #39 confusables.txt, as shipped in the PyPI
  package confusable-homoglyphs 3.3.1), restricted to Cyrillic and Greek
  letters, in the case of the source letter. The letter's own marks are kept
  (Greek `Ά` is `Á`) except the diaeresis, which no Vietnamese letter carries
  (`Ї` is `I`). Vietnamese letters are Latin and never change.
- Runs of three or more single letters set apart by the same separator
  (`T Ố I`, `M.Ậ.T`, `M - Ậ - T`) are joined (`TỐI`, `MẬT`). Digits are not
  letters ("Điều 1, 2, 3" stays), nor are commas separators ("a, b, c" stays).

Plain ASCII text is returned as it is: none of the above can change it, and
it is most mail. Everything else runs in C (str methods, str.translate only
when a character to map is present, compiled regular expressions); there is
no per-character Python loop over the text.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Iterator
from html.parser import HTMLParser

from govmilter.mime.headers import decode_header_value as decode_header_value  # header text, re-exported

# ---- the characters that are removed or mapped ---------------------------------------------

# Unicode category Cf (format characters) as of Unicode 14 (Python 3.11); a test checks this
# list against the running interpreter's unicodedata.
_FORMAT = (
    (0x00AD, 0x00AD), (0x0600, 0x0605), (0x061C, 0x061C), (0x06DD, 0x06DD), (0x070F, 0x070F),
    (0x0890, 0x0891), (0x08E2, 0x08E2), (0x180E, 0x180E), (0x200B, 0x200F), (0x202A, 0x202E),
    (0x2060, 0x2064), (0x2066, 0x206F), (0xFEFF, 0xFEFF), (0xFFF9, 0xFFFB), (0x110BD, 0x110BD),
    (0x110CD, 0x110CD), (0x13430, 0x13438), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
)  # fmt: skip
# Default_Ignorable_Code_Point (DerivedCoreProperties.txt) beyond Cf: the combining grapheme
# joiner, Hangul fillers, Khmer inherent vowels, Mongolian variation selectors, variation
# selectors, reserved ignorables and the whole tag/variation-selector plane E0000..E0FFF.
_IGNORABLE = (
    (0x034F, 0x034F), (0x115F, 0x1160), (0x17B4, 0x17B5), (0x180B, 0x180F), (0x2065, 0x2065),
    (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0xE0000, 0xE0FFF),
)  # fmt: skip
# every space separator (Zs) but the space itself
_SPACES = "\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f\u3000"
# what ends a line for a reader, besides LF (CR is handled before the table: CRLF is one break)
_LINE_BREAKS = "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029\r"

# Cyrillic and Greek letters whose UTS #39 prototype is one Latin letter, in the source's case.
# (confusables.txt maps capital І/Ι to "l"; read in its case it is "I".)
_LOOKALIKE_BASE = {
    # Greek capitals and small letters
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N", "Ο": "O",
    "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X", "Ϲ": "C", "Ϳ": "J", "Ϻ": "M", "Ϝ": "F", "ϒ": "Y",
    "α": "a", "γ": "y", "ι": "i", "ν": "v", "ο": "o", "ρ": "p", "σ": "o", "υ": "u", "ϱ": "p", "ϲ": "c",
    "ϳ": "j", "ͺ": "i",
    # Cyrillic capitals and small letters
    "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P", "С": "C", "Т": "T",
    "У": "Y", "Х": "X", "Ѕ": "S", "І": "I", "Ј": "J", "Ү": "Y", "Ӏ": "I", "Ԍ": "G", "Ԝ": "W", "Ѵ": "V",
    "а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ј": "j",
    "һ": "h", "ԁ": "d", "ԛ": "q", "ԝ": "w", "ү": "y", "ӏ": "i", "ѵ": "v", "г": "r", "ѡ": "w", "ҽ": "e",
}  # fmt: skip
_LOOKALIKE_BLOCKS = ((0x0370, 0x03FF), (0x0400, 0x052F), (0x1F00, 0x1FFF))
_DIAERESIS = "\u0308"


def _lookalikes() -> dict[str, str]:
    """Every Cyrillic/Greek letter built on a look-alike base: `Ά` -> `Á`, `Ї` -> `I`."""
    table = dict(_LOOKALIKE_BASE)
    for low, high in _LOOKALIKE_BLOCKS:
        for code in range(low, high + 1):
            char = chr(code)
            parts = unicodedata.normalize("NFD", char)
            if len(parts) > 1 and parts[0] in _LOOKALIKE_BASE and all(unicodedata.combining(m) for m in parts[1:]):
                marks = parts[1:].replace(_DIAERESIS, "")
                table[char] = unicodedata.normalize("NFC", _LOOKALIKE_BASE[parts[0]] + marks)
    return table


LOOKALIKES = _lookalikes()


def _table() -> dict[int, str | None]:
    table: dict[int, str | None] = {}
    for low, high in _FORMAT + _IGNORABLE:
        for code in range(low, high + 1):
            table[code] = None
    table.update({ord(c): " " for c in _SPACES})
    table.update({ord(c): "\n" for c in _LINE_BREAKS})
    table.update({ord(k): v for k, v in LOOKALIKES.items()})
    return table


def _char_class(codes: list[int]) -> str:
    ranges: list[str] = []
    codes = sorted(codes)
    start = previous = codes[0]
    for code in [*codes[1:], -1]:
        if code == previous + 1:
            previous = code
            continue
        ranges.append(re.escape(chr(start)) + ("-" + re.escape(chr(previous)) if previous > start else ""))
        start = previous = code
    return "[" + "".join(ranges) + "]"


def _has_astral(text: str) -> bool:
    """A character outside the BMP: UTF-16 needs a surrogate pair for it (an encode runs at memcpy speed)."""
    return len(text.encode("utf-16-le", "surrogatepass")) != 2 * len(text)


class _CharSet:
    """A set of code points searched fast: re compiles a class of BMP characters to a bitmap
    but one that also holds astral ones to a list of ranges tried one by one (ten times
    slower), so the astral part is a second class, tried only on text that has astral
    characters at all."""

    def __init__(self, codes: Iterable[int]):
        codes = sorted(set(codes))
        bmp = [c for c in codes if c <= 0xFFFF]
        astral = [c for c in codes if c > 0xFFFF]
        self.bmp = re.compile(_char_class(bmp)) if bmp else None
        self.astral = re.compile(_char_class(astral)) if astral else None

    def search(self, text: str) -> bool:
        if self.bmp is not None and self.bmp.search(text):
            return True
        return self.astral is not None and _has_astral(text) and self.astral.search(text) is not None

    def remove(self, text: str) -> str:
        if self.bmp is not None:
            text = self.bmp.sub("", text)
        if self.astral is not None and _has_astral(text):
            text = self.astral.sub("", text)
        return text


_TABLE = _table()
_PATTERN_TABLE = {k: v for k, v in _TABLE.items() if v != "\n"}  # `\r` in a pattern is not a line break
_SPECIAL = _CharSet(_TABLE)

# ---- spaced letters -------------------------------------------------------------------------

_SEPARATORS = " .-_*·•"
_SEP_CLASS = "[" + re.escape(_SEPARATORS) + "]"
_LETTER = r"[^\W\d_]"
# three or more single letters, each set apart by the same 1-3 separator characters
_SPACED = re.compile(rf"(?<![^\W_]){_LETTER}(?P<sep>{_SEP_CLASS}{{1,3}}){_LETTER}(?:(?P=sep){_LETTER})+(?![^\W_])")
# A cheap test first: a run of three has a middle letter after a separator character and before
# another single letter. Each starts with a literal, which re scans for at memchr speed.
_SPACED_HINTS = tuple(
    (sep, re.compile(re.escape(sep) + rf"{_LETTER}{_SEP_CLASS}{{1,3}}{_LETTER}(?![^\W_])")) for sep in _SEPARATORS
)


def _join(match: re.Match[str]) -> str:
    return match.group(0)[:: len(match.group("sep")) + 1]


def join_spaced_letters(text: str) -> str:
    """`T Ố I  M Ậ T` -> `TỐI  MẬT`, `M.Ậ.T` -> `MẬT`; other text unchanged."""
    if any(sep in text and hint.search(text) for sep, hint in _SPACED_HINTS):
        return _SPACED.sub(_join, text)
    return text


# ---- the normal forms ------------------------------------------------------------------------

_RLO = "\u202e"
# a right-to-left override's stretch: up to the next embedding, override or isolate control, or the line's end
_OVERRIDDEN = re.compile("\u202e([^\u202a-\u202e\u2066-\u2069\n\u2028\u2029]*)")


def _display_order(match: re.Match[str]) -> str:
    return match.group(1)[::-1]


def normalize(text: str) -> str:
    """The text every rule is matched against (see the module docstring)."""
    if text.isascii():  # NFKC already, nothing to remove or map, and no non-ASCII letter to join into a marking
        return text
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    text = unicodedata.normalize("NFKC", text)
    if _RLO in text:  # after composition, so that a letter's marks stay with it when the stretch turns
        text = _OVERRIDDEN.sub(_display_order, text)
    if _SPECIAL.search(text):
        text = unicodedata.normalize("NFC", text.translate(_TABLE))
    return join_spaced_letters(text)


def normalize_pattern(source: str) -> str:
    """A rule's pattern in the same form as the text (no joining: a pattern is not prose)."""
    if source.isascii():
        return source
    source = unicodedata.normalize("NFKC", source)
    if _SPECIAL.search(source):
        source = unicodedata.normalize("NFC", source.translate(_PATTERN_TABLE))
    return source


@functools.cache
def _combining() -> _CharSet:
    """Every combining mark (canonical combining class > 0), built on first use."""
    return _CharSet(c for r in (range(0x20000), range(0xE0100, 0xE01F0)) for c in r if unicodedata.combining(chr(c)))


# what is neither ASCII nor a Latin combining diacritic (U+0300..U+036F, all Vietnamese marks)
_NOT_LATIN_MARKED = re.compile("([^\x00-\x7f\u0300-\u036f]+)")


def strip_diacritics(text: str) -> str:
    """`Tối mật` -> `Toi mat`, `Đăng ký` -> `Dang ky`.

    In C throughout: the decomposed text is split at the runs of characters that are
    neither ASCII nor Latin combining marks (quotes, dashes, other scripts); the
    stretches between them lose their marks by an ASCII encode that drops them,
    the runs by a regular expression over every combining mark. No list of
    one-character strings: a megabyte of U+FFFD costs a few megabytes, not a hundred.
    """
    if text.isascii():
        return text
    decomposed = unicodedata.normalize("NFD", text).replace("đ", "d").replace("Đ", "D")
    stretches = _NOT_LATIN_MARKED.split(decomposed)
    for index, stretch in enumerate(stretches):
        if index % 2 == 0:  # ASCII and U+0300..U+036F only
            if not stretch.isascii():
                stretches[index] = stretch.encode("ascii", "ignore").decode("ascii")
        else:
            stretches[index] = _combining().remove(stretch)
    return unicodedata.normalize("NFC", "".join(stretches))


# ---- windows -------------------------------------------------------------------------------

CUT_SEARCH = 4096  # a window ends at its last line break (else space) within this many characters of its end


def windows(pieces: Iterable[str], size: int) -> Iterator[str]:
    """The pieces re-cut into windows of about `size` characters that end at a line break.

    A window ends at its last line break (else its last space) within CUT_SEARCH
    characters of its end, so that normalising each window alone gives the text that
    normalising the whole would: a combining mark, a link or an entity is never split,
    and a run of spaced letters only when a window with no line break in its last
    CUT_SEARCH characters had to be cut at a space. The rest is carried to the next
    window. A text with no break at all there is cut where it is. A window is at most
    size + the length of one piece.
    """
    held = ""
    for piece in pieces:
        if not piece:
            continue
        text = held + piece if held else piece
        if len(text) < size:
            held = text
            continue
        cut = text.rfind("\n", len(text) - CUT_SEARCH)
        if cut < 0:
            cut = text.rfind(" ", len(text) - CUT_SEARCH)
        cut = len(text) if cut < 0 else cut + 1
        yield text[:cut]
        held = text[cut:]
    if held:
        yield held


# ---- HTML -----------------------------------------------------------------------------------

_BLANK_LINES = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")
_BLOCK_TAGS = frozenset(
    "address article aside blockquote br caption dd div dl dt fieldset figcaption figure footer form"
    " h1 h2 h3 h4 h5 h6 header hr li main nav ol p pre section table tbody td tfoot th thead tr ul".split()
)
# Text a browser never shows: script and style (raw text: they end at their own end tag only,
# whatever comes between) and template content (inert; templates nest). The title is read, on
# a line of its own (mail readers and browsers show it as the window's title); markup inside it
# is its text, and it ends at </title> only (RCDATA). <head> hides nothing: its end tag is
# optional, and any body content closes it (HTML5 "in head" insertion mode).
_RAW_TEXT = frozenset({"script", "style"})
# Inline text hidden by its own style (`<span style="display:none">x</span>` between the letters
# of a word) is not what most readers see, but a reader that ignores styles shows it: it is taken
# out of the line it stands in and given a line of its own after its block, so the rules see the
# visible words joined and the hidden ones too. A block tag ends the hiding, so a hidden element
# left open moves at most its block. Style sheets are not read.
_INLINE_TAGS = frozenset(
    "a abbr b bdi bdo cite code data del dfn em font i ins kbd label mark q s samp small span strike strong"
    " sub sup time tt u var".split()
)
_ZERO = r"(?:0+(?:\.0*)?|\.0+)"  # a zero written as a number: "0", "0.0", ".0" (an empty value is ignored)
_HIDING_STYLE = re.compile(
    rf"(?:^|;)\s*(?:display\s*:\s*none|visibility\s*:\s*(?:hidden|collapse)"
    rf"|font-size\s*:\s*{_ZERO}(?:px|pt|em|rem|%)?|opacity\s*:\s*{_ZERO})\s*(?:;|$|!)",
    re.IGNORECASE,
)


def _hides(attrs: list[tuple[str, str | None]]) -> bool:
    return any(name == "hidden" or (name == "style" and value and _HIDING_STYLE.search(value)) for name, value in attrs)


OPEN_MARKUP_LIMIT = 65536  # characters of an unfinished tag, comment or raw-text element held


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.pieces: list[str] = []
        self.raw: str | None = None  # inside script or style: hidden until its end tag
        self.title = False  # inside title: markup is text, until </title>
        self.templates = 0
        self.hidden: str | None = None  # an inline element hidden by its style: its text is moved
        self.hidden_depth = 0  # the same element nested inside it
        self.hidden_text: list[str] = []  # given a line of its own at the end of the block

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.raw is not None or self.title:
            return
        if tag in _RAW_TEXT:
            self.raw = tag
        elif tag == "title":
            self.title = True
            self.pieces.append("\n")
        elif tag == "template":
            self.templates += 1
        elif tag in _BLOCK_TAGS:
            self._end_block()
        elif self.hidden is not None:
            self.hidden_depth += tag == self.hidden
        elif tag in _INLINE_TAGS and _hides(attrs):
            self.hidden, self.hidden_depth = tag, 0

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.raw is None and not self.title and tag in _BLOCK_TAGS:  # <br/>
            self.pieces.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if self.raw is not None:
            if tag == self.raw:
                self.raw = None
            return
        if self.title:
            if tag == "title":
                self.title = False
                self.pieces.append("\n")
            return
        if tag == "template":
            self.templates = max(self.templates - 1, 0)
        elif tag in _BLOCK_TAGS:
            self._end_block()
        elif tag == self.hidden:
            if self.hidden_depth:
                self.hidden_depth -= 1
            else:
                self.hidden = None

    def handle_data(self, data: str) -> None:
        if self.raw is not None or self.templates:
            return
        if self.hidden is None:
            self.pieces.append(data)
            return
        self.hidden_text.append(data)
        if sum(map(len, self.hidden_text)) > OPEN_MARKUP_LIMIT:  # bounded: a long one is passed on now
            self._end_block()

    def _end_block(self) -> None:
        self.hidden = None
        self.pieces.append("\n")
        if self.hidden_text:
            self.pieces.append("".join(self.hidden_text) + "\n")
            self.hidden_text.clear()

    def close(self) -> None:
        super().close()
        self.hidden = None
        if self.hidden_text:
            self._end_block()

    def take(self) -> str:
        text = "".join(self.pieces)
        self.pieces.clear()
        return text


class HtmlText:
    """HTML to the text a reader sees, fed piece by piece (html.parser is incremental).

    Memory stays bounded: markup left open for more than OPEN_MARKUP_LIMIT characters (a
    tag without `>`, a comment without `-->`, a <script> without its end tag) is passed
    on as text from there, so a bound never hides text from the rules.
    """

    def __init__(self) -> None:
        self._parser = _TextExtractor()
        self._broken = False

    def feed(self, markup: str) -> str:
        if self._broken:
            return markup
        parser = self._parser
        try:
            parser.feed(markup)
        except Exception:  # HTMLParser is lenient; whatever it still raises must not lose the text
            self._broken = True
            return parser.take() + parser.rawdata
        text = parser.take()
        if len(parser.rawdata) > OPEN_MARKUP_LIMIT:
            text += parser.rawdata
            parser.rawdata = ""  # the parser's buffer of undecided input
            parser.clear_cdata_mode()
            parser.raw = None
        return _tidy(text)

    def close(self) -> str:
        if self._broken:
            return ""
        parser = self._parser
        try:
            parser.close()
        except Exception:
            return parser.take() + parser.rawdata
        return _tidy(parser.take())


def _tidy(text: str) -> str:
    if "\xa0" in text:
        text = text.replace("\xa0", " ")
    return _BLANK_LINES.sub("\n\n", text) if "\n" in text else text


def html_to_text(markup: str) -> str:
    """The text a reader sees: tags gone, entities decoded, one line per block element."""
    reader = HtmlText()
    return reader.feed(markup) + reader.close()
