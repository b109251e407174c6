"""Emergency alerts: targeting, two-officer confirmation, delivery, tracking, CAP ingest."""
