"""``python -m components.queue [-b DIR] [-f MS] [-z BYTES]``: run the queue server."""

from components.common import main

from .server import QueueService

if __name__ == "__main__":
    main(QueueService)
