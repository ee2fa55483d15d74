"""Every Prometheus metric govmilter exports, defined in one place.

Labels are bounded: check names, rule ids from rule files, zones and clamd
addresses from the configuration, never addresses or text from the wire.
The registry is injectable so tests and `govmilter scan` use a private one.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

# Per message the milter usually adds a few milliseconds: fine buckets below 50 ms keep the
# p50/p99 that histogram_quantile interpolates within a millisecond or two of the truth.
MESSAGE_BUCKETS = (
    0.0005, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.0125, 0.015, 0.02, 0.025,
    0.03, 0.04, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SIZE_BUCKETS = (1024, 10240, 102400, 1048576, 5242880, 10485760, 20971520, 31457280, 52428800, 104857600)
SCORE_BUCKETS = (0.0, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 50.0)

# Where adapter.py counts an internal error outside the checks (its callbacks).
ADAPTER_PLACES = ("connect", "mail", "rcpt", "header", "headers", "body", "eom")
RELOAD_OUTCOMES = ("reloaded", "failed")


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry

        # traffic and decisions
        self.messages = Counter(
            "govmilter_messages_total",
            "Messages decided, by final action and the check that decided (none when accepted)",
            ["action", "check"],
            registry=r,
        )
        self.rule_hits = Counter(
            "govmilter_rule_hits_total",
            "Findings of each check and rule, by mode (enforce or monitor)",
            ["check", "rule", "mode"],
            registry=r,
        )
        self.content_rules_skipped = Counter(
            "govmilter_content_rules_skipped_total",
            "Content rules skipped for a message because their pattern spent its time limit",
            ["rule"],
            registry=r,
        )
        self.internal_errors = Counter(
            "govmilter_internal_errors_total",
            "Exceptions caught inside the milter (answered 451 4.3.0), by check or stage",
            ["where"],
            registry=r,
        )
        self.connections_in_flight = Gauge(
            "govmilter_connections_in_flight", "SMTP connections the milter is serving now", registry=r
        )

        # time
        self.check_duration = Histogram(
            "govmilter_check_duration_seconds",
            "Time spent in each check, per call",
            ["check"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.message_duration = Histogram(
            "govmilter_message_duration_seconds",
            "Milter time per message: all callbacks from MAIL FROM to the final reply",
            buckets=MESSAGE_BUCKETS,
            registry=r,
        )

        # sizes
        self.message_size = Histogram(
            "govmilter_message_size_bytes", "Raw size of messages seen", buckets=SIZE_BUCKETS, registry=r
        )
        self.attachment_size = Histogram(
            "govmilter_attachment_bytes",
            "Decoded attachment bytes per message that reached the end of data",
            buckets=SIZE_BUCKETS,
            registry=r,
        )
        self.mime_defects = Counter(
            "govmilter_mime_defects_total", "Problems found by the MIME walk, by kind", ["defect"], registry=r
        )

        # forwarding
        self.forwards = Counter(
            "govmilter_forwarding_detected_total",
            "Automatic forwards detected, by direction, trace and action",
            ["direction", "trace", "action"],
            registry=r,
        )
        self.forward_memory_fallbacks = Counter(
            "govmilter_forwarding_memory_fallbacks_total",
            "Message-ID memory operations (lookup, store) answered in-process because Redis failed or is paused",
            ["op"],
            registry=r,
        )
        self.forward_memory_entries = Gauge(
            "govmilter_forwarding_memory_entries",
            "Message-IDs held in the in-process forwarding memory",
            registry=r,
        )

        # outbound rate limits (checks/ratelimit/)
        self.ratelimit_deferred = Counter(
            "govmilter_ratelimit_deferred_total",
            "Messages a rate limit stopped, by limit (rule) and result: limit (451), held (451 until released),"
            " too-large (550: more than the burst in one message), monitor (would have been deferred)",
            ["rule", "result"],
            registry=r,
        )
        self.ratelimit_over_limit = Gauge(
            "govmilter_ratelimit_over_limit_accounts",
            "Subjects (accounts, addresses, domains) this node deferred within [ratelimit] over_limit_seconds",
            ["rule"],
            registry=r,
        )
        self.ratelimit_fallbacks = Counter(
            "govmilter_ratelimit_fallbacks_total",
            "Rate-limit decisions taken with this node's own buckets because Redis failed or is paused",
            ["op"],
            registry=r,
        )
        self.ratelimit_spam_charged = Counter(
            "govmilter_ratelimit_spam_charged_total",
            "Outbound messages judged spam whose recipients counted [ratelimit] spam_factor times",
            registry=r,
        )
        self.ratelimit_local_buckets = Gauge(
            "govmilter_ratelimit_local_buckets", "Token buckets held in this process", registry=r
        )
        self.ratelimit_local_evictions = Counter(
            "govmilter_ratelimit_local_evictions_total",
            "In-process buckets, marks or holds dropped past [ratelimit] local_max_keys (least recently used)",
            registry=r,
        )
        self.ratelimit_fallbacks.labels(op="charge")  # at 0 from the start: the alert sees the first one

        # antivirus
        self.scans = Counter(
            "govmilter_antivirus_scans_total",
            "clamd scans by result (clean, found, size_limit, timeout, error, circuit_open)",
            ["result"],
            registry=r,
        )
        self.scan_duration = Histogram(
            "govmilter_antivirus_scan_duration_seconds",
            "Time of one clamd scan",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.scan_cache = Counter(
            "govmilter_antivirus_cache_total",
            "Scan-cache lookups: hit (a copy of a scanned message, clamd not asked) or miss",
            ["result"],
            registry=r,
        )
        self.clamd_up = Gauge(
            "govmilter_clamd_up",
            "1 when the clamd address answered its last scan or probe, 0 when not",
            ["address"],
            registry=r,
        )
        self.clamd_signatures_time = Gauge(
            "govmilter_clamd_signatures_timestamp_seconds",
            "Build time (Unix) of the signature database each clamd address reports in VERSION",
            ["address"],
            registry=r,
        )
        self.signatures = Counter(
            "govmilter_antivirus_signatures_total",
            "Viruses found, by ClamAV signature name (the first 500 names, then other)",
            ["signature"],
            registry=r,
        )

        # spam: DNS and content rules
        self.dns_lookups = Counter(
            "govmilter_dns_lookups_total",
            "DNS lookups, by purpose (dnsbl, spf, dkim, dmarc, arc), blocklist zone (dnsbl only) and result",
            ["purpose", "zone", "result"],
            registry=r,
        )

        # sender authentication (checks/auth/) and outbound signing
        self.auth_results = Counter(
            "govmilter_auth_results_total",
            "Inbound authentication results, by method (spf, dkim, dmarc, arc) and result (pass, fail, ...)",
            ["method", "result"],
            registry=r,
        )
        self.dmarc_policy = Counter(
            "govmilter_dmarc_policy_total",
            "DMARC failures by the action taken (reject, tag, monitor, quarantine, none, arc-override)",
            ["action"],
            registry=r,
        )
        self.dkim_signed = Counter(
            "govmilter_dkim_signatures_total",
            "Outbound messages signed with DKIM, by signing domain (configured domains only) and result",
            ["domain", "result"],
            registry=r,
        )
        # impersonation (checks/impersonation/): `protected` is a name from [domains] or rules/impersonation.toml
        self.impersonation_hits = Counter(
            "govmilter_impersonation_hits_total",
            "Impersonation findings by kind (spoofed-local, lookalike-prefix, display-name, ...) and protected name",
            ["kind", "protected"],
            registry=r,
        )
        self.spam_score = Histogram(
            "govmilter_spam_score", "Content score per scored message", buckets=SCORE_BUCKETS, registry=r
        )

        # rules
        self.ruleset_info = Gauge(
            "govmilter_ruleset_info", "The active rule-set version (value 1)", ["version"], registry=r
        )
        self.rule_reloads = Counter(
            "govmilter_rule_reloads_total", "Rule reloads by outcome (reloaded, failed)", ["outcome"], registry=r
        )
        self.rule_reload_successful = Gauge(
            "govmilter_rule_reload_successful",
            "1 when the rule files on disk loaded at the last attempt, 0 while they fail and the previous set serves",
            registry=r,
        )
        self.ruleset_loaded = Gauge(
            "govmilter_ruleset_loaded_timestamp_seconds", "Unix time the active rule set was loaded", registry=r
        )
        self.rules_fallback = Gauge(
            "govmilter_rules_fallback",
            "1 while the last good copy of the rules serves because the rule directory did not load at start",
            registry=r,
        )
        for outcome in RELOAD_OUTCOMES:  # present from the start, so increase() sees the first failure
            self.rule_reloads.labels(outcome=outcome)

        # decision history (history/): the writer thread and its store
        self.history_written = Counter(
            "govmilter_history_records_written_total", "Decision records written to the history store", registry=r
        )
        self.history_dropped = Counter(
            "govmilter_history_records_dropped_total",
            "Decision records not stored, by reason (queue_full, store_error, shutdown); mail is never delayed",
            ["reason"],
            registry=r,
        )
        self.history_store_up = Gauge(
            "govmilter_history_store_up", "1 when the last write to the history store succeeded, 0 when not", registry=r
        )
        self.history_store_bytes = Gauge(
            "govmilter_history_store_bytes", "Bytes the history store uses (SQLite pages in use, PostgreSQL tables)",
            registry=r,
        )  # fmt: skip
        self.history_prunes = Counter(
            "govmilter_history_prune_runs_total", "Background prunes of the history store, by outcome (ok, failed)",
            ["outcome"],
            registry=r,
        )  # fmt: skip

        self.build_info = Gauge(
            "govmilter_build_info", "Version information (value 1)", ["version", "python"], registry=r
        )
        # process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds, ...
        ProcessCollector(registry=r)
        for place in ADAPTER_PLACES:
            self.internal_errors.labels(where=place)
        self.messages.labels(action="accept", check="none")
        self.messages.labels(action="tempfail", check="adapter")

    def declare_checks(self, names: Iterable[str]) -> None:
        """Create the series an alert watches for each check, at 0, so the first event is seen.

        A counter series born at 1 has no earlier sample: rate() and increase() miss that event.
        """
        for name in names:
            self.internal_errors.labels(where=name)
            for action in ("reject", "tempfail"):
                self.messages.labels(action=action, check=name)

    def set_build_info(self, version: str) -> None:
        self.build_info.labels(version=version, python=platform.python_version()).set(1)

    def set_ruleset(self, version: str) -> None:
        self.ruleset_info.clear()
        self.ruleset_info.labels(version=version).set(1)
        self.ruleset_loaded.set(time.time())
        self.rule_reload_successful.set(1)
