"""The edge in front of the real web tier: the journey's CDN serving /static/ assets.

``components.web`` serves ``/static/*`` with ``Cache-Control: public, max-age=N``, an
ETag and Last-Modified; the edge must turn repeat requests into hits the web server never
sees, and revalidate with a conditional request (the web tier answers 304) once the
asset is stale. What reached the web tier is read from its own request counter.
"""

from __future__ import annotations

import aiohttp

import harness

ASSET = "/static/app.css"


def static_requests(web) -> dict[str, float]:
    """scalelab_web_requests_total for static routes, by status."""
    _, _, text = harness.http("GET", web.url("admin") + "/metrics")
    counts: dict[str, float] = {}
    for line in text.decode().splitlines():
        if line.startswith("scalelab_web_requests_total{") and "static" in line:
            status = line.split('status="', 1)[1].split('"', 1)[0]
            counts[status] = counts.get(status, 0) + float(line.rsplit(" ", 1)[1])
    return counts


async def test_static_assets_are_hits_the_web_tier_never_sees(spawn):
    web = spawn("web", "--seed-users", "5")
    edge = spawn("edge", "--origin", web.listen["main"])
    async with aiohttp.ClientSession() as session:
        seen = []
        for _ in range(3):
            async with session.get(edge.url("main") + ASSET) as response:
                assert response.status == 200
                seen.append((response.headers["X-Cache"], await response.read()))
    assert [s[0] for s in seen] == ["MISS", "HIT", "HIT"]
    assert seen[0][1] == seen[2][1] != b""
    assert static_requests(web) == {"200": 1}


async def test_stale_assets_are_revalidated_with_the_web_tiers_304(spawn):
    web = spawn("web", "--seed-users", "5", "--static-max-age-s", "0")
    edge = spawn("edge", "--origin", web.listen["main"])
    async with aiohttp.ClientSession() as session:
        async with session.get(edge.url("main") + ASSET) as response:
            assert response.headers["X-Cache"] == "MISS"
            body = await response.read()
        async with session.get(edge.url("main") + ASSET) as response:
            assert response.headers["X-Cache"] == "REVALIDATED"
            assert await response.read() == body
    assert static_requests(web) == {"200": 1, "304": 1}
