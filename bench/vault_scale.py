#!/usr/bin/env python3
"""A vault for many servers: concurrent clients through one vault, and one
client through the vault against a local directory repository.

  python3 bench/vault_scale.py --bin after=target/release/holdfast \
      [--bin before=/path/to/old/holdfast] [--clients 1,8,32,100] \
      [--mb-per-client 8] [--single-mb 192] [--reps 3] [--work DIR] \
      [--out bench/results/vault-scale.md] [--log-entries 1000000 \
       --log-scale target/release/examples/log_scale]

For each binary and each client count N: a fresh repository (`holdfast
init` with 100 client identities, each its own key), one `holdfast vault
serve` on 127.0.0.1 with a directory store (`--max-connections 256`, so
the connection cap is not what is measured), and N real `holdfast backup`
processes started 30 ms apart (see STAGGER_S), each with its own key, cache and tree of
incompressible files. Reported: aggregate MB/s (source bytes of all N
trees / wall time from the first start to the last exit), and the p99
request latency from the vault's own histograms (`--http` /metrics,
interpolated within buckets as Prometheus' histogram_quantile does), over
all routes and for pack PUTs alone.

Single client: the same tree (--single-mb) backed up into a local
directory repository and through a vault on the same machine; the ratio
vault / local throughput, and the client's peak RSS (getrusage of the
child). With --log-scale, the start-up of the vault's log at
--log-entries entries (time and peak RSS of opening it; proof times).

Medians of --reps runs, each into fresh directories. `--clients ""` runs
the single-client part alone. Only the standard library is used.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

PASS = "vault scale bench passphrase"
NAMES = [f"c{i:03d}" for i in range(100)]
STAGGER_S = 0.03


def env(cache=None):
    e = dict(os.environ)
    e["HOLDFAST_PASSPHRASE"] = PASS
    e.pop("XDG_CACHE_HOME", None)
    if cache:
        e["HOLDFAST_CACHE_DIR"] = cache
    return e


def run(cmd, cache=None):
    """Runs to the end; returns (seconds, stdout)."""
    t = time.monotonic()
    p = subprocess.Popen(cmd, env=env(cache), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = p.communicate()
    dt = time.monotonic() - t
    if p.returncode != 0:
        raise SystemExit(f"{cmd[:3]} failed ({p.returncode}): {err.decode(errors='replace')[-2000:]}")
    return dt, out


def run_rss(cmd, cache=None):
    """Runs to the end; returns (seconds, peak RSS MiB) from the child's rusage."""
    t = time.monotonic()
    p = subprocess.Popen(cmd, env=env(cache), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    dt = time.monotonic() - t
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise SystemExit(f"{cmd[:3]} failed: {err.decode(errors='replace')[-2000:]}")
    return dt, ru.ru_maxrss / 1024.0


def make_tree(root, mb, seed):
    """Files of 4 KiB–256 KiB of random bytes (nothing to compress or dedup)."""
    os.makedirs(root, exist_ok=True)
    rnd = __import__("random").Random(seed)
    left, i = mb << 20, 0
    while left > 0:
        d = os.path.join(root, f"d{i // 200:03d}")
        os.makedirs(d, exist_ok=True)
        n = min(left, rnd.randint(4 << 10, 256 << 10))
        with open(os.path.join(d, f"m{i:06d}"), "wb") as f:
            f.write(os.urandom(n))
        left -= n
        i += 1


def tree_bytes(root):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs)


