"""The antivirus check: the whole raw message, and what clamd cannot decode, scanned by clamd.

check.py is the check (which clamd, what a failure answers, the verdicts);
scancache.py remembers recent verdicts by the bytes that were scanned, so the
same attachment sent to many recipients is scanned once.
"""
