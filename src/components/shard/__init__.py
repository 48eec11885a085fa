"""The shard router: one table split by a key over several replicated store groups.

This is the chapter's last database step: when one primary can no longer take every
write, the data is partitioned horizontally by a shard key (``user_id``) and each
partition lives on its own store group (a primary with replicas). The router speaks the
store's rqlite API, so applications do not change; it finds the shard key in each
statement, sends single-shard statements to one group and merges fan-out reads exactly
(ORDER BY, LIMIT, count/sum/min/max, avg from per-shard sums and counts), refusing what
it cannot merge or make atomic (cross-shard joins and transactions) instead of
answering wrongly. The trade-offs are the real ones: cross-shard queries cost N round
trips, placement (modulo, consistent hashing, ranges, a directory for hot keys) decides
how painful resharding is (a move copies, follows the source's change feed, then fences
writes only for the last few changes), and ids come from a Snowflake generator because
per-database autoincrement would collide.
"""