class Vault:
    def __init__(self, hf, repo, keys, logf):
        self.p = subprocess.Popen(
            [hf, "vault", "serve", "--repo", repo, "--key", os.path.join(keys, "vault.key"),
             "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--max-connections", "256"],
            env=env(), stdout=subprocess.PIPE, stderr=open(logf, "wb"))
        self.url = self.http = None
        while self.url is None or self.http is None:
            line = self.p.stdout.readline().decode()
            if not line:
                raise SystemExit(f"vault did not start: {open(logf).read()[-2000:]}")
            for w in line.split():
                if w.startswith("https://"):
                    self.url = w
                elif w.startswith("http://"):
                    self.http = w.rstrip("/")
        threading.Thread(target=self.p.stdout.read, daemon=True).start()

    def buckets(self):
        """{(route, le): cumulative count} summed over statuses."""
        text = urllib.request.urlopen(self.http + "/metrics", timeout=10).read().decode()
        out = {}
        for line in text.splitlines():
            m = re.match(r'^\w+_bucket\{(.*)\} (\S+)$', line)
            if not m:
                continue
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
            if "route" not in labels or "le" not in labels:
                continue
            le = float("inf") if labels["le"] in ("+Inf", "inf") else float(labels["le"])
            k = (labels["route"], le)
            out[k] = out.get(k, 0) + float(m.group(2))
        return out

    def stop(self):
        self.p.terminate()
        try:
            self.p.wait(30)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()


def quantile(buckets, q, routes=None):
    """histogram_quantile over the buckets of `routes` (all if None)."""
    agg = {}
    for (r, le), c in buckets.items():
        if routes is None or r in routes:
            agg[le] = agg.get(le, 0) + c
    les = sorted(agg)
    if not les or agg[les[-1]] == 0:
        return None
    total = agg[les[-1]]
    rank = q * total
    prev_le, prev_c = 0.0, 0.0
    for le in les:
        c = agg[le]
        if c >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * ((rank - prev_c) / max(c - prev_c, 1e-9))
        prev_le, prev_c = le, c
    return les[-1]


CLIENT = None


def fresh_repo(hf, base, tag):
    hf = CLIENT or hf
    d = os.path.join(base, tag)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    repo, keys = os.path.join(d, "repo"), os.path.join(d, "keys")
    run([hf, "init", repo, "--keys", keys, "--client", ",".join(NAMES)])
    return d, repo, keys


def key_of(keys, i):
    return os.path.join(keys, "client.key" if i == 0 else f"client-{NAMES[i]}.key")


