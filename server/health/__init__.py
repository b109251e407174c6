"""Station health: what stations report about themselves, and what the server concludes.

Where things live (pure modules first; they import no I/O library):

- ``validate``  one health payload → the values worth keeping, and what was wrong
- ``status``    the online / degraded / offline / stopped transition table
- ``rules``     station facts → which alarms should be open now
- ``retention`` hour windows, min/avg/max aggregation, retention cut-offs
- ``models``    tables: raw samples, hourly aggregates, per-station liveness, alarms
- ``ingest``    the single health writer: batched samples, status, alarm evaluation
- ``alarms``    facts from the database, alarm open/resolve/acknowledge, queries
- ``store``     hourly aggregation and pruning jobs, chart series
- ``notify``    webhook and e-mail notifications on a worker of their own
- ``service``   wires the above and runs the periodic jobs (APScheduler lives here only)
"""
