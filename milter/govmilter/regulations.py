"""The regulation references the replies cite, each defined once.

QD 06/2022 is the province's decision on the official mail system; the replies name the article
a refusal rests on, so a sender (and the helpdesk) can look it up. The configuration's default
reply texts (config.py) are built from these; an operator who rewrites a text writes his own.
"""

from __future__ import annotations

DECISION = "QD 06/2022"
PROVINCIAL_DECISION = f"{DECISION} Bac Ninh"  # the province's own text of the decision

ATTACHMENT_CAP = f"{DECISION} Dieu 5.1"  # 20 MB of attachments per message
SECRET_MARKINGS = f"{PROVINCIAL_DECISION} Dieu 6.1"  # documents marked as state secrets
CONTENT = f"{DECISION} Dieu 8"  # what official mail may carry
MALWARE = f"{DECISION} Dieu 8.2"  # viruses and dangerous attachment types
SPAM = f"{DECISION} Dieu 8.3"  # spam
FORWARDING = f"{DECISION} Dieu 8.5"  # automatic forwarding across the state boundary
BLOCKLIST_ARTICLE = "Dieu 10.2.c"  # technical measures against spam: blocklists, scoring
BLOCKLISTS = f"{DECISION} {BLOCKLIST_ARTICLE}"
SPAM_SCORE = f"{SPAM}, {BLOCKLIST_ARTICLE}"
# Dieu 10.2.c: the operator blocks spam and unsuitable mail; mail impersonating a state body is such mail
IMPERSONATION = f"{DECISION} {BLOCKLIST_ARTICLE}"
