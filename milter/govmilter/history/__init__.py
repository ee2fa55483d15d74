"""Decision history: one record per message (record.py), a writer thread off the hot path
(writer.py), a SQLite or PostgreSQL store (store.py), and the queries of `govmilter trace`
(query.py). See docs/history.md."""
