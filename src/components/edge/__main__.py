"""``python -m components.edge --origin HOST:PORT [--origin ...] --memory-mb N``"""

from components.common import main

from .server import Edge

if __name__ == "__main__":
    main(Edge)
