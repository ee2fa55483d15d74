"""The impersonation check: spoofed own and government domains, look-alike names, fake state senders,
deceptive links (check.py; names.py judges look-alike names; rules.py reads the rule file)."""
