"""The audit log: who did what, to what, from where — append-only and hash-chained."""
