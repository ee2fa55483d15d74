"""The `auth` check (inbound SPF, DKIM, DMARC, ARC) and the `dkim` check (outbound signing).

`auth` runs at end of message on mail that is not from a trusted relay or an
authenticated user, before the content check: the weights of its results, set by
the officers in rule files of kind "auth", join the spam score like the
blocklists' weights. It adds Authentication-Results (RFC 8601) under
`[auth] authserv_id`, and marks incoming Authentication-Results fields that claim
that id for removal (forged). A DMARC failure under p=reject is refused (550
5.7.1, `[auth] dmarc_reject = "reject"`), tagged, or only counted; under
p=quarantine it scores and tags. A DNS failure is `temperror`, which never refuses.
A valid ARC chain sealed only by `[auth] trusted_arc_sealers` that recorded a
pass overrides a DMARC failure.

`dkim` runs last, so its DKIM-Signature is added only when every other check has
accepted the message (signing.py).
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Sequence
from dataclasses import dataclass

from govmilter.checks import CheckHooks
from govmilter.checks.auth import arc as arc_mod
from govmilter.checks.auth import dkim as dkim_mod
from govmilter.checks.auth import dmarc as dmarc_mod
from govmilter.checks.auth.results import MethodResult, claims, header_value
from govmilter.checks.auth.spf import check_spf
from govmilter.clients.dns import Resolver, message_budget, shared_client
from govmilter.config import AuthConfig, Config
from govmilter.metrics import Metrics
from govmilter.model import AUTH_SUMMARY_KEY, Action, AuthSummary, Mode, Stage, Transaction, Verdict
from govmilter.ruleset import RuleErrors, RuleFile, RuleProblem
from govmilter.ruleset.entries import entries
from govmilter.ruleset.schema import REQUIRED, Key, Schema

RULE_KIND = "auth"
FORGED_KEY = "forged_fields"  # Transaction.scratch: (name, occurrence) of incoming fields to remove
HEADER = "Authentication-Results"

# the results a rule may weigh, by method
RESULTS: dict[str, tuple[str, ...]] = {
    "spf": ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"),
    "dkim": ("pass", "fail", "policy", "none", "temperror", "permerror"),
    "dmarc": ("pass", "fail", "quarantine", "reject", "none", "temperror", "permerror"),
    "arc": ("pass", "fail", "none", "temperror"),
}

SCHEMA = Schema(
    RULE_KIND,
    "rule",
    (
        Key("id", "text", REQUIRED, "unique name: the metric label (govmilter_rule_hits_total{rule=...}) and the log"),
        Key("description", "text", '""', "what the rule is, for people"),
        Key("method", "spf | dkim | dmarc | arc", REQUIRED, "the authentication method whose result is weighed"),
        Key(
            "result",
            "text",
            REQUIRED,
            "the result that scores\n"
            "spf: pass, fail, softfail, neutral, none, temperror, permerror\n"
            "dkim: pass, fail, policy, none (unsigned), temperror, permerror (any signature, once)\n"
            "dmarc: pass, none, temperror, permerror, fail (under p=none), quarantine (under p=quarantine), "
            "reject (under p=reject with [auth] dmarc_reject = \"tag\")\n"
            "arc: pass, fail, none, temperror",
        ),
        Key("weight", "number", REQUIRED, "added to the spam score ([content] tag_threshold / reject_threshold)"),
        Key("mode", "enforce | monitor", '"enforce"', "monitor: counted and logged, adds no score"),
    ),
)


@dataclass(frozen=True)
class AuthRule:
    id: str
    method: str
    result: str
    weight: float
    mode: Mode
    description: str


@dataclass(frozen=True)
class AuthRules:
    rules: tuple[AuthRule, ...] = ()

    def matching(self, method: str, result: str) -> list[AuthRule]:
        return [r for r in self.rules if r.method == method and r.result == result]


def compile_rules(files: Sequence[RuleFile]) -> AuthRules:
    problems: list[RuleProblem] = []
    rules: list[AuthRule] = []
    for entry in entries(files, SCHEMA, problems):
        before = len(problems)
        method = entry.choice("method", tuple(RESULTS), "spf")
        if "method" not in entry.data:
            entry.problem("missing method")
        result = entry.text("result", required=True).lower()
        if result and method in RESULTS and result not in RESULTS[method]:
            entry.problem(f"result = {result!r}: {method} results are {', '.join(RESULTS[method])}", "result")
        if "weight" not in entry.data:
            entry.problem("missing weight")
        rule = AuthRule(entry.id, method, result, entry.number("weight", 0.0), entry.mode(), entry.text("description"))
        if len(problems) == before:
            rules.append(rule)
    if problems:
        raise RuleErrors(problems)
    return AuthRules(tuple(rules))


def default_authserv_id() -> str:
    return socket.gethostname() or "govmilter"  # never getfqdn(): it may wait for a reverse lookup


class AuthCheck(CheckHooks):
    name = "auth"
    stages = frozenset({Stage.EOM})

    def __init__(self, resolver: Resolver, metrics: Metrics, settings: AuthConfig, *, budget: float):
        self.resolver = resolver
        self.metrics = metrics
        self.settings = settings
        self.authserv_id = settings.authserv_id or default_authserv_id()
        self.budget = budget
        self.max_bytes = settings.max_message_bytes

    def run(self, stage: Stage, tx: Transaction) -> Sequence[Verdict]:
        self._mark_forged(tx)
        if tx.envelope.internal:
            return []
        budget = message_budget(tx.scratch, self.budget)
        env = tx.envelope
        spf = check_spf(env.client_ip, env.mail_from, env.helo, self.resolver, budget)
        policies = dmarc_mod.policies(tx.header("From"), self.resolver, budget)  # before the sender's DKIM names
        signed = dkim_mod.signature_count(tx.headers) > 0
        sealed = arc_mod.has_chain(tx.headers)
        if not signed:
            dkims: list[dkim_mod.DkimResult] = []
        elif tx.raw_size > self.max_bytes:
            dkims = [dkim_mod.DkimResult("neutral", "", "", "message too large to verify")]
        else:  # streamed from the spool: memory does not grow with the message
            dkims = dkim_mod.verify_all(
                tx.raw_chunks(), self.resolver, budget, self.settings.max_signatures, crlf=tx.crlf
            )
        dmarc = dmarc_mod.evaluate_authors(tx.header("From"), (spf.result, spf.domain),
                                           [(d.result, d.domain) for d in dkims], self.resolver, budget,
                                           known=policies)  # fmt: skip
        author = dmarc.domain or None  # the author whose result applies (the strictest of several)
        arc = arc_mod.ArcResult("none")
        message = self._message(tx) if sealed and dmarc.result == "fail" else None
        if message is not None:  # dkimpy's ARC takes the whole message: only when it can change the outcome
            arc = arc_mod.verify_chain(message, self.resolver, budget)
        overridden = dmarc.result == "fail" and arc.trusted(self.settings.trusted_arc_sealers, author)
        results: list[MethodResult] = [spf.method_result()]
        results += _dkim_results(dkims) or [MethodResult("dkim", "none")]
        if overridden:  # the failure stays visible; the reason says why it was not applied (RFC 7489 7.2.5.3)
            sealers = ", ".join(dict.fromkeys(arc.sealers))
            reason = f"policy overridden: trusted_forwarder, ARC sealed by {sealers}"
            results.append(dataclasses.replace(dmarc.method_result(), reason=reason))
        else:
            results.append(dmarc.method_result())
        if arc.result != "none":
            results.append(arc.method_result())
        tx.scratch[AUTH_SUMMARY_KEY] = AuthSummary(
            spf.result, spf.domain, tuple((d.result, d.domain) for d in dkims),
            "pass" if overridden else dmarc.result, dmarc.domain or "", dmarc.policy, overridden,
        )  # fmt: skip
        for result in results:
            self.metrics.auth_results.labels(method=result.method, result=result.result).inc()
        verdicts: list[Verdict] = [
            Verdict(Action.CONTINUE, "auth", headers=((HEADER, header_value(self.authserv_id, results)),),
                    reason=" ".join(f"{r.method}={r.result}" for r in results))
        ]  # fmt: skip
        rules = tx.ruleset.get(RULE_KIND)
        outcome = {"spf": {spf.result}, "dkim": {d.result for d in dkims} or {"none"}, "arc": {arc.result}}
        outcome["dmarc"] = {self._dmarc_outcome(dmarc, arc, overridden, verdicts)}
        if isinstance(rules, AuthRules):
            for method, found in outcome.items():
                for value in sorted(found):
                    for rule in rules.matching(method, value):
                        verdicts.append(
                            Verdict(Action.CONTINUE, "auth", rule=rule.id, mode=rule.mode, score=rule.weight,
                                    reason=f"{method}={value}" + (f" ({dmarc.domain})" if method == "dmarc" else ""))
                        )  # fmt: skip
        verdicts.sort(key=lambda v: v.action is Action.REJECT)  # scores first: the pipeline stops at a refusal
        return verdicts

    def _dmarc_outcome(self, dmarc: dmarc_mod.DmarcResult, arc: arc_mod.ArcResult, overridden: bool,
                       verdicts: list[Verdict]) -> str:  # fmt: skip
        """The DMARC result as the rules weigh it; a refusal or a tag is added to `verdicts`."""
        if dmarc.result != "fail":
            return dmarc.result
        if overridden:
            self.metrics.dmarc_policy.labels(action="arc-override").inc()
            verdicts.append(
                Verdict(Action.CONTINUE, "auth", headers=(("X-Govmilter-DMARC", f"fail {dmarc.domain} p={dmarc.policy}"
                        f" overridden by trusted ARC sealer {arc.sealers[-1]}"),), reason="dmarc fail, ARC override")
            )  # fmt: skip
            return "pass"
        policy = dmarc.policy
        if dmarc.sampled_out:
            self.metrics.dmarc_policy.labels(action="pct").inc()
        tag = ("X-Govmilter-DMARC", f"fail {dmarc.domain} p={dmarc.published} applied={policy}")
        if policy == "reject":
            action = self.settings.dmarc_reject
            self.metrics.dmarc_policy.labels(action=action).inc()
            if action == "tag":
                verdicts.append(Verdict(Action.CONTINUE, "auth", headers=(tag,), reason="dmarc reject, tagged"))
                return "reject"
            verdicts.append(
                Verdict(
                    Action.REJECT,
                    "auth",
                    rule="dmarc-reject",
                    code="550",
                    enhanced="5.7.1",
                    text=self.settings.reply_text.format(domain=dmarc.domain, policy=dmarc.published),
                    mode=Mode.MONITOR if action == "monitor" else Mode.ENFORCE,
                    reason=f"DMARC fail for {dmarc.domain}, p={dmarc.published}",
                )
            )
            # refused: no weight on top (the "reject" weight is for tag, and monitor's would-be score)
            return "reject" if action == "monitor" else "refused"
        self.metrics.dmarc_policy.labels(action=policy).inc()
        if policy == "quarantine":
            verdicts.append(Verdict(Action.CONTINUE, "auth", headers=(tag,), reason="dmarc quarantine, tagged"))
            return "quarantine"
        return "fail"

    def _mark_forged(self, tx: Transaction) -> None:
        """Incoming Authentication-Results fields that claim our authserv-id: removed (last first) if accepted."""
        counts = 0
        found: list[tuple[str, int]] = []
        for name, value in tx.headers:
            if name.lower() == "authentication-results":
                counts += 1
                if claims(value, self.authserv_id):
                    found.append((name, counts))
        if found:
            tx.scratch.setdefault(FORGED_KEY, []).extend(found[::-1])

    def _message(self, tx: Transaction) -> bytes | None:
        """The raw message, or None past [auth] max_message_bytes (memory is bounded by configuration)."""
        if tx.raw_size > self.max_bytes:
            return None
        return b"".join(tx.raw_chunks())

    def health(self) -> dict[str, object]:
        """Not ok while the resolver does not answer: results are temperror, no spoofing is refused."""
        answering = getattr(self.resolver, "answering", lambda: True)()
        return {"ok": bool(answering), "resolver": "answering" if answering else "not answering"}


def _dkim_results(dkims: Sequence[dkim_mod.DkimResult]) -> list[MethodResult]:
    """One result per verified signature; those past [auth] max_signatures said once, with their number.

    A sender may add any number of signatures: listing each (its d= and s= chosen by the
    sender) would let it write a header of any length into the delivered message.
    """
    checked = [d.method_result() for d in dkims if d.reason != dkim_mod.UNCHECKED]
    unchecked = sum(1 for d in dkims if d.reason == dkim_mod.UNCHECKED)
    if unchecked:
        checked.append(MethodResult("dkim", "neutral", (), f"{unchecked} more signatures not checked: "
                                    "past [auth] max_signatures"))  # fmt: skip
    return checked


def build(config: Config, metrics: Metrics) -> AuthCheck:
    return AuthCheck(shared_client(config.dns, metrics), metrics, config.auth, budget=config.dns.budget)
