"""The forwarding check: official mail must not be forwarded to, or arrive from, public mailboxes.

check.py is the check (its stages, findings and verdicts); rules.py compiles the
`kind = "forwarding"` rule files; traces.py reads the traces a forward leaves in
the header (Resent-*, list fields, Received chains, report labels); memory.py
remembers the Message-IDs of inbound official mail (in process or in Redis) so a
copy sent back out is known for what it is.
"""
