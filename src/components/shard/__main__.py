"""``python -m components.shard --shards CONFIG.toml``: run the shard router."""

from components.common import main

from .server import ShardService

main(ShardService)
