"""Command line: run | scan | rules check|help|test | config check | doctor | trace | ratelimit | version."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from govmilter import __version__
from govmilter.config import Config, ConfigError, load_config, summary
from govmilter.logfmt import daemon_formatter
from govmilter.metrics import Metrics
from govmilter.pipeline import CHECK_NAMES, Pipeline, build_checks, rule_compilers, rule_schemas
from govmilter.ruleset import RuleErrors, load_ruleset

DEFAULT_CONFIG = "/etc/govmilter/govmilter.toml"
NETWORK_CHECKS = ("antivirus", "dnsbl", "auth")  # `rules test` runs them only when asked (--with)
EXIT_USAGE = 2


class UsageError(Exception):
    pass


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help=f"TOML file (default: $GOVMILTER_CONFIG, else {DEFAULT_CONFIG} if present)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="TABLE.KEY=VALUE", help="override one value (repeatable)"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="govmilter", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the milter daemon in the foreground")
    _common(run)
    run.add_argument("--skip", action="append", default=[], choices=CHECK_NAMES, help="leave a check out")

    scan = commands.add_parser(
        "scan", help="run the daemon's checks on a message file: what it would answer and why (--json for scripts)"
    )
    _common(scan)
    scan.add_argument("--skip", action="append", default=[], choices=CHECK_NAMES, help="leave a check out")
    scan.add_argument(
        "--client-ip",
        default="127.0.0.1",
        help="the connecting client (default 127.0.0.1, this host: a trusted relay, so the message is outbound)",
    )
    scan.add_argument("--json", action="store_true", help="print one JSON object (the scripts' contract)")
    scan.add_argument("--helo", default="localhost")
    scan.add_argument("--auth", default="", metavar="USER", help="the SMTP AUTH user ({auth_authen})")
    scan.add_argument("--size", type=int, metavar="BYTES", help="declare SIZE= at MAIL FROM")
    scan.add_argument("--mail-from", required=True, help="envelope sender; '' is the null sender")
    scan.add_argument("--rcpt", action="append", required=True, help="envelope recipient (repeatable)")
    scan.add_argument("file", help="message file, or - for standard input")

    rules = commands.add_parser("rules", help="rule files")
    rules_commands = rules.add_subparsers(dest="rules_command", required=True)
    rules_check = rules_commands.add_parser("check", help="validate the rule files; non-zero exit on any error")
    _common(rules_check)
    rules_check.add_argument("dir", nargs="?", help="rule directory (default: [rules] dir of the config)")
    rules_help = rules_commands.add_parser(
        "help", aliases=["keys"], help="print the keys of a kind of rule file (the header block); alias: keys"
    )
    rules_help.add_argument("kind", nargs="?", help=f"{', '.join(rule_schemas())} (default: all)")
    rules_test = rules_commands.add_parser(
        "test", help="scan each NAME.eml of a folder with its NAME.toml (envelope, expect); non-zero exit on a failure"
    )
    _common(rules_test)
    rules_test.add_argument("dir", help="folder of samples: NAME.eml beside NAME.toml")
    rules_test.add_argument("--rules", metavar="DIR", help="rule directory (default: [rules] dir of the config)")
    rules_test.add_argument(
        "--with",
        dest="with_checks",
        action="append",
        default=[],
        choices=NETWORK_CHECKS,
        help="also run a check that asks the network (skipped by default: antivirus, dnsbl, auth)",
    )

    config = commands.add_parser("config", help="configuration")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    _common(config_commands.add_parser("check", help="validate the configuration"))

    doctor = commands.add_parser(
        "doctor", help="preflight: config, rules, clamd, DNS, directories and Postfix's settings; exit 1 on a FAIL"
    )
    _common(doctor)
    doctor.add_argument("--postconf-dir", metavar="DIR", help="read a private Postfix's main.cf (postconf -c DIR)")
    doctor.add_argument(
        "--max-signature-age", type=float, default=3.0, metavar="DAYS", help="warn when clamd's signatures are older"
    )

    dkim = commands.add_parser("dkim", help="outbound DKIM signing keys")
    dkim_commands = dkim.add_subparsers(dest="dkim_command", required=True)
    keygen = dkim_commands.add_parser("keygen", help="write a new signing key (mode 0600), print its DNS TXT record")
    keygen.add_argument("--domain", required=True, help="the signing domain, a local domain")
    keygen.add_argument("--selector", required=True, help="the selector: the key's name in DNS")
    keygen.add_argument("--type", choices=("rsa", "ed25519"), default="rsa", help="RSA 2048 (default) or Ed25519")
    keygen.add_argument(
        "--out", metavar="FILE", help="key file to write (default: DOMAIN.SELECTOR.pem); never overwritten"
    )

    ratelimit = commands.add_parser("ratelimit", help="outbound rate limits: the shared buckets in Redis")
    ratelimit_commands = ratelimit.add_subparsers(dest="ratelimit_command", required=True)
    rl_status = ratelimit_commands.add_parser("status", help="subjects over a limit and held; or one subject's buckets")
    _common(rl_status)
    rl_status.add_argument("account", nargs="?", default="", help="an account, address, client IP or domain")
    rl_release = ratelimit_commands.add_parser("release", help="lift the hold of an account (after its password reset)")
    _common(rl_release)
    rl_release.add_argument("account", help="the account, address, client IP or domain that is held")

    trace = commands.add_parser(
        "trace",
        help="search the decision history: who sent what to whom, which rules hit, what the sender was answered",
    )
    _common(trace)
    trace.add_argument("--from", dest="mail_from", metavar="ADDR", help="envelope sender")
    trace.add_argument("--to", dest="rcpt", metavar="ADDR", help="envelope recipient")
    trace.add_argument("--rule", metavar="RULE", help="a rule id that hit (enforced or monitored)")
    trace.add_argument("--action", choices=("accept", "reject", "tempfail", "discard"), help="the final action")
    trace.add_argument("--since", metavar="WHEN", help="1h, 7d, 30m, today, yesterday, or a date/time")
    trace.add_argument("--between", metavar="START..END", help="a time range: 2026-12-01..2026-12-03 08:00")
    trace.add_argument("--queue-id", metavar="ID", help="Postfix's queue id")
    trace.add_argument("--message-id", metavar="ID", help="the Message-ID header (with or without <>)")
    trace.add_argument("--subject", metavar="WORDS", help="words of the Subject, each must appear")
    trace.add_argument("--limit", type=int, default=100, metavar="N", help="at most N messages (default 100)")
    trace.add_argument("--json", action="store_true", help="one JSON object per line (the scripts' contract)")
    trace.add_argument(
        "--rules", action="store_true", help="a per-rule summary: hits, refusals, would-be refusals in monitor mode"
    )

    commands.add_parser("version", help="print the version")
    return parser


def cmd_ratelimit(args: argparse.Namespace) -> int:
    from govmilter.checks.ratelimit import admin
    from govmilter.checks.ratelimit.rules import RULE_KIND, RatelimitRules

    config = _load(args)
    rules = load_ruleset(config.rules.dir, rule_compilers()).get(RULE_KIND) or RatelimitRules()
    if args.ratelimit_command == "release":
        return admin.run_release(config, rules, args.account, print)
    return admin.report_status(config, rules, args.account, print)


def cmd_dkim_keygen(args: argparse.Namespace) -> int:
    from govmilter.checks.auth.signing import keygen

    out = args.out or f"{args.domain}.{args.selector}.pem"
    record = keygen(args.domain, args.selector, args.type, out)
    print(f"; private key written to {out} (mode 0600); list it in [dkim] keys and publish:")
    print(record)
    return 0


def _load(args: argparse.Namespace) -> Config:
    path = args.config or os.environ.get("GOVMILTER_CONFIG")
    if path is None and Path(DEFAULT_CONFIG).exists():
        path = DEFAULT_CONFIG
    return load_config(path, args.set)


def _offline(config: Config) -> Config:
    """A scan from the command line never takes tokens from the rate-limit buckets the gateway shares."""
    return dataclasses.replace(config, ratelimit=dataclasses.replace(config.ratelimit, redis_url=""))


def _setup_logging(level: str, fmt: str = "logfmt") -> None:
    # libmilter runs each connection on a new C thread: naming it for every log record
    # would create (and keep) a threading._DummyThread per connection
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    # one record, one line, even a traceback; journald's own timestamp when stderr is the journal
    handler.setFormatter(daemon_formatter(sys.stderr, fmt=fmt))
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[handler])


def cmd_run(args: argparse.Namespace) -> int:
    from govmilter import adapter, httpd
    from govmilter.runtime import Runtime

    config = _load(args)
    _setup_logging(config.log.level, config.log.format)
    runtime = Runtime(config, skip=args.skip)
    runtime.start_history()  # the store opens in the writer's thread: a store down never stops the start
    runtime.prepare_unix_socket()
    runtime.rules.start_watching(config.rules.reload_interval)
    if config.metrics.listen:
        httpd.start(config.metrics.listen, runtime.metrics.registry, runtime.health)
    status = adapter.serve(runtime)  # returns after SIGTERM/SIGINT and the drain
    runtime.rules.stop()
    runtime.stop_history()  # what is queued is written (a few seconds at most)
    logging.shutdown()
    sys.stderr.flush()
    # libmilter's threads may still hold a connection the drain gave up on: end the process here,
    # without an interpreter teardown under them
    os._exit(status)


def cmd_scan(args: argparse.Namespace) -> int:
    from govmilter.offline import report, scan_message

    config = _offline(_load(args))
    _setup_logging("warning")
    metrics = Metrics()
    ruleset = load_ruleset(config.rules.dir, rule_compilers())
    pipeline = Pipeline(build_checks(config, metrics, args.skip), metrics, config.milter.monitor)
    params = {"SIZE": str(args.size)} if args.size is not None else {}
    stream = sys.stdin.buffer if args.file == "-" else open(args.file, "rb")
    try:
        result = scan_message(
            pipeline,
            ruleset,
            config,
            stream,
            mail_from=args.mail_from,
            rcpts=args.rcpt,
            client_ip=args.client_ip,
            helo=args.helo,
            auth_user=args.auth,
            mail_params=params,
        )
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    try:
        if args.json:
            print(json.dumps(result.as_json(), ensure_ascii=False, indent=2))
        else:
            source = "standard input" if args.file == "-" else args.file
            print(report(result, config, config_path=_config_path(args), message=source, skipped=args.skip))
    finally:
        result.close()
    return 0


def _config_path(args: argparse.Namespace) -> str | None:
    path: str | None = args.config or os.environ.get("GOVMILTER_CONFIG")
    if path is None and Path(DEFAULT_CONFIG).exists():
        path = DEFAULT_CONFIG
    return path


def cmd_rules_test(args: argparse.Namespace) -> int:
    from govmilter.offline import check_sample, table

    config = _offline(_load(args))
    _setup_logging("error")
    directory = args.rules or config.rules.dir
    samples = sorted(Path(args.dir).glob("*.eml"))
    if not samples:
        print(f"no *.eml samples in {args.dir}", file=sys.stderr)
        return EXIT_USAGE
    metrics = Metrics()
    ruleset = load_ruleset(directory, rule_compilers())
    skip = [name for name in NETWORK_CHECKS if name not in args.with_checks and name in CHECK_NAMES]
    pipeline = Pipeline(build_checks(config, metrics, skip), metrics, config.milter.monitor)
    results = [check_sample(pipeline, ruleset, config, path) for path in samples]
    print(f"rules {directory} (version {ruleset.version}); skipped: {', '.join(skip) or 'none'}")
    print(table(results))
    return 0 if all(r.passed for r in results) else 1


def cmd_rules_check(args: argparse.Namespace) -> int:
    directory = args.dir or _load(args).rules.dir
    ruleset = load_ruleset(directory, rule_compilers())
    kinds = ", ".join(sorted(ruleset.compiled))
    for compiled in ruleset.compiled.values():  # what loads but deserves a look (content: slow patterns)
        for warning in getattr(compiled, "warnings", ()):
            print(warning)
    print(f"rules {directory}: OK, version {ruleset.version} ({kinds})")
    return 0


def cmd_rules_help(args: argparse.Namespace) -> int:
    schemas = rule_schemas()
    if args.kind and args.kind not in schemas:
        print(f"unknown kind {args.kind!r}; known: {', '.join(schemas)}", file=sys.stderr)
        return EXIT_USAGE
    kinds = [args.kind] if args.kind else list(schemas)
    print("\n\n".join(schemas[kind].header() for kind in kinds))
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    print(summary(_load(args)))
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from govmilter import doctor

    path = args.config or os.environ.get("GOVMILTER_CONFIG")
    if path is None and Path(DEFAULT_CONFIG).exists():
        path = DEFAULT_CONFIG
    options = doctor.Options(postconf_dir=args.postconf_dir, max_signature_age=args.max_signature_age)
    return doctor.run(path, args.set, options, print)


def cmd_trace(args: argparse.Namespace) -> int:
    import sqlite3
    import time

    from govmilter.history import query
    from govmilter.history.store import Query, StoreUnavailable, open_store, redact

    config = _load(args)
    settings = config.history
    since: float | None = None
    until: float | None = None
    if args.since and args.between:
        raise ValueError("give --since or --between, not both")
    if args.since:
        since, until = query.parse_since(args.since, time.time())
    if args.between:
        since, until = query.parse_between(args.between)
    where = redact(settings.url) if settings.url else settings.path
    try:
        store = open_store(settings.path, settings.url, readonly=True)
    except (StoreUnavailable, sqlite3.Error, FileNotFoundError) as exc:
        print(f"error: the history store {where} cannot be read: {exc}", file=sys.stderr)
        return 1
    try:
        if args.rules:
            rows = store.rule_summary(since, until)
            print("\n".join(query.summary_json(row) for row in rows) if args.json else query.summary_table(rows))
            return 0
        found = store.search(
            Query(
                mail_from=args.mail_from or "",
                rcpt=args.rcpt or "",
                rule=args.rule or "",
                action=args.action or "",
                queue_id=args.queue_id or "",
                message_id=args.message_id or "",
                subject=args.subject or "",
                since=since,
                until=until,
                limit=args.limit,
            )
        )
    except (StoreUnavailable, sqlite3.Error) as exc:
        print(f"error: the history store {where} cannot be read: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    if args.json:
        for record in found:
            print(query.as_json(record))
    else:
        print("\n\n".join(query.readable(record) for record in found) or "no message found")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            return cmd_run(args)
        if args.command == "scan":
            return cmd_scan(args)
        if args.command == "rules":
            if args.rules_command == "test":
                return cmd_rules_test(args)
            return cmd_rules_help(args) if args.rules_command in ("help", "keys") else cmd_rules_check(args)
        if args.command == "config":
            return cmd_config_check(args)
        if args.command == "doctor":
            return cmd_doctor(args)
        if args.command == "ratelimit":
            return cmd_ratelimit(args)
        if args.command == "dkim":
            return cmd_dkim_keygen(args)
        if args.command == "trace":
            return cmd_trace(args)
        print(f"govmilter {__version__}")
        return 0
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RuleErrors as exc:
        print(f"rule errors:\n{exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
