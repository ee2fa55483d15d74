"""Rule files -> one compiled, immutable RuleSet, and its reload without restart.

Every `*.toml` file of the rule directory names its `kind` (forwarding,
attachments, dnsbl, content); the check that owns that kind compiles the files
of its kind. Errors are collected across all files and reported as
`file:line: rule-id: message`. A RuleSet never changes: a reload builds a new
one and swaps a single reference, so a message keeps the set it started with.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from govmilter.model import EMPTY_RULESET, Mode, RuleSet

log = logging.getLogger("govmilter.rules")


@dataclass(frozen=True)
class RuleProblem:
    path: str
    line: int
    rule_id: str
    message: str

    def __str__(self) -> str:
        rule = f" {self.rule_id}:" if self.rule_id else ""
        return f"{self.path}:{self.line}:{rule} {self.message}"


class RuleErrors(Exception):
    """One or more problems in the rule files; str() lists them one per line."""

    def __init__(self, problems: Sequence[RuleProblem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(frozen=True)
class RuleFile:
    path: str
    text: str
    data: dict[str, Any]

    def line_of(self, rule_id: str) -> int:
        """The line where `id = "rule_id"` stands (1 if it cannot be found)."""
        if rule_id:
            pattern = re.compile(r"^\s*id\s*=\s*[\"']" + re.escape(rule_id) + r"[\"']", re.M)
            match = pattern.search(self.text)
            if match:
                return self.text.count("\n", 0, match.start()) + 1
        return 1

    def problem(self, rule_id: str, message: str) -> RuleProblem:
        return RuleProblem(self.path, self.line_of(rule_id), rule_id, message)

    def entry_line(self, table: str, index: int, key: str = "") -> int:
        """The line of the index-th (0-based) `[[table]]` entry, or of `key = ...` inside it.

        tomllib gives no positions; this finds the header text (1 if not found).
        """
        header = re.compile(r"^[ \t]*\[\[[ \t]*" + re.escape(table) + r"[ \t]*\]\]", re.M)
        starts = [m.start() for m in header.finditer(self.text)]
        if index >= len(starts):
            return 1
        start = starts[index]
        line = self.text.count("\n", 0, start) + 1
        if key:
            end = self.text.find("\n[", start + 1)
            body = self.text[start : end if end >= 0 else len(self.text)]
            match = re.search(r"^[ \t]*" + re.escape(key) + r"[ \t]*=", body, re.M)
            if match:
                line += body.count("\n", 0, match.start())
        return line

    def key_line(self, key: str) -> int:
        """The line of a top-level `key = ...` (1 if not found)."""
        match = re.search(r"^[ \t]*" + re.escape(key) + r"[ \t]*=", self.text, re.M)
        return self.text.count("\n", 0, match.start()) + 1 if match else 1

    def entry_problem(self, table: str, index: int, rule_id: str, message: str, key: str = "") -> RuleProblem:
        return RuleProblem(self.path, self.entry_line(table, index, key), rule_id, message)


# A compiler turns every file of its kind into the object its check reads.
Compiler = Callable[[Sequence[RuleFile]], Any]


EMPTY = EMPTY_RULESET


def parse_mode(value: Any, rule_file: RuleFile, rule_id: str, problems: list[RuleProblem]) -> Mode:
    """Read an `enforce|monitor` value, recording a problem when it is neither."""
    if value is None:
        return Mode.ENFORCE
    if value in ("enforce", "monitor"):
        return Mode(value)
    problems.append(rule_file.problem(rule_id, f"mode = {value!r}: expected enforce or monitor"))
    return Mode.ENFORCE


def directory_digest(directory: str | Path) -> str:
    """Hash of the names and contents of the rule files: the rule-set version."""
    digest = hashlib.sha256()
    for path in sorted(Path(directory).glob("*.toml")):
        digest.update(path.name.encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def load_ruleset(directory: str | Path, compilers: Mapping[str, Compiler]) -> RuleSet:
    """Read and compile every rule file; raise RuleErrors listing every problem found."""
    root = Path(directory)
    problems: list[RuleProblem] = []
    by_kind: dict[str, list[RuleFile]] = {kind: [] for kind in compilers}
    try:
        paths = sorted(root.glob("*.toml"))
        if not root.is_dir():
            raise OSError(f"{root} is not a readable directory")
        version = directory_digest(root)
    except OSError as exc:
        raise RuleErrors([RuleProblem(str(root), 0, "", f"cannot read rule directory: {exc}")]) from exc
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
            data = tomllib.loads(text)
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(RuleProblem(str(path), 0, "", f"cannot read: {exc}"))
            continue
        except tomllib.TOMLDecodeError as exc:
            line = _toml_error_line(exc)
            problems.append(RuleProblem(str(path), line, "", f"not valid TOML: {exc}"))
            continue
        kind = data.get("kind")
        if not isinstance(kind, str) or kind not in compilers:
            known = ", ".join(sorted(compilers))
            problems.append(RuleProblem(str(path), 1, "", f"kind = {kind!r}: expected one of {known}"))
            continue
        by_kind[kind].append(RuleFile(str(path), text, data))
    compiled: dict[str, Any] = {}
    for kind, compiler in compilers.items():
        try:
            compiled[kind] = compiler(by_kind[kind])
        except RuleErrors as exc:
            problems.extend(exc.problems)
    if problems:
        raise RuleErrors(problems)
    return RuleSet(version=version, compiled=compiled)


def _toml_error_line(exc: tomllib.TOMLDecodeError) -> int:
    match = re.search(r"line (\d+)", str(exc))
    return int(match.group(1)) if match else 1


class RuleStore:
    """Holds the current RuleSet and swaps it when the rule directory changes."""

    def __init__(
        self,
        directory: str | Path,
        compilers: Mapping[str, Compiler],
        on_reload: Callable[[str, RuleSet | None, RuleErrors | None], None] | None = None,
    ):
        self.directory = Path(directory)
        self.compilers = compilers
        self.on_reload = on_reload
        self._current = load_ruleset(self.directory, compilers)  # a broken start is fatal
        self._seen_digest = self._current.version
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def current(self) -> RuleSet:
        return self._current  # one reference read: atomic under the GIL

    def reload_if_changed(self) -> str:
        """Rebuild when the directory changed. Returns unchanged | reloaded | failed."""
        try:
            digest = directory_digest(self.directory)
        except OSError as exc:
            digest = f"unreadable:{exc}"
        if digest == self._seen_digest:
            return "unchanged"
        self._seen_digest = digest
        try:
            ruleset = load_ruleset(self.directory, self.compilers)
        except RuleErrors as exc:
            log.error("rules reload=failed keeping=%s problems=%r", self._current.version, str(exc))
            if self.on_reload:
                self.on_reload("failed", None, exc)
            return "failed"
        self._current = ruleset
        log.info("rules reload=ok version=%s", ruleset.version)
        if self.on_reload:
            self.on_reload("reloaded", ruleset, None)
        return "reloaded"

    def start_watching(self, interval: float) -> None:
        """Poll the directory in a daemon thread (libmilter leaves us no SIGHUP)."""

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.reload_if_changed()
                except Exception:  # the watcher must outlive any surprise
                    log.exception("rules watcher error")

        self._thread = threading.Thread(target=loop, name="rules-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
