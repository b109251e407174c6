"""Several server replicas on one PostgreSQL: what they share and who leads.

The database is the only shared state. This package holds what a second process needs
beyond the tables every feature already keeps: the signing sequence (``sequence``), the
leader lease for the periodic jobs (``leader``) and the live-alert change feed
(``feed``). On SQLite, the single-process default, each part degrades to its
in-process form: the file sequence, always the leader, an in-memory counter.
"""
