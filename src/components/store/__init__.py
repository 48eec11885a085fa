"""The database tier: SQLite behind rqlite's HTTP API, with a redo log, replicas and failover.

This is the chapter's step of moving the database off the web server and then
replicating it: one primary takes every write, replicas copy its log and serve reads, and
when the primary dies a replica is promoted. Writes are durable before they are
acknowledged (a checksummed redo log, fsynced with group commit so concurrent writers
share the cost) and the log, not SQLite's files, is what replicas stream and what crash
recovery replays. The trade-off is the classic one of asynchronous replication: reads
from replicas may be stale (``min_lsn`` and ``freshness`` bound that), and a promotion may
lose the primary's last writes unless ``--sync-replicas`` makes the primary wait for
replicas. Unlike rqlite there is no Raft: promotion is an operator's or controller's
decision, fenced by epochs, which is how classic MySQL/PostgreSQL replication works.
"""
