"""The edge cache: the CDN box of the journey, an RFC 9111 shared cache in front of origins.

Static assets and cacheable API answers are served from memory close to the user; the
origin says for how long with Cache-Control, and the edge obeys it: it stores what may be
stored, computes ages, revalidates with conditional requests, collapses concurrent misses
into one origin request, and serves stale copies while refreshing (stale-while-revalidate)
or while the origin is down (stale-if-error). The trade-off is freshness for load and
latency: every hit is a request the origin never sees, at the price of answers that may
be up to their freshness lifetime old, which is why purge (by URL, prefix or surrogate
key) and invalidation by unsafe methods exist. Storage is a byte-bounded LRU in memory.
A miss is streamed to its client, and to the requests collapsed behind it, as the body
arrives from the origin, and stored at its end; objects larger than ``--max-object-mb``
become one shared pass-through, not stored.
"""
