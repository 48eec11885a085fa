"""``python -m components.web``: run the web tier (``--help`` lists the flags)."""

from components.common import main

from .server import WebService

if __name__ == "__main__":
    main(WebService)
