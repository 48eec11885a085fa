"""The web tier: the chapter's user API, the box every stage of the journey keeps.

It embodies the chapter's first lesson: one server doing everything (HTTP, database,
cache, sessions) is simple and fast until it is not, and each later stage moves one of
those out behind the same interface. Storage, cache and sessions are small interfaces
(``storage.UserStore``, ``cache.Cache``, ``sessions.Sessions``) chosen by flags, so the
topology decides what the tier talks to and no handler changes: embedded SQLite and an
in-process LRU now, the store and cache tiers later. With ``--queue`` it takes photo
jobs the queued way: record the photo as pending, publish the job, answer 202, and let
workers store the thumbnail back later (``photos.py``, ``publisher.py``). The trade-offs
of this first stage are on purpose and visible: the cache and the sessions are private
to one process, so a second web server would see stale users and logged-out visitors.
Capacity is emulated (``--service-time-ms``, ``--max-concurrency``) so that a laptop can
show what a real server's limits do; real web tiers differ in running many worker
processes per host.
"""
