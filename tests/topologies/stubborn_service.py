"""Misbehaving 'components' for launcher tests, without the runtime's good manners.

``--mode silent``: runs but never prints a ready line (the launcher's deadline must fire).
``--mode deaf``: prints a ready line, then ignores SIGTERM (the launcher must SIGKILL it).
``--mode crash``: logs an error and exits 3 before it is ready.
``--mode chatty``: prints a ready line, then 4 MiB more on stdout (far more than a pipe
holds), then logs ``printed`` (it can only get there if someone reads its stdout).
Every other flag the launcher adds (ports, name, data dir) is accepted and ignored.
"""

import json
import signal
import sys
import time

mode = sys.argv[sys.argv.index("--mode") + 1]
if mode == "crash":
    print('{"event": "start_failed", "error": "database file is corrupt"}', file=sys.stderr)
    sys.exit(3)
if mode in ("deaf", "chatty"):
    if mode == "deaf":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    name = sys.argv[sys.argv.index("--name") + 1]
    listen = {"main": "127.0.0.1:9", "admin": "127.0.0.1:9"}
    print(json.dumps({"event": "ready", "component": "stubborn", "name": name, "listen": listen}))
    sys.stdout.flush()
if mode == "chatty":
    line = "chatter " * 127 + "\n"  # about 1 KiB
    for _ in range(4096):
        sys.stdout.write(line)
    sys.stdout.flush()
    print('{"event": "printed"}', file=sys.stderr, flush=True)
print('{"event": "waiting"}', file=sys.stderr, flush=True)
while True:
    time.sleep(60)
