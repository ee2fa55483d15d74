"""Run the daemon's pipeline on a stored message: `govmilter scan` and the tests.

The stages run in the order Postfix would drive them, on the same checks and
rule set, so an officer sees exactly what the gateway would answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from govmilter import decision, replies
from govmilter.config import Config
from govmilter.metrics import Metrics
from govmilter.mime import Limits, walk
from govmilter.model import Action, Envelope, Mode, Stage, Transaction, Verdict
from govmilter.network import is_trusted
from govmilter.pipeline import Pipeline
from govmilter.ruleset import RuleSet
from govmilter.spool import Spool, iter_message_file


@dataclass
class ScanResult:
    verdict: Verdict
    tx: Transaction
    stage: Stage  # where the transaction ended
    durations_ms: dict[str, float] = field(default_factory=dict)
    gateway_host: tuple[str, ...] = ()  # [network] gateway_host: the scan says when it plays that host

    def close(self) -> None:
        """Release the message (its spool, its MIME walk's text): after the result is printed."""
        self.tx.close()

    def as_json(self) -> dict[str, Any]:
        """The JSON contract of `govmilter scan --json`: these keys stay; keys are only ever added."""
        direction, why = self.direction
        out: dict[str, Any] = {
            "action": self.verdict.action.value,
            "smtp_reply": self.verdict.smtp_reply(),
            "stage": self.stage.value,
            "ruleset": self.tx.ruleset.version,
            "direction": direction,
            "direction_reason": why,
            "hits": [
                {
                    "check": hit.check,
                    "rule": hit.rule,
                    "mode": hit.mode.value,
                    "action": hit.action.value,
                    "score": hit.score,
                    "reason": hit.reason or hit.text,
                }
                for hit in self.hits
            ],
            "add_headers": [list(h) for h in self.verdict.headers],
            "duration_ms": self.durations_ms,
        }
        monitor = self.tx.scratch.get("monitor_score")
        if monitor is not None:
            out["monitor"] = {"score": monitor[0], "would": monitor[1]}
        return out

    @property
    def hits(self) -> list[Verdict]:
        """The findings with a rule: the score's own summary (no rule, score 0) is not one."""
        return [hit for hit in self.tx.hits if hit.rule]

    @property
    def direction(self) -> tuple[str, str]:
        return direction_of(self.tx.envelope, self.gateway_host)

    @property
    def outcome(self) -> str:
        """accept, tag (accepted with X-Spam-Flag: YES), reject, tempfail or discard."""
        if self.verdict.action is Action.ACCEPT and ("X-Spam-Flag", "YES") in self.verdict.headers:
            return "tag"
        return self.verdict.action.value


def scan_message(
    pipeline: Pipeline,
    ruleset: RuleSet,
    config: Config,
    stream: BinaryIO,
    *,
    mail_from: str,
    rcpts: Sequence[str],
    client_ip: str = "127.0.0.1",
    helo: str = "localhost",
    auth_user: str = "",
    queue_id: str = "SCAN",
    mail_params: dict[str, str] | None = None,
    metrics: Metrics | None = None,
) -> ScanResult:
    """Drive every stage of the pipeline over one message, as the daemon would.

    The message goes to a spool as the daemon builds it (every header field, the empty
    line, the body). The result holds it open for its reader: call ScanResult.close().
    """
    envelope = Envelope(
        client_ip=client_ip,
        helo=helo,
        mail_from=mail_from.strip("<>"),
        auth_user=auth_user,
        queue_id=queue_id,
        mail_params={k.upper(): v for k, v in (mail_params or {}).items()},
        trusted_relay=is_trusted(client_ip, config.network.trusted_relays),
    )
    headers, body = iter_message_file(stream)
    settings = config.milter
    tx = Transaction(
        envelope=envelope,
        ruleset=ruleset,
        spool=Spool(None, settings.spool_threshold),  # the system's temporary directory: any user may scan
        max_header_fields=settings.max_header_fields,
        max_header_bytes=settings.max_header_bytes,
    )
    # the daemon's walk (Runtime.walk_limits), its text spilling to the system's temporary directory
    limits = Limits(text_memory=config.size.text_memory)
    tx.facts_loader = lambda: walk(tx.raw_chunks(), limits)
    started = time.perf_counter()
    try:
        verdict, stage = _drive(pipeline, tx, headers, body, rcpts)
        if verdict is None:
            verdict = decision.accept_verdict(tx)
            pipeline.accepted(tx)
        if metrics is not None:
            decision.record(tx, verdict, metrics, time.perf_counter() - started)
    except BaseException:
        tx.close()
        raise
    durations = {name: round(sec * 1000, 3) for name, sec in tx.scratch.get("durations", {}).items()}
    return ScanResult(verdict, tx, stage, durations, config.network.gateway_host)


def direction_of(envelope: Envelope, gateway_host: Sequence[str] = ()) -> tuple[str, str]:
    """inbound or outbound, and why, in the words the scan prints."""
    client = envelope.client_ip
    gateway = " (it is also the gateway host, [network] gateway_host)" if is_trusted(client, gateway_host) else ""
    if envelope.auth_user:
        return "outbound", f"the sender logged in (SMTP AUTH user {envelope.auth_user!r})"
    if envelope.trusted_relay:
        return "outbound", f"client {client} is a trusted relay ([network] trusted_relays){gateway}"
    return "inbound", f"client {client} is not a trusted relay and did not log in: mail from the Internet"


def _drive(
    pipeline: Pipeline,
    tx: Transaction,
    headers: Iterator[tuple[str, str]],
    body: Iterable[bytes],
    rcpts: Sequence[str],
) -> tuple[Verdict | None, Stage]:
    for stage in (Stage.CONNECT, Stage.MAIL):
        verdict = pipeline.run(stage, tx)
        if verdict:
            return verdict, stage
    for rcpt in rcpts:
        tx.envelope.rcpts.append(rcpt.strip("<>"))
        verdict = pipeline.run(Stage.RCPT, tx)
        if verdict:
            return verdict, Stage.RCPT
    for name, value in headers:
        tx.add_header(name, value)  # every field to the spool, the first ones to tx.headers: as the daemon
    tx.end_headers()
    verdict = pipeline.run(Stage.HEADERS, tx)
    if verdict:
        return verdict, Stage.HEADERS
    for chunk in body:
        tx.add_body(chunk)
        verdict = pipeline.run(Stage.BODY, tx)
        if verdict:
            return verdict, Stage.BODY
    return pipeline.run(Stage.EOM, tx), Stage.EOM


# ---- the readable report of `govmilter scan` ---------------------------------------------------


def rule_descriptions(ruleset: RuleSet) -> dict[tuple[str, str], str]:
    """(kind, rule id) -> description, from every compiled kind whose entries have both."""
    found: dict[tuple[str, str], str] = {}
    for kind, compiled in ruleset.compiled.items():
        for value in vars(compiled).values() if hasattr(compiled, "__dict__") else ():
            if not isinstance(value, tuple):
                continue
            for item in value:
                rule_id, description = getattr(item, "id", None), getattr(item, "description", None)
                if isinstance(rule_id, str) and isinstance(description, str):
                    found[(kind, rule_id)] = description
    return found


def report(
    result: ScanResult, config: Config, *, config_path: str | None, message: str, skipped: Sequence[str] = ()
) -> str:
    """What `govmilter scan` prints for people: what was judged, by what, and why."""
    from govmilter.checks.attachments import true_type

    tx, env = result.tx, result.tx.envelope
    direction, why = result.direction
    lines = [
        f"message     {message}",
        f"config      {config_path or 'none: the built-in defaults'}",
        f"rules       {config.rules.dir} (version {tx.ruleset.version})",
        f"envelope    MAIL FROM <{env.mail_from}>  RCPT {', '.join(f'<{r}>' for r in env.rcpts) or '-'}",
        f"            client {env.client_ip}  helo {env.helo}  auth {env.auth_user or '-'}",
        f"direction   {direction}: {why}",
    ]
    if env.client_ip == "127.0.0.1":
        lines.append(
            "            (no --client-ip: the scan plays 127.0.0.1, this host; give --client-ip 203.0.113.5 to "
            "judge the message as mail from the Internet)"
        )
    if skipped:
        lines.append(f"skipped     {', '.join(skipped)}")
    descriptions = rule_descriptions(tx.ruleset)
    lines.append("")
    if result.hits:
        lines.append("hits")
        for hit in result.hits:
            description = next((d for (_, rule), d in descriptions.items() if rule == hit.rule and d), "")
            score = f"score {hit.score:+g}" if hit.score else "no score"
            lines.append(f"  {hit.check}/{hit.rule}  {hit.action.value}  {score}  {hit.mode.value}")
            if description:
                lines.append(f"      {description}")
            if hit.reason or hit.text:
                lines.append(f"      {hit.reason or hit.text}")
    else:
        lines.append("hits        none")
    attachments = _attachments(tx, true_type)
    if attachments:
        lines.append("")
        lines.append("attachments")
        lines.extend(attachments)
    lines.append("")
    content = config.content
    total = _enforced_score(result)
    tag_at, reject_at = content.tag_threshold, content.reject_threshold
    if tx.envelope.internal:  # outbound mail has thresholds of its own
        tag_at, reject_at = content.outbound_tag_threshold, content.outbound_reject_threshold
    lines.append(f"score       {total:.1f} (tag at {tag_at:g}, reject at {reject_at:g})")
    monitor = tx.scratch.get("monitor_score")
    if monitor is not None:
        lines.append(f"monitor     with every monitored rule enforced: score {monitor[0]:.1f}, would {monitor[1]}")
    for hit in result.hits:
        if hit.mode is Mode.MONITOR and hit.action in (Action.REJECT, Action.TEMPFAIL, Action.DISCARD):
            reply = " ".join(p for p in (hit.code, hit.enhanced, hit.text) if p)
            lines.append(f"monitor     {hit.check}/{hit.rule} would {hit.action.value}: {reply}")
    lines.append(f"verdict     {result.outcome} (at {result.stage.value}, by {result.verdict.check or 'no check'})")
    lines.append(f"reply       {result.verdict.smtp_reply() or '250 (accepted)'}")
    if result.verdict.code and result.verdict.action in (Action.REJECT, Action.TEMPFAIL):
        # the lines the daemon adds to a refusal (replies.py): the reference, the contact line
        added = replies.reply_lines("", "<Postfix's queue id>", config.milter.reply_contact)
        lines.extend(f"            {line}" for line in added)
    for name, value in result.verdict.headers:
        lines.append(f"header      {name}: {value}")
    return "\n".join(lines)


def _enforced_score(result: ScanResult) -> float:
    return sum(h.score for h in result.hits if h.score and h.mode is Mode.ENFORCE)


def _attachments(tx: Transaction, true_type: Callable[..., str]) -> list[str]:
    try:
        parts = tx.facts().parts
    except Exception:  # the walk failed: the hits say why
        return []
    lines = []
    for part in parts:
        if not (part.filename or part.is_attachment):
            continue
        kind = true_type(part.head, part.probes, part.end) if part.head else ""
        name = part.filename or "(no name)"
        lines.append(
            f"  {part.path}  {name!r}  declared {part.content_type or '-'}  true type {kind or 'unknown'}"
            f"  {part.decoded_size} bytes"
        )
        if part.archive_names:
            lines.append(f"      holds {', '.join(repr(n) for n in part.archive_names[:20])}")
    return lines


# ---- `govmilter rules test DIR`: a folder of samples with their expected verdicts -----------------

OUTCOMES = ("accept", "tag", "reject", "tempfail", "discard")
SIDECAR_KEYS = {
    "description": "what the sample is, for people",
    "mail_from": "the envelope sender (required; \"\" is the null sender)",
    "rcpts": "the envelope recipients, a list (required)",
    "client_ip": 'the connecting client (default "203.0.113.5": the Internet)',
    "helo": 'the HELO name (default "mail.example.net")',
    "auth": "the SMTP AUTH user (default none)",
    "expect": "accept | tag | reject | tempfail | discard (required); tag is accepted with X-Spam-Flag: YES",
    "must_hit": "rule ids that must fire (any mode), rule or check/rule",
    "must_not_hit": "rule ids that must not fire",
}


@dataclass
class SampleResult:
    name: str
    expected: str
    got: str
    problems: list[str]
    hits: list[str]
    description: str = ""

    @property
    def passed(self) -> bool:
        return not self.problems


def _strings(value: object) -> list[str] | None:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def check_sample(pipeline: Pipeline, ruleset: RuleSet, config: Config, message: Any) -> SampleResult:
    """Scan one `NAME.eml` with the envelope of its `NAME.toml` and compare with what it expects."""
    import tomllib
    from pathlib import Path

    path = Path(message)
    sidecar = path.with_suffix(".toml")
    name = path.name
    if not sidecar.exists():
        return SampleResult(name, "?", "-", [f"no {sidecar.name} beside it (envelope and expect)"], [])
    try:
        data = tomllib.loads(sidecar.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        return SampleResult(name, "?", "-", [f"{sidecar.name}: {exc}"], [])
    problems = [f"{sidecar.name}: unknown key {key!r}" for key in data if key not in SIDECAR_KEYS]
    expected = data.get("expect")
    rcpts = _strings(data.get("rcpts"))
    must, must_not = _strings(data.get("must_hit", [])), _strings(data.get("must_not_hit", []))
    mail_from = data.get("mail_from")
    texts = {k: data.get(k, d) for k, d in (("client_ip", "203.0.113.5"), ("helo", "mail.example.net"), ("auth", ""))}
    if expected not in OUTCOMES:
        problems.append(f"{sidecar.name}: expect = {expected!r}: expected one of {', '.join(OUTCOMES)}")
    if not rcpts:
        problems.append(f"{sidecar.name}: rcpts: expected a list of addresses")
    if not isinstance(mail_from, str):
        problems.append(f"{sidecar.name}: mail_from: expected an address (\"\" for the null sender)")
    if must is None or must_not is None:
        problems.append(f"{sidecar.name}: must_hit and must_not_hit are lists of rule ids")
    for key, value in texts.items():
        if not isinstance(value, str):
            problems.append(f"{sidecar.name}: {key}: expected text")
    description = data.get("description", "")
    description = description if isinstance(description, str) else ""
    if problems:
        return SampleResult(name, str(expected), "-", problems, [], description)
    assert rcpts is not None and must is not None and must_not is not None and isinstance(mail_from, str)
    with path.open("rb") as stream:
        result = scan_message(
            pipeline,
            ruleset,
            config,
            stream,
            mail_from=mail_from,
            rcpts=rcpts,
            client_ip=str(texts["client_ip"]),
            helo=str(texts["helo"]),
            auth_user=str(texts["auth"]),
        )
    try:
        fired = [f"{h.check}/{h.rule}" for h in result.hits]
        got = result.outcome
    finally:
        result.close()
    names = {*fired, *(f.partition("/")[2] for f in fired)}
    if got != expected:
        problems.append(f"expected {expected}, got {got}")
    problems += [f"{rule} did not fire" for rule in must if rule not in names]
    problems += [f"{rule} fired" for rule in must_not if rule in names]
    return SampleResult(name, str(expected), got, problems, fired, description)


def table(results: Sequence[SampleResult]) -> str:
    """The results as a table, one sample a line, then the count."""
    width = max([len(r.name) for r in results] + [6])
    lines = [f"{'result':<6}  {'sample':<{width}}  {'expect':<8}  {'got':<8}  why / rules that fired"]
    for r in results:
        why = "; ".join(r.problems) if r.problems else (" ".join(r.hits) or "-")
        lines.append(f"{'PASS' if r.passed else 'FAIL':<6}  {r.name:<{width}}  {r.expected:<8}  {r.got:<8}  {why}")
    failed = sum(not r.passed for r in results)
    lines.append(f"{len(results)} samples: {len(results) - failed} passed, {failed} failed")
    return "\n".join(lines)
