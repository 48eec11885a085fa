"""The load balancer: one public address in front of many web servers.

This is the chapter's step from one server to several: users connect to the balancer,
web servers sit behind it on private addresses, a dead one is routed around (active
``GET /health`` probes plus passive ejection on errors; when more than half are out at
once it distrusts the health signal and tries them all, Envoy's "panic") and servers
join or leave the pool while it runs (``/admin/backends``). It is a real HTTP/1.1
reverse proxy, so curl, wrk, aiohttp and browsers use it unchanged; framing is parsed
strictly by the shared codec in ``components.common.http1`` so that no request can be
smuggled past it. The trade-off it makes is the one every L7 proxy makes: it parses
every request (costing CPU and latency that an L4 balancer such as LVS would not spend)
in exchange for per-request balancing, retries and header rewriting. Unlike HAProxy or
nginx it runs one Python event loop, so its ceiling is one core; ``bench/lb`` measures
how far that is from them.
"""
