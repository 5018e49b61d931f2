#!/bin/sh
# A transform provider in POSIX shell, with no jq: it answers every envelope it
# reads with that envelope, unchanged, one line for one line (so the flow can set
# `replies = "one"`). Any language that reads and writes lines can do the same.

IFS= read -r command || exit 0 # the command envelope {"command":"run","config":{..}}
echo '{"status": "ready"}'
while IFS= read -r line; do
    printf '%s\n' "$line"
done
