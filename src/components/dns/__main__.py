"""``python -m components.dns --zone FILE [--zone ...] [--geo RULES.toml]``."""

from components.common import main

from .server import DnsService

if __name__ == "__main__":
    main(DnsService)
