"""The load generator: the users behind every figure scalelab reports.

Every claim of the scaling journey ("a cache takes load off the database", "a second
web server doubles throughput") is only as good as the load that measured it. This
package plays the users: an aiohttp client on uvloop, in a closed loop (N users waiting
for their answers) or an open loop (a fixed arrival rate, measured from each request's
due time so a server stall cannot hide: coordinated-omission safe). What the users ask
for is a small TOML profile (``loadgen.profile``): a weighted request mix and a skewed
key distribution. Latencies go into log-linear histograms (``loadgen.histogram``) that
several worker processes merge (``--procs N``), and the report adds the figures each
tier reports about itself, scraped from its ``/metrics`` (``loadgen.tier``), and a
per-second timeline of requests, errors and p50/p99 (``loadgen.timeline``) so a fault's
cost can be read second by second. Each simulated user keeps its own cookies, so
sessions and read-your-writes cookies behave under load as they do for real users.

Trade-offs: Python on one core drives a few thousand requests per second, well below
wrk (``bench/loadgen`` measures by how much), so ``--procs`` adds cores; the open loop
bounds requests in flight and counts what it could not send as ``dropped`` rather than
let memory grow. It works against any HTTP server, not only scalelab's.
"""

from .profile import Profile, ProfileError, load_profile
from .runner import LoadError, run_load

__all__ = ["run_load", "load_profile", "Profile", "ProfileError", "LoadError"]
