"""The cache tier: a memcached-compatible server and a consistent-hashing client.

The chapter's cache tier sits beside the database and answers the hot reads from
memory, with cache-aside in the web tier, an expiry on every entry and eviction when
memory runs out. Several cache nodes remove the single point of failure; a client hashes
each key to one node on a ketama ring, so adding or losing a node remaps only about 1/N
of the keys. The trade-off is the usual one: a cache is fast because it may forget
(eviction, expiry, a dead node means misses, not errors) and may be stale
(invalidation is the application's job). Unlike real memcached, a node is one Python
process on one core with no slab allocator, so it costs more memory and CPU per item;
the benchmarks in bench/cache say how much.
"""
