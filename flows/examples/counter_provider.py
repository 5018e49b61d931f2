#!/usr/bin/env python3
"""A DStream-style input provider that counts, in Python with the standard library only.

The protocol, as fbp's `exec` component (and DStream's executor) speaks it:
the first line on stdin is the command envelope {"command": "run", "config": {...}};
the provider answers {"status": "ready"} (or {"status": "error", "message": "..."}
and exits), then writes one envelope {"data": ..., "metadata": {...}} per line on
stdout. Logs go to stderr. SIGTERM stops it cleanly.

Config: `interval` (seconds between messages, default 1) and `max_count`
(how many messages before it exits; 0, the default, counts forever).
"""

import json
import signal
import sys
import time


def reply(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    command = json.loads(sys.stdin.readline() or "{}")
    config = command.get("config") or {}
    try:
        interval = float(config.get("interval", 1))
        max_count = int(config.get("max_count", 0))
    except (TypeError, ValueError) as e:
        reply({"status": "error", "message": f"bad config: {e}"})
        return 1
    reply({"status": "ready"})
    print(f"counter: counting every {interval}s up to {max_count or 'forever'}", file=sys.stderr, flush=True)
    count = 0
    while max_count == 0 or count < max_count:
        count += 1
        reply({"data": {"count": count}, "metadata": {}})
        if interval > 0:
            time.sleep(interval)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:
        sys.exit(0)
