"""``python -m components.store``: run one store node (primary, or replica with --join)."""

from components.common import main

from .server import StoreService

main(StoreService)
