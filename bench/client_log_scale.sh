#!/bin/bash
# client_log_scale.sh N : sets up a vault whose log has ~N entries (padded), then
# measures `snapshots` and an unchanged `backup` with the before and after
# binaries (bench/results/vault-scale.md, "The client and a long log").
# Output: lines "label wall_s maxrss_kib user_s sys_s".
# BEFORE=OLD/holdfast AFTER=target/release/holdfast bench/client_log_scale.sh 1000000
set -u
N=$1
W=${SCRATCH:-/tmp}/client-log-scale-$N
BEFORE=${BEFORE:?the client before}
AFTER=${AFTER:?the client after (also runs init and the vault)}
PAD=${PAD:-target/release/examples/log_pad}
rm -rf $W; mkdir -p $W/src
export HOLDFAST_PASSPHRASE=pw-h5-bench
export HOLDFAST_CACHE_DIR=$W/cache
for i in $(seq 1 50); do head -c 2000 /dev/urandom | base64 > $W/src/f$i; done
$AFTER init $W/repo --keys $W/keys >/dev/null
start() {
  $AFTER vault serve --repo $W/repo --key $W/keys/vault.key --listen 127.0.0.1:0 > $W/vault.out 2>$W/vault.err &
  VPID=$!
  for i in $(seq 1 600); do URL=$(grep -o 'https://[^ ]*' $W/vault.out | head -1); [ -n "$URL" ] && break; sleep 0.5; done
}
start
$AFTER backup --repo $URL --key $W/keys/client.key $W/src >/dev/null || exit 1
kill $VPID; wait $VPID
$PAD $W/repo $W/keys/vault.key $N
start
m() { # label bin args...
  local label=$1; shift
  /usr/bin/time -f "%e %M %U %S" -o $W/t "$@" >/dev/null 2>$W/err || { echo "$label FAILED"; head -3 $W/err; }
  echo "$label $(cat $W/t)"
}
CK=$W/keys/client.key
m "before snapshots" $BEFORE snapshots --repo $URL --key $CK
m "before snapshots" $BEFORE snapshots --repo $URL --key $CK
m "before backup-unchanged" $BEFORE backup --repo $URL --key $CK $W/src
m "after snapshots(cold cache)" $AFTER snapshots --repo $URL --key $CK
m "after snapshots(warm)" $AFTER snapshots --repo $URL --key $CK
m "after snapshots(warm)" $AFTER snapshots --repo $URL --key $CK
m "after backup-unchanged(warm)" $AFTER backup --repo $URL --key $CK $W/src
m "after backup-unchanged(warm)" $AFTER backup --repo $URL --key $CK $W/src
m "before backup-unchanged" $BEFORE backup --repo $URL --key $CK $W/src
du -sh $W/cache/vault-log 2>/dev/null
kill $VPID; wait $VPID
