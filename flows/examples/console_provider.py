#!/usr/bin/env python3
"""A DStream-style output provider, in Python with the standard library only.

Reads the command envelope {"command": "run", "config": {...}} from the first
stdin line, then one envelope {"data": ..., "metadata": {...}} per line, and
prints each message's data as one line of JSON: to the file named by `path` in
its config (appended to), or to stderr when `path` is empty or missing (fbp logs
a provider's stderr). It never writes to stdout, so it sends no handshake: fbp
just starts it. It exits when its stdin closes, or on SIGTERM.
"""

import json
import signal
import sys


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    command = json.loads(sys.stdin.readline() or "{}")
    path = (command.get("config") or {}).get("path") or None
    out = open(path, "a", encoding="utf-8") if path else sys.stderr
    with out:
        for line in sys.stdin:
            if line.strip():
                data = json.loads(line).get("data")
                out.write(json.dumps(data) + "\n")
                out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
