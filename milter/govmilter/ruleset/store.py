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
import os
import re
import shutil
import threading
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from govmilter.model import EMPTY_RULESET, Mode, RuleSet
from govmilter.ruleset.errors import explain_toml_error, kind_message

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
    return _load(Path(directory), compilers)[0]


def _load(root: Path, compilers: Mapping[str, Compiler]) -> tuple[RuleSet, dict[str, bytes]]:
    """The compiled rule set and the bytes it was compiled from (file name -> content).

    Each file is read once: the version, the compiled rules and a kept copy all come from the
    same bytes, even when an officer saves a file while it is being read.
    """
    problems: list[RuleProblem] = []
    by_kind: dict[str, list[RuleFile]] = {kind: [] for kind in compilers}
    try:
        if not root.is_dir():
            raise OSError(f"{root} is not a readable directory")
        paths = sorted(root.glob("*.toml"))
    except OSError as exc:
        raise RuleErrors([RuleProblem(str(root), 0, "", f"cannot read rule directory: {exc}")]) from exc
    files: dict[str, bytes] = {}
    digest = hashlib.sha256()  # the same hash as directory_digest
    for path in paths:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            problems.append(RuleProblem(str(path), 0, "", f"cannot read: {exc}"))
            continue
        files[path.name] = raw
        digest.update(path.name.encode() + b"\0")
        digest.update(raw + b"\0")
        try:
            text = raw.decode("utf-8")
            if "\r" in text:  # as a file read in text mode: universal newlines
                text = text.replace("\r\n", "\n").replace("\r", "\n")
            data = tomllib.loads(text)
        except UnicodeDecodeError as exc:
            problems.append(RuleProblem(str(path), 0, "", f"cannot read: {exc}"))
            continue
        except tomllib.TOMLDecodeError as exc:
            line, message = explain_toml_error(text, exc)  # in plain words, with a hint (errors.py)
            problems.append(RuleProblem(str(path), line, "", message))
            continue
        kind = data.get("kind")
        if not isinstance(kind, str) or kind not in compilers:
            problems.append(RuleProblem(str(path), 1, "", kind_message(kind, compilers)))
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
    return RuleSet(version=digest.hexdigest()[:12], compiled=compiled), files


# Where the last good copy of the rule files lives inside [rules] last_good_dir: a symlink to a
# directory named after the version, swapped in one rename, so a crash never leaves half a copy.
CURRENT = "current"

# The problems /health and the start-up log show at most, then "... and N more".
SHOWN_PROBLEMS = 20


class RuleStore:
    """Holds the current RuleSet and swaps it when the rule directory changes.

    Every rule set that loads is also kept on disk (`last_good`). At start, a rule directory
    that does not load falls back to that copy, loudly (`fallback` holds the errors), instead of
    leaving the gateway without a milter; the watcher keeps reading the real directory, and its
    first version that loads takes over. With no copy either, the start fails with the errors.
    """

    def __init__(
        self,
        directory: str | Path,
        compilers: Mapping[str, Compiler],
        on_reload: Callable[[str, RuleSet | None, RuleErrors | None], None] | None = None,
        last_good: str | Path | None = None,
    ):
        self.directory = Path(directory)
        self.compilers = compilers
        self.on_reload = on_reload
        self.last_good = Path(last_good) if last_good else None
        self.fallback: RuleErrors | None = None  # the rule directory's errors while the copy serves
        try:
            self._current, files = _load(self.directory, compilers)
        except RuleErrors as errors:
            self._current = self._fall_back(errors)
            self._seen_digest = self._digest()  # the broken content: its first change is tried
        else:
            self._seen_digest = self._current.version
            self._keep(self._current, files)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def kept(self) -> Path | None:
        """The directory holding the last good copy (a symlink to its version's directory)."""
        return self.last_good / CURRENT if self.last_good else None

    def _fall_back(self, errors: RuleErrors) -> RuleSet:
        kept = self.kept
        if kept is None or not kept.is_dir():
            where = f"no last good copy in {self.last_good}" if self.last_good else "[rules] last_good_dir is off"
            errors.problems.append(RuleProblem(str(self.directory), 0, "", f"cannot start: {where}"))
            raise RuleErrors(errors.problems) from errors
        try:
            ruleset = load_ruleset(kept, self.compilers)
        except RuleErrors as copy_errors:
            note = RuleProblem(str(kept), 0, "", "the last good copy does not load either")
            raise RuleErrors([*errors.problems, note, *copy_errors.problems]) from errors
        self.fallback = errors
        log.error(
            "rules start=fallback dir=%s serving=%s version=%s errors=%d problems=%r",
            self.directory,
            kept.resolve(),
            ruleset.version,
            len(errors.problems),
            str(errors),  # every problem, as `rules check` prints them
        )
        return ruleset

    def _digest(self) -> str:
        try:
            return directory_digest(self.directory)
        except OSError as exc:
            return f"unreadable:{exc}"

    def _keep(self, ruleset: RuleSet, files: Mapping[str, bytes]) -> None:
        """Write the files of a rule set that loaded to last_good/<version>, then point `current` at it."""
        if self.last_good is None:
            return
        try:
            keep_copy(self.last_good, ruleset.version, files)
        except OSError as exc:  # the rules serve; only the safety net is missing
            log.warning("rules cannot keep the last good copy in %s: %s", self.last_good, exc)

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
            ruleset, files = _load(self.directory, self.compilers)
        except RuleErrors as exc:
            if self.fallback is not None:
                self.fallback = exc
            log.error("rules reload=failed keeping=%s problems=%r", self._current.version, str(exc))
            if self.on_reload:
                self.on_reload("failed", None, exc)
            return "failed"
        self._current = ruleset
        if self.fallback is not None:
            log.warning("rules fallback=over dir=%s version=%s", self.directory, ruleset.version)
        self.fallback = None
        log.info("rules reload=ok version=%s", ruleset.version)
        self._keep(ruleset, files)
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


def shown_problems(errors: RuleErrors) -> list[str]:
    """The first SHOWN_PROBLEMS problems as text, then how many more there are."""
    shown = [str(problem) for problem in errors.problems[:SHOWN_PROBLEMS]]
    if len(errors.problems) > SHOWN_PROBLEMS:
        shown.append(f"... and {len(errors.problems) - SHOWN_PROBLEMS} more")
    return shown


def keep_copy(last_good: Path, version: str, files: Mapping[str, bytes]) -> None:
    """Make last_good/current the given files, atomically: a crash leaves the old copy or the new one.

    The copy is written to a directory named after the version (the files' hash), synced, then
    `current` is swapped to it in one rename; other versions are removed afterwards. The parent
    of last_good must exist (the package makes /var/lib/govmilter): nothing else is created.
    """
    last_good.mkdir(mode=0o750, exist_ok=True)
    target = last_good / version
    if not target.is_dir():
        staging = last_good / f".{version}.{os.getpid()}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(mode=0o750)
        for name, raw in files.items():
            with os.fdopen(os.open(staging / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640), "wb") as out:
                out.write(raw)
                out.flush()
                os.fsync(out.fileno())
        _fsync_dir(staging)
        os.replace(staging, target)
    link = last_good / f".{CURRENT}.{os.getpid()}.tmp"
    link.unlink(missing_ok=True)
    link.symlink_to(version)  # relative: the copy stays valid if the state directory moves
    os.replace(link, last_good / CURRENT)
    _fsync_dir(last_good)
    for entry in last_good.iterdir():
        if entry.name not in (version, CURRENT) and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