def concurrent(hf, base, data, n, rep, tag):
    d, repo, keys = fresh_repo(hf, base, f"{tag}-n{n}-r{rep}")
    v = Vault(hf, repo, keys, os.path.join(d, "vault.err"))
    try:
        b0 = v.buckets()
        procs, errs = [], []
        t = time.monotonic()
        for i in range(n):
            # All clients come from 127.0.0.1, and the vault admits at most
            # 8 not-yet-authenticated connections per address (a designed
            # refusal, docs/vault.md): starts are spread by STAGGER_S, as
            # cron jitter spreads real servers (which have addresses of
            # their own). The wall time includes the spread.
            if i:
                time.sleep(STAGGER_S)
            cache = os.path.join(d, f"cache-{i}")
            procs.append(subprocess.Popen(
                [CLIENT or hf, "backup", "--repo", v.url, "--key", key_of(keys, i), data[i]],
                env=env(cache), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        for p in procs:
            err = p.stderr.read()
            if p.wait() != 0:
                errs.append(err.decode(errors="replace")[-500:])
        wall = time.monotonic() - t
        b1 = v.buckets()
    finally:
        v.stop()
    if errs:
        raise SystemExit(f"{len(errs)} backups failed: {errs[0]}")
    diff = {k: b1.get(k, 0) - b0.get(k, 0) for k in b1}
    total = sum(tree_bytes(data[i]) for i in range(n))
    res = {
        "mb_s": total / wall / 1e6,
        "wall_s": wall,
        "p99_all_s": quantile(diff, 0.99),
        "p99_pack_put_s": quantile(diff, 0.99, {"pack_put"}),
        "p50_all_s": quantile(diff, 0.50),
    }
    shutil.rmtree(d, ignore_errors=True)
    return res


def single(hf, base, src, rep, tag, through_vault):
    d, repo, keys = fresh_repo(hf, base, f"{tag}-single-{'vault' if through_vault else 'local'}-r{rep}")
    cache = os.path.join(d, "cache")
    v = Vault(hf, repo, keys, os.path.join(d, "vault.err")) if through_vault else None
    try:
        target = v.url if v else repo
        dt, rss = run_rss([CLIENT or hf, "backup", "--repo", target, "--key", key_of(keys, 0), src], cache)
    finally:
        if v:
            v.stop()
    shutil.rmtree(d, ignore_errors=True)
    return {"mb_s": tree_bytes(src) / dt / 1e6, "wall_s": dt, "client_rss_mib": rss}


def med(xs, k):
    vals = [x[k] for x in xs if x[k] is not None]
    return statistics.median(vals) if vals else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", action="append", required=True,
                    help="LABEL=PATH of the vault binary (repeat)")
    ap.add_argument("--client-bin", default=None,
                    help="binary for init and every client (default: the last --bin), so that "
                         "only the vault differs between variants")
    ap.add_argument("--clients", default="1,8,32,100")
    ap.add_argument("--mb-per-client", type=int, default=8)
    ap.add_argument("--single-mb", type=int, default=192)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--work", default="/work/tmp-vault/bench")
    ap.add_argument("--out", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--log-scale", default=None, help="LABEL=PATH of examples/log_scale (repeat)", action="append")
    ap.add_argument("--log-entries", type=int, default=1_000_000)
    a = ap.parse_args()
    bins = [b.split("=", 1) for b in a.bin]
    global CLIENT
    CLIENT = a.client_bin or bins[-1][1]
    levels = [int(x) for x in a.clients.split(",") if x]
    os.makedirs(a.work, exist_ok=True)
    data_dir = os.path.join(a.work, "data")
    data = [os.path.join(data_dir, f"src-{i:03d}") for i in range(max(levels, default=0))]
    for i, p in enumerate(data):
        if not os.path.exists(os.path.join(p, ".done")):
            shutil.rmtree(p, ignore_errors=True)
            make_tree(p, a.mb_per_client, 1000 + i)
            open(os.path.join(p, ".done"), "w").close()
    single_src = os.path.join(data_dir, "single")
    if not os.path.exists(os.path.join(single_src, ".done")):
        shutil.rmtree(single_src, ignore_errors=True)
        make_tree(single_src, a.single_mb, 7)
        open(os.path.join(single_src, ".done"), "w").close()
    runs = os.path.join(a.work, "runs")
    results = {"concurrent": {}, "single": {}, "log": {}, "params": vars(a)}
    for tag, hf in bins:
        for n in levels:
            xs = []
            for rep in range(a.reps):
                r = concurrent(hf, runs, data, n, rep, tag)
                print(f"{tag} n={n} rep={rep}: {r}", flush=True)
                xs.append(r)
            results["concurrent"][f"{tag}/{n}"] = {
                k: med(xs, k) for k in xs[0]} | {"all": xs}
    for rep in range(a.reps):
        # Interleaved, so a slow patch of the machine hits every variant.
        for tag, hf in [("local", bins[-1][1])] + [(f"vault-{t}", h) for t, h in bins]:
            r = single(hf, runs, single_src, rep, tag, tag != "local")
            print(f"single {tag} rep={rep}: {r}", flush=True)
            results["single"].setdefault(tag, []).append(r)
    for tag, xs in list(results["single"].items()):
        results["single"][tag] = {k: med(xs, k) for k in xs[0]} | {"all": xs}
    for spec in a.log_scale or []:
        tag, exe = spec.split("=", 1)
        d = os.path.join(a.work, f"log-{tag}")
        shutil.rmtree(d, ignore_errors=True)
        subprocess.run([exe, "gen", d, str(a.log_entries)], check=True)
        xs = []
        for rep in range(a.reps):
            out = subprocess.run([exe, "open", d], check=True, capture_output=True).stdout
            xs.append(json.loads(out))
            print(f"log {tag} rep={rep}: {xs[-1]}", flush=True)
        results["log"][tag] = {k: med(xs, k) for k in xs[0]} | {"all": xs}
        shutil.rmtree(d, ignore_errors=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)
    print(json.dumps({k: v for k, v in results.items() if k != "params"}, indent=1, default=str))


if __name__ == "__main__":
    sys.exit(main())
