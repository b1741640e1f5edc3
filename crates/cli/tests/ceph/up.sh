#!/bin/bash
# A throwaway single-node Ceph cluster (monitor, memstore OSD, RADOS Gateway)
# on 127.0.0.1 for the S3 tests: the one S3 server installable here that
# really enforces Object Lock in COMPLIANCE mode.
#
#   D=DIR MON_PORT=N RGW_PORT=N WATCH_PID=PID bash up.sh
#
# Needs Debian's ceph-mon ceph-osd radosgw ceph-common uuid-runtime curl.
# Data lives in RAM (memstore); every daemon's PID goes to $D/pids, and
# when WATCH_PID exits a watchdog stops the daemons (the test harness has
# no destructor to do it), so no cluster outlives its test run.
set -euo pipefail
D=${D:?set D to a fresh directory}
MON_PORT=${MON_PORT:-3300}
RGW_PORT=${RGW_PORT:-7480}
rm -rf "$D"; mkdir -p "$D"/{run,log,mon,osd,rgw}
FSID=$(uuidgen)
cat > "$D/ceph.conf" <<CONF
[global]
fsid = $FSID
mon host = v2:127.0.0.1:$MON_PORT
mon initial members = a
auth cluster required = none
auth service required = none
auth client required = none
auth allow insecure global id reclaim = true
public network = 127.0.0.0/8
ms bind ipv4 = true
ms mon client mode = crc secure
ms client mode = crc secure
ms cluster mode = crc secure
ms service mode = crc secure
ms mon cluster mode = crc secure
ms mon service mode = crc secure
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
osd crush chooseleaf type = 0
run dir = $D/run
admin socket = $D/run/\$name.asok
log file = $D/log/\$name.log
pid file = $D/run/\$name.pid
keyring = $D/keyring
[mon]
mon data = $D/mon/\$cluster-\$id
[osd]
osd data = $D/osd/\$cluster-\$id
osd objectstore = memstore
memstore device bytes = 2147483648
osd max object name len = 460
osd max object namespace len = 64
[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:$RGW_PORT tcp_nodelay=1
rgw dns name = localhost
rgw data = $D/rgw
CONF
export CEPH_CONF="$D/ceph.conf"
ceph-authtool --create-keyring "$D/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
monmaptool --create --addv a "[v2:127.0.0.1:$MON_PORT]" --fsid "$FSID" "$D/monmap" >/dev/null
ceph-mon --mkfs -i a --monmap "$D/monmap" --keyring "$D/keyring"
ceph-mon -i a -f >"$D/log/mon.stdout" 2>&1 &
echo "mon $!" >"$D/pids"
if [ -n "${WATCH_PID:-}" ]; then
  # Stops the daemons once the test process is gone.
  (
    trap '' HUP
    while kill -0 "$WATCH_PID" 2>/dev/null; do sleep 1; done
    D="$D" bash "$(dirname "$0")/down.sh" >/dev/null 2>&1
  ) </dev/null >/dev/null 2>&1 &
fi
up=0
for _ in $(seq 1 150); do
  if ceph -s --connect-timeout 2 >/dev/null 2>&1; then up=1; break; fi
  sleep 0.2
done
[ $up = 1 ] || { echo "ceph monitor did not start; see $D/log" >&2; exit 1; }
OSD_UUID=$(uuidgen)
OSD_ID=$(ceph osd new "$OSD_UUID")
mkdir -p "$D/osd/ceph-$OSD_ID"
ceph-osd -i "$OSD_ID" --mkfs --osd-uuid "$OSD_UUID" >"$D/log/osd-mkfs.out" 2>&1
ceph-osd -i "$OSD_ID" -f >"$D/log/osd.stdout" 2>&1 &
echo "osd $!" >>"$D/pids"
up=0
for _ in $(seq 1 300); do
  if ceph osd stat 2>/dev/null | grep -q '1 up'; then up=1; break; fi
  sleep 0.2
done
[ $up = 1 ] || { echo "ceph OSD did not start; see $D/log" >&2; exit 1; }
radosgw -n client.rgw.a -f >"$D/log/rgw.stdout" 2>&1 &
echo "rgw $!" >>"$D/pids"
up=0
for _ in $(seq 1 600); do
  if curl -s -o /dev/null "http://127.0.0.1:$RGW_PORT/"; then up=1; break; fi
  sleep 0.2
done
[ $up = 1 ] || { echo "radosgw did not start; see $D/log" >&2; exit 1; }
radosgw-admin user create --uid=tester --display-name=tester \
  --access-key="${AWS_ACCESS_KEY_ID:-testing}" \
  --secret-key="${AWS_SECRET_ACCESS_KEY:-testingsecret}" >/dev/null
echo "http://127.0.0.1:$RGW_PORT"
