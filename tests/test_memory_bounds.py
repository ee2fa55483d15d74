"""Memory that bench/memory.py found and that must stay bounded (issue 22: 20 x 25 MB in flight in 64 MB).

The milter's peak RSS (VmHWM) was 149 MB with 20 big messages in flight, and all of
it came before the first message: patterns.newer() classified every Unicode code
point at once (a 4 MB string, its UTF-8, then RE2's list of 140 000 matches), ~94 MB
of Python heap for a moment at start-up and at the first rule load.
"""

from __future__ import annotations

import re
import tracemalloc

from govmilter.ruleset import patterns


def test_newer_classifies_code_points_in_bounded_memory() -> None:
    name = patterns.WORD
    tracemalloc.start()
    try:
        patterns.newer.__wrapped__(name)  # not the cached answer: the work itself
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"newer({name!r}) took {peak / 2**20:.1f} MiB of Python heap at its peak"


def test_newer_finds_what_python_leaves_out_and_only_that() -> None:
    """Every code point of the answer is RE2's WORD and not Python's \\w; none of Python's \\w is in it."""
    found = patterns.newer(patterns.WORD)
    ranges = re.findall(r"\\x\{([0-9a-f]+)\}(?:-\\x\{([0-9a-f]+)\})?", found)
    assert "".join(f"\\x{{{low}}}" + (f"-\\x{{{high}}}" if high else "") for low, high in ranges) == found
    word = re.compile(r"\w")
    codes = [c for low, high in ranges for c in range(int(low, 16), int(high or low, 16) + 1)]
    assert codes == sorted(set(codes))
    assert not any(word.match(chr(c)) for c in codes)
    theirs = patterns.re2.compile(f"[{patterns.WORD}]")
    assert all(theirs.search(chr(c).encode()) for c in codes)
    # and the blocks leave none out: every RE2 letter Python does not know, near each block edge too
    block = patterns._BLOCK
    edges = [c for start in range(0, 0x110000, block) for c in (start - 1, start) if 0 <= c < 0x110000]
    for c in edges:
        if 0xD800 <= c < 0xE000:
            continue
        if theirs.search(chr(c).encode()) and not word.match(chr(c)):
            assert c in codes, f"U+{c:04X} missing"
