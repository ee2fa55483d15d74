"""The forwarding check: QD 06/2022 Dieu 8.5, no automatic forwarding across the state boundary.

Outbound (a trusted relay or an authenticated user sending to a non-government
recipient), a forward by a government mailbox is refused; inbound (an Internet
client sending to a local mailbox), a forward by a non-government mailbox is
refused. The class that matters is the forwarder's, the mailbox the trace names
(SRS, Gmail caf, the header a filter wrote), not the header From. Forwards that
stay within government domains pass. Decisive and strong traces and the two
inferences decide; weaker evidence only scores, and a rule-file threshold of
accumulated score decides too. Inbound Message-IDs are remembered when the
message is accepted, to recognise redirects that leave no header.

What exempts, and what it rests on (a sender can write any header line; only the
envelope, the connection and the gateway's own memory are not his to choose):

- The null sender (MAIL FROM:<>) exempts the whole message: `dsn` when it is a
  multipart/report, `null-sender` otherwise. Delivery reports and automatic replies
  are sent so (RFC 3464, RFC 3834); the forwarders we know keep the sender they
  were given and never choose <>. A multipart/report from a non-null sender is
  judged like any other message: its Content-Type is a label.
- An automatic reply (Auto-Submitted: auto-replied or auto-notified) exempts only
  a mailbox's own filter header on its own reply or notification: an
  X-Zimbra-Forwarded, Exchange rules loop or Delivered-To trace that names the
  header From. A forward keeps the original author's From, and a Sieve redirect,
  X-Forwarded-*, the envelope and the inferences are never on an auto-reply: with
  them the label excuses nothing. (MAIL FROM is not the author: Pigeonhole can
  send a redirect with the redirecting mailbox as MAIL FROM.)
- A list copy: traces carried inside a list's mail describe the post's way to the
  list, not the list's delivery to us, and do not refuse it. The list's own traces
  still decide. Precisely (traces.ListCopy): list mail is a message from a
  list server's envelope sender (`x-bounces[+verp]@`, `owner-x@`, `x-owner@`,
  `x-request@`, `x-return-...@`, `x+bounces-...@`, `x+bnc...@`, `bounce(s)-...@`,
  BATV-signed or not) or, inbound only, one with a list field (List-Id, List-Post,
  List-Help, List-(Un)Subscribe, List-Owner, List-Archive, X-Mailman-Version,
  X-BeenThere, Mailing-List, Precedence: list/bulk). Its boundary is the topmost
  field that came with the post or that the list wrote when it took it: a list
  field (inbound only), an originator field of the post (From, To, Subject, Date,
  Message-ID), a Delivered-To / X-Original-To of the list's address, a Received
  line `for` the list's address, or (inbound, an outside list) a Received line `by`
  a host of the list's envelope domain. The list's own traces are:
  * the envelope: SRS, Exchange SRS, Gmail +caf_ in MAIL FROM (the last hop wrote it);
  * the transaction: the relay inference;
  * header traces above the boundary (fields are prepended on the way: they came
    after the list), unless they name the list itself (the list server delivering to
    its own list address).
  Traces at or below the boundary, and the Message-ID memory (the poster wrote the
  Message-ID and the list keeps it), do not count; list mail is not scored.
  A poster forges anchors only inside his post, below the real ones: the topmost
  anchor wins, so he cannot lift his trace above it. A List-Id never exempts a
  message whose envelope is a forward, and outbound a list copy is only one an
  unauthenticated relay sends with a list sender of a local domain (our own list
  server), whose list fields (appended below the post) place no boundary: a government
  mailbox's redirect through the relay with a forged List-Id stays refused, and a
  Sieve redirect of real list mail writes its trace above every list field.
- BATV (prvs=) is a signature, never a forward and never an exemption: the address
  inside it is used where the sender counts.
- The gateway host (`gateway-host`): a client address in [network] gateway_host
  (127.0.0.1 and ::1: Postfix's sendmail/cron path through non_smtpd_milters, a program
  on the gateway connecting to localhost) is never refused: no mailbox lives on the
  gateway, so nothing it sends is a mailbox's forward. A forward it would have refused
  is recorded as `exempt-gateway-host` (logged, counted action="exempt", tagged), never
  refused. The connection is not the sender's to choose.
- An authenticated submission with no deciding trace (`authenticated-new`): SMTP
  AUTH is the connection's, not a header. It only keeps weak evidence (Resent-*,
  an old Received for) from adding up; a decisive trace or the Message-ID memory
  still decides.

It reads only the envelope and the header fields, but decides at the end of
the message, first of the checks there (before clamd): deciding at the end of
the headers cost an extra round trip with Postfix on every message, and the
SMTP client sees the same refusal either way (after its final dot).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from govmilter.checks import CheckHooks
from govmilter.checks.forwarding.memory import LocalSeen, SeenMemory
from govmilter.checks.forwarding.rules import DEFAULT_RULES, SCHEMA, ForwardingRules
from govmilter.checks.forwarding.rules import compile_rules as compile_rules
from govmilter.checks.forwarding.traces import (
    HeaderIndex,
    ListCopy,
    Strength,
    Trace,
    authored_by,
    auto_replied,
    delivered_to_traces,
    envelope_rewrite,
    envelope_traces,
    exemption,
    header_from,
    header_traces,
    list_copy,
    message_id,
    received_for_traces,
    weak_traces,
)
from govmilter.clients.redis import RedisStore
from govmilter.config import Config
from govmilter.domains import DomainClass, Domains
from govmilter.metrics import Metrics
from govmilter.model import Action, Envelope, Mode, Stage, Transaction, Verdict
from govmilter.network import is_trusted
from govmilter.text.escape import log_plain as clean

log = logging.getLogger("govmilter.forwarding")

RULE_KIND = SCHEMA.kind
HEADER = "X-Govmilter-Forwarding"
OUTBOUND = "outbound"
INBOUND = "inbound"

# The Message-ID is the poster's and a list keeps it: on list mail the memory says nothing.
CARRIED_BY_LISTS = frozenset({"message-id-memory"})


@dataclass(frozen=True)
class Finding:
    """A forward across the boundary: the trace that shows it and whose forward it is."""

    direction: str
    trace: Trace
    forwarder_class: DomainClass
    targets: tuple[str, ...]  # the recipients on the forbidden side

    @property
    def forwarder(self) -> str:
        return self.trace.forwarder or "unknown"


def safe_header_value(value: str, limit: int = 200) -> str:
    """ASCII, one line, bounded: it came from the wire and goes back into a header."""
    return clean(value, limit).encode("ascii", "replace").decode("ascii")


class ForwardingCheck(CheckHooks):
    name = "forwarding"
    stages = frozenset({Stage.EOM})

    def __init__(self, config: Config, metrics: Metrics, memory: SeenMemory):
        self.domains = Domains.from_names(config.domains.local, config.domains.government)
        self.settings = config.forwarding
        self.gateway_host = config.network.gateway_host
        self.metrics = metrics
        self.memory = memory

    # --- where the message goes -------------------------------------------------------------

    def direction(self, env: Envelope) -> tuple[str, tuple[str, ...]]:
        """outbound / inbound and the recipients on the forbidden side; ("", ()) for neither."""
        if env.internal:
            outside = tuple(r for r in env.rcpts if not self.domains.is_government(r))
            return (OUTBOUND, outside) if outside else ("", ())
        local = tuple(r for r in env.rcpts if self.domains.is_local(r))
        return (INBOUND, local) if local else ("", ())

    def forwarder_class(self, direction: str, trace: Trace) -> DomainClass:
        if trace.forwarder:
            return self.domains.classify(trace.forwarder)
        # a trace without a mailbox, outbound, was written inside our own organisation
        return DomainClass.LOCAL if direction == OUTBOUND else DomainClass.OTHER

    @staticmethod
    def crosses(direction: str, cls: DomainClass) -> bool:
        """Whether a forward by a mailbox of this class crosses the boundary in this direction."""
        return cls.government if direction == OUTBOUND else cls is DomainClass.OTHER

    # --- the traces -----------------------------------------------------------------------

    def inferred(self, direction: str, tx: Transaction, fields: HeaderIndex) -> list[Trace]:
        """Forwards that leave no header: account forwarding through our relay, and redirects."""
        env = tx.envelope
        found = delivered_to_traces(fields, env.rcpts)
        if direction != OUTBOUND:
            return found
        rewrite = envelope_rewrite(env.mail_from)
        sender = rewrite.original if rewrite and rewrite.kind == "batv" and rewrite.original else env.mail_from
        if env.trusted_relay and not env.auth_user and sender and not self.domains.is_local(sender):
            found.append(
                Trace(
                    "relay-inference",
                    Strength.INFERENCE,
                    "",
                    f"unauthenticated relay {env.client_ip} with MAIL FROM {env.mail_from}",
                )
            )
        mid = message_id(fields)
        if mid:
            mailbox = self.memory.recall(mid)
            if mailbox:
                found.append(
                    Trace("message-id-memory", Strength.INFERENCE, mailbox, f"Message-ID <{mid}> came in to {mailbox}")
                )
        return found

    def list_copy(self, direction: str, env: Envelope, fields: HeaderIndex) -> ListCopy | None:
        """The list copy this message is (see the module docstring), or None.

        Outbound only our own list server sends list copies: an unauthenticated relay with a
        list sender of a local domain; list fields neither make list mail nor place the
        boundary there. Inbound a list field is enough, and a Received line by a host of an
        outside list's envelope domain anchors the boundary too.
        """
        if direction == OUTBOUND:
            if env.auth_user:
                return None
            found = list_copy(env.mail_from, fields, inbound=False, by_host=False)
            if found is None or found.sender is None or not self.domains.is_local(found.sender.domain):
                return None
            return found
        by_host = bool(env.mail_from) and not self.domains.is_local(env.mail_from)
        return list_copy(env.mail_from, fields, inbound=True, by_host=by_host)

    @staticmethod
    def discounted(trace: Trace, listed: ListCopy | None, authors: tuple[str, ...]) -> str:
        """Why a trace is not this message's forward ("" when it counts): see the module docstring."""
        if authors and authored_by(trace, authors):
            return "auto-reply"
        if listed is not None:
            if trace.name in CARRIED_BY_LISTS:
                return "mailing-list"
            if trace.position >= 0 and (listed.carried_inside(trace) or listed.own_delivery(trace)):
                return "mailing-list"
        return ""

    def run(self, stage: Stage, tx: Transaction) -> Sequence[Verdict]:
        env = tx.envelope
        direction, targets = self.direction(env)
        if not direction:
            return []
        rules: ForwardingRules = tx.ruleset.get(RULE_KIND) or DEFAULT_RULES
        fields = HeaderIndex(tx.headers)
        traces = header_traces(fields, env.mail_from, env.trusted_relay) + envelope_traces(env.mail_from)
        traces += self.inferred(direction, tx, fields)
        crossing = [
            Finding(direction, t, cls, targets)
            for t in traces
            if t.strength.decides and self.crosses(direction, cls := self.forwarder_class(direction, t))
        ]
        whole = exemption(env.mail_from, fields)
        if whole:  # the null sender: nothing in it is judged, nothing is scored
            return [self._exempt_hit(whole, crossing[0])] if crossing else []

        listed = self.list_copy(direction, env, fields)
        authors: tuple[str, ...] = ()
        if auto_replied(fields):
            author = header_from(fields)
            authors = (author,) if author else ()
        deciding: list[Finding] = []
        dropped: list[tuple[str, Finding]] = []
        for finding in crossing:
            why = self.discounted(finding.trace, listed, authors)
            if why:
                dropped.append((why, finding))
            else:
                deciding.append(finding)

        scored = self._scored(direction, tx, fields, traces, rules, authors)
        by_score = self._score_finding(direction, scored, rules, targets)
        # list mail is not scored, nor a person's own authenticated submission with no deciding trace
        quiet = listed is not None or (not deciding and bool(env.auth_user) and direction == OUTBOUND)
        hits: list[Verdict] = []
        if quiet:
            if not deciding:
                skipped = dropped[0][1] if dropped else (crossing[0] if crossing else by_score)
                why = dropped[0][0] if dropped else ("mailing-list" if listed is not None else "authenticated-new")
                if skipped is not None:
                    hits.append(self._exempt_hit(why, skipped))
            by_score = None
        else:
            if dropped and not deciding:
                hits.append(self._exempt_hit(dropped[0][0], dropped[0][1]))
            # the weight stays out of Verdict.score: the content check adds every hit's score to
            # the spam score, and forwarding evidence is not spam evidence
            hits.extend(
                Verdict(
                    Action.CONTINUE,
                    self.name,
                    rule=f"score-{t.name}",
                    reason=f"{t.detail} (weight {w:g} of {rules.score_threshold:g})",
                )
                for t, w in scored
            )
        if deciding:
            deciding.sort(key=lambda f: -int(f.trace.strength))
            hits.append(self._decide(tx, deciding[0], rules))
        elif by_score is not None:
            hits.append(self._decide(tx, by_score, rules))
        return hits

    def _score_finding(
        self, direction: str, scored: list[tuple[Trace, float]], rules: ForwardingRules, targets: tuple[str, ...]
    ) -> Finding | None:
        """Weak evidence that adds up to the rule file's threshold decides like a strong trace."""
        total = sum(w for _, w in scored)
        if not scored or rules.score_threshold <= 0 or total < rules.score_threshold:
            return None
        named = next((t for t, _ in scored if t.forwarder), None)
        trace = Trace(
            "score",
            Strength.INFERENCE,
            named.forwarder if named else "",
            f"evidence {'+'.join(t.name for t, _ in scored)} = {total:g} >= {rules.score_threshold:g}",
        )
        cls = self.forwarder_class(direction, trace)
        return Finding(direction, trace, cls, targets) if self.crosses(direction, cls) else None

    def _scored(
        self,
        direction: str,
        tx: Transaction,
        fields: HeaderIndex,
        traces: list[Trace],
        rules: ForwardingRules,
        authors: tuple[str, ...],
    ) -> list[tuple[Trace, float]]:
        """Evidence below INFERENCE, with its weight; a mailbox it names must be on the forbidden side."""
        evidence = [t for t in traces if not t.strength.decides]
        evidence += received_for_traces(fields, tx.envelope.rcpts) + weak_traces(fields)
        scored = []
        for trace in evidence:
            if trace.forwarder and not self.crosses(direction, self.domains.classify(trace.forwarder)):
                continue
            if authors and authored_by(trace, authors):
                continue
            weight = rules.scores.get(trace.name, 0.0)
            if weight > 0:
                scored.append((trace, weight))
        return scored

    # --- verdicts -------------------------------------------------------------------------

    def _exempt_hit(self, exempt: str, finding: Finding) -> Verdict:
        return Verdict(
            Action.CONTINUE,
            self.name,
            rule=f"exempt-{exempt}",
            reason=f"{finding.trace.name} ({finding.trace.detail}) not counted: {exempt}",
        )

    def _decide(self, tx: Transaction, finding: Finding, rules: ForwardingRules) -> Verdict:
        env = tx.envelope
        trace = finding.trace
        senders = [env.mail_from, header_from(tx.headers)]
        rewrite = envelope_rewrite(env.mail_from)
        if rewrite and rewrite.original:
            senders.append(rewrite.original)
        tag = (
            f"direction={finding.direction}; trace={trace.name}; "
            f"forwarder={safe_header_value(finding.forwarder)}; class={finding.forwarder_class.value}"
        )
        allowed = rules.allowed([s for s in senders if s], finding.targets, trace.forwarder)
        if is_trusted(env.client_ip, self.gateway_host):
            action = "exempt"
            verdict = Verdict(
                Action.CONTINUE,
                self.name,
                rule="exempt-gateway-host",
                reason=f"{trace.name} ({trace.detail}) not counted: gateway host {env.client_ip}",
                headers=((HEADER, f"{tag}; exempt=gateway-host"),),
            )
        elif allowed is not None:
            action = "allowed"
            verdict = Verdict(
                Action.CONTINUE,
                self.name,
                rule=f"allow-{allowed.id}",
                reason=f"{trace.name}: {trace.detail}; allowed by {allowed.id}",
                headers=((HEADER, f"{tag}; allowed={allowed.id}"),),
            )
        else:
            outbound = finding.direction == OUTBOUND
            action = "monitor" if rules.mode is Mode.MONITOR else "reject"
            verdict = Verdict(
                Action.REJECT,
                self.name,
                rule=f"{finding.direction}-{trace.name}",
                code=self.settings.reply_code,
                enhanced=self.settings.reply_enhanced,
                text=(self.settings.reply_text if outbound else self.settings.reply_text_inbound).format(),
                mode=rules.mode,
                reason=f"{finding.direction} forward by {finding.forwarder} ({finding.forwarder_class.value}): "
                f"{trace.detail}",
                headers=((HEADER, f"{tag}; action={action}"),) if rules.mode is Mode.MONITOR else (),
            )
        self.metrics.forwards.labels(direction=finding.direction, trace=trace.name, action=action).inc()
        log.info(
            "queue_id=%s forwarding direction=%s trace=%s forwarder=%s class=%s action=%s detail=%s",
            clean(env.queue_id) or "-",
            finding.direction,
            trace.name,
            clean(finding.forwarder),
            finding.forwarder_class.value,
            action,
            clean(trace.detail),
        )
        return verdict

    # --- the memory -----------------------------------------------------------------------

    def accepted(self, tx: Transaction) -> None:
        """Remember the Message-ID of a message accepted inbound for a local mailbox."""
        direction, targets = self.direction(tx.envelope)
        if direction != INBOUND:
            return
        mid = message_id(tx.headers)
        if mid:
            self.memory.remember(mid, targets[0])


def build_memory(config: Config, metrics: Metrics) -> SeenMemory:
    settings = config.forwarding
    local = LocalSeen(settings.memory_ttl, settings.memory_max_entries)
    store = None
    if settings.redis_url:
        store = RedisStore(settings.redis_url, settings.redis_timeout, settings.redis_prefix)
    return SeenMemory(local, metrics, store, settings.redis_retry_interval)


def build(config: Config, metrics: Metrics) -> ForwardingCheck:
    settings = config.forwarding
    for name in ("reply_text", "reply_text_inbound", "reply_code", "reply_enhanced"):
        value = getattr(settings, name)
        if not value.isascii() or "%" in value or "\r" in value or "\n" in value:
            raise ValueError(f"[forwarding] {name}: an SMTP reply must be one line of ASCII without '%'")
    if not (settings.reply_code.isdigit() and settings.reply_code.startswith(("4", "5"))):
        raise ValueError(f"[forwarding] reply_code = {settings.reply_code!r}: expected a 4xx or 5xx code")
    if settings.memory_ttl <= 0 or settings.memory_max_entries <= 0:
        raise ValueError("[forwarding] memory_ttl and memory_max_entries must be positive")
    return ForwardingCheck(config, metrics, build_memory(config, metrics))
