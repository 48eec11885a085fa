"""``python -m components.lb --backend HOST:PORT[,weight=N] ... --algorithm ...``"""

from components.common import main

from .server import LoadBalancer

if __name__ == "__main__":
    main(LoadBalancer)
