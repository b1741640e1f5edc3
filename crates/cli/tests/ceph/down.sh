#!/bin/bash
# Stops the cluster up.sh started in $D, by PID (radosgw first; its SIGTERM
# path can hang, so SIGKILL after 3 s), then removes $D.
D=${D:?set D}
[ -f "$D/pids" ] || exit 0
for name in rgw osd mon; do
  pid=$(awk -v n=$name '$1==n{print $2}' "$D/pids")
  [ -n "$pid" ] || continue
  kill "$pid" 2>/dev/null || continue
  for _ in $(seq 1 15); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -9 "$pid" 2>/dev/null || true
done
rm -rf "$D"
