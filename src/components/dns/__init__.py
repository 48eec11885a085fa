"""DNS with geo rules: the front door of the multi-data-centre stage of the journey.

Users reach the site through a name, and the authoritative server for that name is the
first place traffic can be steered: it answers each user with the data centre nearest to
them (by the Client Subnet their resolver forwards, RFC 7871, or the resolver's own
address), splits a name x% / (100-x)% between targets, and stops handing out a target
whose health check fails. The trade-off is the TTL: DNS answers are cached by resolvers,
so a failover or a weight change reaches users only as fast as the TTL lets it, which is
why geo answers carry short TTLs. Real GeoDNS services (Route 53, NS1, PowerDNS with
GeoIP) locate clients with large geo-IP databases and anycast; here regions are explicit
subnet lists, and the server is a single process speaking real DNS over UDP and TCP.
``examples/`` ships the zone and rules of the multi_dc stage: two data centres on
loopback, nearest-centre routing, an 80/20 split and failover between them.
"""
