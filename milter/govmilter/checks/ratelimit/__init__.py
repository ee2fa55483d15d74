"""The ratelimit check: token buckets per account, sender, client address and sender domain.

rules.py reads the limits (rule files of kind "ratelimit"), buckets.py keeps the buckets (in
Redis, shared by every gateway node, or in process), check.py decides at end of message, and
admin.py is what `govmilter ratelimit status|release` runs.
"""
