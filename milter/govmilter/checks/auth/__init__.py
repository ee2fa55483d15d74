"""Sender authentication: SPF, DKIM, DMARC and ARC of inbound mail, DKIM signing of outbound mail.

One job per module: spf.py (RFC 7208), dkim.py (RFC 6376 verification), dmarc.py
(RFC 7489), arc.py (RFC 8617), results.py (the results and their
Authentication-Results header, RFC 8601), resolver.py (dkimpy and pyspf asking
the shared DNS layer), signing.py (outbound DKIM-Signature), check.py (the
`auth` and `dkim` checks and the rule file of kind "auth").
"""
