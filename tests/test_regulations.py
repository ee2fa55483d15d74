"""Each regulation reference is defined once (govmilter/regulations.py) and every reply text is
configuration: no string literal elsewhere in the code names an article of the decision."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from govmilter import regulations
from govmilter.config import Config

PACKAGE = Path(__file__).resolve().parents[1] / "milter" / "govmilter"
REFERENCE = re.compile(r"QD \d+/\d{4}|Dieu \d")


def literals(path: Path) -> list[tuple[int, str]]:
    """String constants of a module that are not docstrings (pieces of f-strings included)."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def test_no_module_but_regulations_spells_a_regulation_reference() -> None:
    found = [
        f"{path.relative_to(PACKAGE)}:{line}: {text!r}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "regulations.py"
        for line, text in literals(path)
        if REFERENCE.search(text)
    ]
    assert found == []


def test_the_default_replies_cite_the_references_of_regulations_py() -> None:
    config = Config()
    assert regulations.MALWARE in config.antivirus.reply_text_virus
    assert regulations.MALWARE in config.attachments.reply_text
    assert regulations.ATTACHMENT_CAP in config.size.reply_text_attachment_cap
    assert regulations.FORWARDING in config.forwarding.reply_text
    assert regulations.BLOCKLISTS in config.dnsbl.reply_text
    assert regulations.SPAM_SCORE in config.content.reply_text_spam
    assert regulations.SECRET_MARKINGS in config.content.reply_text_unreadable
    assert regulations.SPAM_SCORE == "QD 06/2022 Dieu 8.3, Dieu 10.2.c"
