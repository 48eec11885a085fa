"""``python -m components.cache``: a memcached-compatible cache server."""

from components.common import main

from .server import CacheService

if __name__ == "__main__":
    main(CacheService)
