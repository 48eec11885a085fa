"""``python -m components.worker --queue HOST:PORT --tube photos``: run a worker."""

from components.common import main

from .server import WorkerService

if __name__ == "__main__":
    main(WorkerService)
