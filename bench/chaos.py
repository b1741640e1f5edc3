#!/usr/bin/env python3
"""Chaos and soak harness for holdfast: faults injected many times at random
points, and after each round the repository must still be whole.

  python3 bench/chaos.py [--quick] [--bin PATH] [--only KIND,...] [--out FILE]
                         [--rounds N] [--soak-secs S] [--soak-clients N]

Fault kinds (each its own world: repository, keys, vault on 127.0.0.1):

  crash-client   kill -9 of `backup` at a random moment, then a clean backup
  crash-vault    kill -9 of the vault during backups (mid-PUT, mid-commit,
                 mid-log-append, mid-reclaim: whatever it was doing), restart
  crash-replica  kill -9 of `replica pull`, then a clean pull
  crash-export   kill -9 of `export`, then a clean export that verifies
  crash-mail     kill -9 of `mail restore` into live mailboxes (a spool, one
                 mailbox, --into-folder): live files untouched, nothing partial
                 or twice in cur/new; a rerun completes exactly, a third writes 0
  net-drop       a loopback proxy cuts connections after a random byte count
  net-slow       the proxy delays every chunk (a slow link)
  disk-full      the vault's repository on a small tmpfs filled to the brim,
                 then freed; the replica's disk full mid-pull
  clock          the vault restarted with its clock +1 day, +10 years, and
                 back; clients skewed by hours (libfaketime)
  soak           many clients backing up at once through one vault, with
                 reclaims running and a replica pulling every 10 s

With Ceph installed (Debian ceph-mon ceph-osd radosgw ceph-common
uuid-runtime curl; not in the default set, name them with --only or --s3):

  s3-faults      a vault on S3 (Object Lock) whose S3 connections go through
                 a proxy answering 500 or 503 at random instead of RGW;
                 backups through the vault, and restores straight from S3
                 through the same faults: each a clean failure or a retry,
                 never a wrong byte
  s3-kill        RGW killed -9 and restarted mid-backup (through the vault)
                 and mid-restore (straight from S3)

After every round: `verify --read-data` (restore key), `audit` (auditor key)
and `replica pull` must be clean (exit 0). At the end of each kind every
snapshot a backup reported must be listed and restore byte for byte, unless
the log validly reclaimed it, in which case the replica must still hold it.

Everything runs the real binary; nothing is mocked. Only the standard
library is used. `--quick` is what CI runs (tens of rounds, a short soak);
the full run writes bench/results/chaos.md.
"""
import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

PASS = "chaos harness passphrase"
FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"


class Failure(Exception):
    pass


# --------------------------------------------------------------- data

WORDS = ("the of and to in is for on that with as was at by this from be are or "
         "have an it not which we you your invoice meeting report attached please "
         "find below regards thanks update schedule project account payment order "
         "delivery server backup restore mailbox password team review").split()


def message(rng, n):
    body = " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 400)))
    att = ""
    if rng.random() < 0.15:
        att = "\n\n" + rng.randbytes(rng.randint(2000, 60000)).hex()
    return (f"From: user{rng.randint(1, 99)}@example.org\nTo: box@example.org\n"
            f"Subject: message {n}\nMessage-ID: <{n}.{rng.random()}@example.org>\n\n"
            f"{body}{att}\n").encode()


def make_spool(root, users, msgs, seed):
    rng = random.Random(seed)
    for u in range(users):
        for folder in ("", ".Sent"):
            for sub in ("cur", "new", "tmp"):
                os.makedirs(f"{root}/u{u}/Maildir/{folder}/{sub}", exist_ok=True)
        for m in range(msgs):
            folder = rng.choice(("", "", ".Sent"))
            name = f"{1_600_000_000 + m}.M{m}P{u}.host:2,S"
            with open(f"{root}/u{u}/Maildir/{folder}/cur/{name}", "wb") as f:
                f.write(message(rng, m))


def mail_day(root, seed):
    """New deliveries, a few deletions and flag renames."""
    rng = random.Random(seed)
    for u in sorted(os.listdir(root)):
        cur = f"{root}/{u}/Maildir/cur"
        names = sorted(os.listdir(cur))
        for name in rng.sample(names, min(len(names), rng.randint(0, 2))):
            os.remove(f"{cur}/{name}")
        for name in rng.sample(sorted(os.listdir(cur)), min(2, len(os.listdir(cur)))):
            if not name.endswith("F"):
                os.rename(f"{cur}/{name}", f"{cur}/{name}F")
        for i in range(rng.randint(1, 4)):
            with open(f"{root}/{u}/Maildir/new/{seed}.{i}.{rng.random()}.host", "wb") as f:
                f.write(message(rng, seed * 100 + i))


def digest(root):
    """One hash over every path, size and content under root."""
    h = hashlib.sha256()
    for d, dirs, files in os.walk(root):
        dirs.sort()
        for f in sorted(files):
            p = os.path.join(d, f)
            h.update(os.path.relpath(p, root).encode() + b"\0")
            with open(p, "rb") as fh:
                h.update(hashlib.sha256(fh.read()).digest())
    return h.hexdigest()


# --------------------------------------------------------------- world

class World:
    def __init__(self, binary, root, clients=1, init_args=(), repo=None, env_extra=None):
        self.bin, self.root = binary, root
        self.repo = repo or f"{root}/repo"
        self.keys = f"{root}/keys"
        self.replica = f"{root}/replica"
        self.env = dict(os.environ, HOLDFAST_PASSPHRASE=PASS, **(env_extra or {}))
        self.env.pop("XDG_CACHE_HOME", None)
        self.clients = ["client"] + [f"c{i}" for i in range(1, clients)]
        args = ["init", self.repo, "--keys", self.keys]
        for c in self.clients:
            args += ["--client", c]
        self.ok(args + list(init_args))
        self.vault = None
        self.vault_err = f"{root}/vault.err"
        self.url = None
        # snapshot id -> (client, digest of its source at backup time)
        self.truth = {}
        # How long the last clean backup took: kills land inside that span.
        self.last_secs = 0.5

    def key(self, role):
        return f"{self.keys}/{role}.key"

    def client_key(self, c):
        return self.key("client") if c == "client" else self.key(f"client-{c}")

    def cmd_env(self, cache="cache", extra=None):
        e = dict(self.env, HOLDFAST_CACHE_DIR=f"{self.root}/{cache}")
        e.update(extra or {})
        return e

    def run(self, args, cache="cache", env=None, timeout=900):
        return subprocess.run([self.bin] + args, env=self.cmd_env(cache, env),
                              capture_output=True, timeout=timeout)

    def ok(self, args, **kw):
        p = self.run(args, **kw)
        if p.returncode != 0:
            raise Failure(f"holdfast {' '.join(args[:3])} exit {p.returncode}: "
                          f"{p.stderr.decode(errors='replace').strip()[-600:]}")
        return p.stdout.decode(errors="replace")

    def spawn(self, args, cache="cache", env=None):
        return subprocess.Popen([self.bin] + args, env=self.cmd_env(cache, env),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    # The vault.
    def start_vault(self, extra=(), faketime=None, repo=None, env_extra=None):
        env = dict(self.env, **(env_extra or {}))
        if faketime:
            env.update(LD_PRELOAD=FAKETIME_LIB, FAKETIME=faketime,
                       DONT_FAKE_MONOTONIC="1", FAKETIME_NO_CACHE="1")
        args = [self.bin, "vault", "serve", "--repo", repo or self.repo,
                "--key", self.key("vault"), "--listen", "127.0.0.1:0",
                # Hundreds of rounds back up far more often than the
                # default hourly limit lets one client.
                "--max-snapshots-per-hour", "1000000"] + list(extra)
        err = open(self.vault_err, "ab")
        self.vault = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=err)
        line = self.vault.stdout.readline().decode()
        url = next((w for w in line.split() if w.startswith("https://")), None)
        if not url:
            raise Failure(f"vault did not start: {line} {self.vault_stderr()[-600:]}")
        threading.Thread(target=self.vault.stdout.read, daemon=True).start()
        self.url = url
        return url

    def kill_vault(self, sig=signal.SIGKILL):
        if self.vault and self.vault.poll() is None:
            self.vault.send_signal(sig)
            self.vault.wait()
        self.vault = None

    def vault_stderr(self):
        try:
            with open(self.vault_err, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    # What a round must leave behind.
    def backup(self, src, client="client", repo=None, cache=None, env=None):
        t0 = time.time()
        out = self.ok(["backup", "--repo", repo or self.url, "--key",
                       self.client_key(client), "--json", src],
                      cache=cache or f"cache-{client}", env=env)
        self.last_secs = time.time() - t0
        snap = json.loads(out)[0]["snapshot"]
        self.truth[snap] = (client, digest(src))
        return snap

    def check(self, what):
        """verify --read-data, audit and a replica pull: all clean."""
        problems = []
        for args in (
            ["verify", "--repo", self.url, "--key", self.key("restore"), "--read-data"],
            ["audit", "--repo", self.url, "--key", self.key("auditor")],
            ["replica", "pull", "--from", self.url, "--key", self.key("replica"),
             "--into", self.replica],
        ):
            p = self.run(args)
            if p.returncode != 0:
                problems.append(f"{args[0]} {args[1]}: exit {p.returncode}: "
                                f"{p.stderr.decode(errors='replace').strip()[-400:]}")
        if problems:
            raise Failure(f"after {what}: " + " | ".join(problems))

    def restore_all(self, sample=None, rng=None):
        """Every snapshot a backup reported restores exactly (from the vault,
        or from the replica when the log reclaimed it); with `sample`, each
        client's newest and `sample` others at random. Returns (restored,
        lost)."""
        listed = {s["id"] for s in json.loads(self.ok(
            ["snapshots", "--repo", self.url, "--key", self.key("restore"), "--json"]))}
        missing = [s for s in self.truth if s not in listed and not os.path.isfile(
            f"{self.replica}/snapshots/{s}")]
        restored, lost = 0, [f"{s[:12]} (in neither the vault nor the replica)"
                             for s in missing]
        todo = [s for s in self.truth if s not in missing]
        if sample is not None:
            newest = {}
            for s in todo:
                newest[self.truth[s][0]] = s
            rest = [s for s in todo if s not in newest.values()]
            (rng or random).shuffle(rest)
            todo = list(newest.values()) + rest[:sample]
        for snap in todo:
            client, want = self.truth[snap]
            repo = self.url if snap in listed else self.replica
            target = tempfile.mkdtemp(dir=self.root, prefix="restore-")
            p = self.run(["restore", "--repo", repo, "--key", self.key("restore"),
                          snap[:16], target])
            got = None
            if p.returncode == 0:
                inner = [os.path.join(target, d) for d in os.listdir(target)]
                got = digest(inner[0]) if len(inner) == 1 else None
            shutil.rmtree(target, ignore_errors=True)
            if got == want:
                restored += 1
            else:
                lost.append(f"{snap[:12]} ({'vault' if repo == self.url else 'replica'}: "
                            f"exit {p.returncode} {p.stderr.decode(errors='replace').strip()[-200:]})")
        return restored, lost


# --------------------------------------------------------------- proxy

def relay(c, target, chunk=None):
    """Passes bytes both ways between the accepted connection `c` and a new
    one to `target` until either side ends; `chunk(data)` may delay a chunk
    or return False to cut the connection there."""
    try:
        s = socket.create_connection(target)
    except OSError:
        c.close()
        return

    def pump(a, b):
        try:
            while True:
                d = a.recv(65536)
                if not d or (chunk is not None and not chunk(d)):
                    break
                b.sendall(d)
        except OSError:
            pass
        for x in (a, b):
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    t = threading.Thread(target=pump, args=(s, c), daemon=True)
    t.start()
    pump(c, s)
    t.join()
    c.close()
    s.close()


class Proxy:
    """A TCP proxy on 127.0.0.1 in front of the vault: passes bytes (TLS
    stays end to end), and can cut a connection after a random number of
    bytes or delay every chunk."""

    def __init__(self, target_url, rng, drop=0.0, delay=0.0):
        host, port = target_url.split("//")[1].split(":")
        self.target = (host, int(port))
        self.rng, self.drop, self.delay = rng, drop, delay
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"https://127.0.0.1:{self.sock.getsockname()[1]}"
        self.cuts = 0
        self.alive = True
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while self.alive:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.pair, args=(c,), daemon=True).start()

    def pair(self, c):
        budget = self.rng.randint(100, 60_000) if self.rng.random() < self.drop else None
        lock = threading.Lock()
        state = {"n": 0}

        def chunk(d):
            if self.delay:
                time.sleep(self.delay)
            with lock:
                state["n"] += len(d)
                cut = budget is not None and state["n"] > budget
            if cut:
                self.cuts += 1
            return not cut

        relay(c, self.target, chunk)

    def close(self):
        self.alive = False
        self.sock.close()


# --------------------------------------------------------------- faults

def kill_at_random(w, args, rng, max_delay, cache):
    p = w.spawn(args, cache=cache)
    time.sleep(rng.uniform(0, max_delay))
    killed = p.poll() is None
    if killed:
        p.send_signal(signal.SIGKILL)
    p.communicate()
    return killed


def crash_client(w, src, rounds, rng, stats):
    w.start_vault()
    w.backup(src)
    for r in range(rounds):
        mail_day(src, 1000 + r)
        stats["kills"] += kill_at_random(
            w, ["backup", "--repo", w.url, "--key", w.client_key("client"), src],
            rng, w.last_secs * 1.2, "cache-client")
        w.backup(src)
        if r % 5 == 4 or r == rounds - 1:
            w.check(f"client kill round {r}")
        stats["rounds"] += 1


def crash_vault(w, src, rounds, rng, stats):
    w.start_vault(["--reclaim-every-secs", "1"])
    w.backup(src)
    for r in range(rounds):
        mail_day(src, 2000 + r)
        p = w.spawn(["backup", "--repo", w.url, "--key", w.client_key("client"),
                     "--json", src], cache="cache-client")
        time.sleep(rng.uniform(0, w.last_secs * 1.2))
        w.kill_vault()
        stats["kills"] += 1
        out, _ = p.communicate()
        if p.returncode == 0:
            # It committed before the kill: the commit must have survived.
            snap = json.loads(out)[0]["snapshot"]
            w.truth[snap] = ("client", digest(src))
        w.start_vault(["--reclaim-every-secs", "1"])
        w.backup(src)
        if r % 5 == 4 or r == rounds - 1:
            w.check(f"vault kill round {r}")
        stats["rounds"] += 1


def crash_replica(w, src, rounds, rng, stats):
    w.start_vault()
    pull = ["replica", "pull", "--from", w.url, "--key", w.key("replica"), "--into", w.replica]
    last = 0.5
    for r in range(rounds):
        mail_day(src, 3000 + r)
        w.backup(src)
        stats["kills"] += kill_at_random(w, pull, rng, last * 1.2, "cache-replica")
        t0 = time.time()
        w.ok(pull, cache="cache-replica")
        last = time.time() - t0
        w.check(f"replica kill round {r}")
        w.ok(["verify", "--repo", w.replica, "--key", w.key("restore"), "--read-data"])
        stats["rounds"] += 1


def crash_export(w, src, rounds, rng, stats):
    w.start_vault()
    last = 0.5
    for r in range(rounds):
        mail_day(src, 4000 + r)
        w.backup(src)
        to = f"{w.root}/bundle-{r}"
        stats["kills"] += kill_at_random(
            w, ["export", "--repo", w.url, "--key", w.key("replica"), "--to", to],
            rng, last * 1.2, "cache-export")
        # A killed export leaves no bundle that passes for whole: either
        # nothing, or a directory without manifest.json that `verify`
        # refuses; a second export works.
        if os.path.exists(to):
            p = w.run(["verify", "--repo", f"bundle:{to}", "--key", w.key("restore"),
                       "--read-data"])
            if p.returncode == 0 and not os.path.exists(f"{to}/manifest.json"):
                raise Failure(f"a killed export verified without a manifest ({to})")
        to2 = f"{w.root}/bundle-{r}-again"
        t0 = time.time()
        w.ok(["export", "--repo", w.url, "--key", w.key("replica"), "--to", to2])
        last = time.time() - t0
        w.ok(["verify", "--repo", f"bundle:{to2}", "--key", w.key("restore"), "--read-data"])
        shutil.rmtree(to, ignore_errors=True)
        shutil.rmtree(to2, ignore_errors=True)
        stats["rounds"] += 1
    w.check("export kills")


def net(w, src, rounds, rng, stats, drop, delay):
    direct = w.start_vault()
    proxy = Proxy(direct, rng, drop=drop, delay=delay)
    try:
        for r in range(rounds):
            mail_day(src, 5000 + r)
            w.url = proxy.url
            p = w.run(["backup", "--repo", proxy.url, "--key", w.client_key("client"),
                       "--json", src], cache="cache-client")
            if p.returncode == 0:
                w.truth[json.loads(p.stdout)[0]["snapshot"]] = ("client", digest(src))
                stats["ok_through_fault"] += 1
            else:
                stats["clean_failures"] += 1
            w.url = direct
            w.backup(src)
            if r % 5 == 4 or r == rounds - 1:
                w.check(f"network round {r}")
            stats["rounds"] += 1
    finally:
        w.url = direct
        stats["cuts"] += proxy.cuts
        proxy.close()


def tmpfs(path, size):
    os.makedirs(path, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                       capture_output=True)
    return r.returncode == 0


def umount(path):
    subprocess.run(["umount", "-l", path], capture_output=True)


def fill(path):
    """Fills the file system under path; returns the filler's path."""
    filler = os.path.join(path, "filler")
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 20))
                f.flush()
        except OSError:
            pass
    try:
        os.fsync(f.fileno())
    except (OSError, ValueError):
        pass
    return filler


def disk_full(w, src, rounds, rng, stats):
    """The vault's repository on a small tmpfs, filled before each backup
    (with a random little space left, so writes fail part way); then the
    replica's disk full mid-pull."""
    mnt = f"{w.root}/small"
    rmnt = f"{w.root}/small-replica"
    if not tmpfs(mnt, "64m"):
        stats["skipped"] = "mount -t tmpfs refused (not root?)"
        return
    try:
        shutil.copytree(w.repo, f"{mnt}/repo", symlinks=True)
        w.start_vault(["--state", f"{w.root}/state"], repo=f"{mnt}/repo")
        w.backup(src)
        for r in range(rounds):
            mail_day(src, 6000 + r)
            # A message with a large attachment, so that the upload needs
            # more room than is left.
            with open(f"{src}/u0/Maildir/new/{6000 + r}.big.host", "wb") as f:
                f.write(message(rng, r) + rng.randbytes(rng.randint(1 << 20, 3 << 20)).hex().encode())
            filler = fill(mnt)
            with open(filler, "r+b") as f:
                f.truncate(max(0, os.path.getsize(filler) - rng.randint(0, 1 << 20)))
            p = w.run(["backup", "--repo", w.url, "--key", w.client_key("client"),
                       "--json", src], cache="cache-client")
            if p.returncode == 0:
                w.truth[json.loads(p.stdout)[0]["snapshot"]] = ("client", digest(src))
                stats["ok_through_fault"] += 1
            else:
                stats["clean_failures"] += 1
            os.remove(filler)
            w.backup(src)
            w.check(f"full disk round {r}")
            stats["rounds"] += 1
        if tmpfs(rmnt, "48m"):
            w.replica = f"{rmnt}/replica"
            filler = fill(rmnt)
            with open(filler, "r+b") as f:
                f.truncate(max(0, os.path.getsize(filler) - (2 << 20)))
            p = w.run(["replica", "pull", "--from", w.url, "--key", w.key("replica"),
                       "--into", w.replica])
            stats["replica_full_exit"] = p.returncode
            os.remove(filler)
            w.check("replica full disk")
            w.ok(["verify", "--repo", w.replica, "--key", w.key("restore"), "--read-data"])
        restored, lost = w.restore_all()
        stats["restored"] += restored
        stats["lost"] += lost
    finally:
        w.kill_vault()
        umount(rmnt)
        umount(mnt)


CLOCK_INIT = ["--delay-secs", "1"]


def clock_audit(w):
    p = w.run(["audit", "--repo", w.url, "--key", w.key("auditor"), "--json"])
    if p.returncode != 0:
        raise Failure(f"audit exit {p.returncode}: {p.stderr.decode(errors='replace')[-400:]}")
    return json.loads(p.stdout)[0]


def clock_ack(w, what):
    """The acknowledgement ceremony on a held vault: admin-1 proposes
    ack-clock, admin-2 approves, and after the delay (1 s) the hold is gone
    from the log and the vault said it executed."""
    before = len(w.vault_stderr())
    out = w.ok(["propose", "ack-clock", "--repo", w.url, "--key", w.key("admin-1")])
    pid = out.split()[1]
    w.ok(["approve", "--repo", w.url, "--key", w.key("admin-2"), pid])
    for _ in range(100):
        if clock_audit(w)["clock_held"] is None:
            break
        time.sleep(0.2)
    else:
        raise Failure(f"after {what}: the acknowledged hold is still in force")
    if "EXECUTED proposal" not in w.vault_stderr()[before:]:
        raise Failure(f"after {what}: the vault did not say it executed the acknowledgement")


def clock(w, src, rounds, rng, stats):
    """The vault restarted on a jumped clock (a bad RTC, a spoofed NTP
    answer), reclaiming every second, with a client whose own clock is hours
    off; then restarted on the right clock. No snapshot may be lost and
    every jump must be alerted. A forward jump beyond the hold bound (6 h)
    must leave a clock hold in the log that survives the restart and stops
    reclaims, until the quorum acknowledges it (`propose ack-clock`,
    approval, 1 s delay): each such round runs that ceremony; a backward
    jump must leave no hold. A jump within --max-clock-gap-secs (+1 day)
    is believed: the vault then dates entries a day ahead, and every reader
    with a right clock reports them; that round is the last, and the final
    checks (and its acknowledgement) run as a reader a day later."""
    reclaim = ["--reclaim-every-secs", "1"]
    w.start_vault(reclaim)
    w.backup(src)
    w.check("clock start")
    jumps = ["+3650d", "-1d", "+30d", "-400d", "+0"]
    plan = [jumps[r % len(jumps)] for r in range(max(1, rounds - 1))] + ["+1d"]
    for r, jump in enumerate(plan):
        w.kill_vault(signal.SIGTERM)
        before = len(w.vault_stderr())
        w.start_vault(reclaim, faketime=jump)
        time.sleep(2.5)  # several reclaim passes on the jumped clock
        mail_day(src, 7000 + r)
        skew = rng.choice(["+0", "+3h", "-5h", "+9m"])
        env = {"LD_PRELOAD": FAKETIME_LIB, "FAKETIME": skew, "DONT_FAKE_MONOTONIC": "1"}
        p = w.run(["backup", "--repo", w.url, "--key", w.client_key("client"), "--json",
                   src], cache="cache-client", env=env)
        if p.returncode == 0:
            w.truth[json.loads(p.stdout)[0]["snapshot"]] = ("client", digest(src))
            stats["ok_through_fault"] += 1
        else:
            stats["clean_failures"] += 1
        if jump != "+0":
            stats["jumps"] += 1
            if "CLOCK" in w.vault_stderr()[before:]:
                stats["alerted"] += 1
            else:
                raise Failure(f"a clock jump of {jump} raised no CLOCK alert")
        w.kill_vault(signal.SIGTERM)
        if jump == "+1d":
            # A day later, for the vault and every reader.
            later = {"LD_PRELOAD": FAKETIME_LIB, "FAKETIME": "+1d", "DONT_FAKE_MONOTONIC": "1"}
            w.env.update(later)
            w.start_vault(reclaim, faketime="+1d")
        else:
            w.start_vault(reclaim)
        w.backup(src)
        w.check(f"clock {jump}, client {skew}")
        # The hold: in the log for a forward jump past 6 h (and across the
        # restart), none for the others; the ceremony lifts it.
        what = f"clock {jump}"
        held = clock_audit(w)["clock_held"]
        if jump in ("+3650d", "+30d", "+1d"):
            if held is None:
                raise Failure(f"after {what}: no clock hold in the log")
            if "CLOCK HELD" not in w.vault_stderr()[before:]:
                raise Failure(f"after {what}: the hold was not alerted")
            if "reclaimed" in w.vault_stderr()[before:]:
                raise Failure(f"after {what}: reclaimed while the clock was held")
            stats["held"] = stats.get("held", 0) + 1
            clock_ack(w, what)
            stats["acknowledged"] = stats.get("acknowledged", 0) + 1
            w.check(f"{what}, acknowledged")
        elif held is not None:
            raise Failure(f"after {what}: a clock hold without a forward jump: {held}")
        stats["rounds"] += 1


def vault_memory(pid):
    """The vault's RSS and its anonymous (heap) part, in KiB."""
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            k, _, rest = line.partition(":")
            if k in ("Rss", "Anonymous"):
                out[k] = int(rest.split()[0])
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                out["Threads"] = int(line.split()[1])
    return out


def soak(w, src_root, secs, clients, rng, stats, vault_env=None):
    w.start_vault(["--reclaim-every-secs", "5", "--rate", "100000", "--burst", "100000"],
                  env_extra=vault_env)
    lat, errors = [], []
    stop = time.time() + secs
    lock = threading.Lock()

    def client_loop(i, c):
        src = f"{src_root}/{c}"
        make_spool(src, 1, 8, 9000 + i)
        n = 0
        while time.time() < stop:
            n += 1
            mail_day(src, 10_000 * (i + 1) + n)
            t0 = time.time()
            try:
                w.backup(src, client=c)
                with lock:
                    lat.append(time.time() - t0)
            except Failure as e:
                with lock:
                    errors.append(str(e)[:300])

    def replica_loop():
        while time.time() < stop:
            p = w.run(["replica", "pull", "--from", w.url, "--key", w.key("replica"),
                       "--into", w.replica], cache="cache-replica")
            if p.returncode != 0:
                with lock:
                    errors.append("replica pull: " + p.stderr.decode(errors="replace")[-300:])
            time.sleep(10)

    rss = []

    samples = []

    def rss_loop():
        while time.time() < stop:
            try:
                m = vault_memory(w.vault.pid)
                with lock:
                    done = len(lat)
                rss.append(m["Rss"] // 1024)
                samples.append((round(secs - (stop - time.time())), done, m["Rss"] // 1024,
                                m["Anonymous"] // 1024, m["Threads"]))
            except OSError:
                pass
            time.sleep(min(60, max(5, secs / 10)))

    threads = [threading.Thread(target=client_loop, args=(i, c))
               for i, c in enumerate(w.clients)]
    threads += [threading.Thread(target=replica_loop), threading.Thread(target=rss_loop)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats["backups"] = len(lat)
    stats["errors"] = len(errors)
    stats["error_samples"] = errors[:3]
    if lat:
        lat.sort()
        stats["p50_s"] = round(statistics.median(lat), 2)
        stats["p99_s"] = round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 2)
    stats["vault_rss_mib"] = rss
    # (seconds, backups done, RSS MiB, anonymous MiB, threads) per sample.
    stats["vault_samples"] = samples
    stats["rounds"] = len(lat)
    # The same state reopened: what the live state alone takes (the log's
    # fold, owners, sizes), without what serving left in the allocator.
    w.kill_vault(signal.SIGTERM)
    w.start_vault(["--reclaim-every-secs", "5"], env_extra=vault_env)
    time.sleep(2)
    m = vault_memory(w.vault.pid)
    stats["vault_reopened_mib"] = m["Rss"] // 1024
    stats["snapshots_live"] = len(json.loads(w.ok(
        ["snapshots", "--repo", w.url, "--key", w.key("restore"), "--json"])))
    w.check("soak")
    restored, lost = w.restore_all(sample=10, rng=rng)
    stats["restored"] += restored
    stats["lost"] += lost


# --------------------------------------------------------------- S3

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CEPH_UP = os.path.join(ROOT, "crates", "cli", "tests", "ceph", "up.sh")
S3_AUTH = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testingsecret",
           "AWS_REGION": "us-east-1"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


class Ceph:
    """A throwaway Ceph cluster (the tests' up.sh: memstore, Object Lock
    enforced), whose RGW this harness kills and restarts."""

    def __init__(self, base):
        self.dir = f"{base}/ceph"
        self.port = free_port()
        env = dict(os.environ, D=self.dir, MON_PORT=str(free_port()), RGW_PORT=str(self.port),
                   WATCH_PID=str(os.getpid()), **S3_AUTH)
        p = subprocess.run(["bash", CEPH_UP], env=env, capture_output=True, timeout=600)
        if p.returncode != 0:
            raise Failure(f"Ceph did not start: {p.stderr.decode(errors='replace')[-600:]}")
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def rgw_pid(self):
        with open(f"{self.dir}/pids") as f:
            pids = [int(l.split()[1]) for l in f if l.startswith("rgw ")]
        return pids[-1]

    def kill_rgw(self):
        try:
            os.kill(self.rgw_pid(), signal.SIGKILL)
        except ProcessLookupError:
            pass
        for _ in range(100):
            if not port_open(self.port):
                return
            time.sleep(0.1)

    def start_rgw(self):
        log = open(f"{self.dir}/log/rgw.restarts", "ab")
        p = subprocess.Popen(["radosgw", "-n", "client.rgw.a", "-f"],
                             env=dict(os.environ, CEPH_CONF=f"{self.dir}/ceph.conf"),
                             stdout=log, stderr=log, start_new_session=True)
        with open(f"{self.dir}/pids", "a") as f:
            f.write(f"rgw {p.pid}\n")
        for _ in range(600):
            if port_open(self.port):
                return
            time.sleep(0.2)
        raise Failure("radosgw did not come back")

    def down(self):
        with open(f"{self.dir}/pids") as f:
            for l in f:
                try:
                    os.kill(int(l.split()[1]), signal.SIGKILL)
                except (ProcessLookupError, ValueError, IndexError):
                    pass


class HttpFaults:
    """A loopback proxy in front of RGW: on a `rate` share of connections
    it reads the first request head and answers 500 or 503 (as S3 does
    under load) instead of forwarding; the others are passed through."""

    BODIES = {500: b"<?xml version=\"1.0\"?><Error><Code>InternalError</Code></Error>",
              503: b"<?xml version=\"1.0\"?><Error><Code>SlowDown</Code></Error>"}

    def __init__(self, port, rng, rate):
        self.target, self.rng, self.rate = ("127.0.0.1", port), rng, rate
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.endpoint = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.injected = 0
        self.alive = True
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while self.alive:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.one, args=(c,), daemon=True).start()

    def one(self, c):
        if self.rng.random() < self.rate:
            c.settimeout(10)
            head = b""
            try:
                while b"\r\n\r\n" not in head and len(head) < 65536:
                    d = c.recv(4096)
                    if not d:
                        break
                    head += d
                code = self.rng.choice([500, 503])
                body = self.BODIES[code]
                c.sendall(f"HTTP/1.1 {code} {'Internal Server Error' if code == 500 else 'Slow Down'}"
                          f"\r\nContent-Type: application/xml\r\nContent-Length: {len(body)}"
                          f"\r\nConnection: close\r\n\r\n".encode() + body)
                self.injected += 1
            except OSError:
                pass
            c.close()
            return
        relay(c, self.target)

    def close(self):
        self.alive = False
        self.sock.close()


def s3_world(binary, root, ceph, tag):
    url = f"s3://hf-chaos-{tag}-{os.getpid()}-{int(time.time())}/repo"
    w = World(binary, root, repo=url, env_extra=dict(S3_AUTH, AWS_ENDPOINT_URL=ceph.endpoint))
    return w


def restore_direct(w, snap, env, stats):
    """A restore straight from S3 (through `env`'s endpoint): exit 0 with
    the right bytes, or a clean failure; exit 0 with other bytes is damage."""
    client, want = w.truth[snap]
    target = tempfile.mkdtemp(dir=w.root, prefix="restore-")
    try:
        p = w.run(["restore", "--repo", w.repo, "--key", w.key("restore"), snap[:16], target],
                  env=env)
        if p.returncode != 0:
            stats["clean_failures"] += 1
            return
        inner = [os.path.join(target, d) for d in os.listdir(target)]
        if len(inner) != 1 or digest(inner[0]) != want:
            raise Failure(f"restore of {snap[:12]} from S3 exited 0 with other bytes")
        stats["ok_through_fault"] += 1
    finally:
        shutil.rmtree(target, ignore_errors=True)


def s3_faults(w, ceph, src, rounds, rng, stats):
    faults = HttpFaults(ceph.port, rng, 0.0)
    through = {"AWS_ENDPOINT_URL": faults.endpoint}
    try:
        w.start_vault(["--state", f"{w.root}/state"], env_extra=through)
        w.backup(src)
        for r in range(rounds):
            mail_day(src, 7000 + r)
            faults.rate = rng.choice([0.1, 0.3, 0.6])
            p = w.run(["backup", "--repo", w.url, "--key", w.client_key("client"),
                       "--json", src], cache="cache-client")
            if p.returncode == 0:
                w.truth[json.loads(p.stdout)[0]["snapshot"]] = ("client", digest(src))
                stats["ok_through_fault"] += 1
            else:
                stats["clean_failures"] += 1
            restore_direct(w, rng.choice(sorted(w.truth)), through, stats)
            faults.rate = 0.0
            w.backup(src)
            if r % 5 == 4 or r == rounds - 1:
                w.check(f"S3 fault round {r}")
            stats["rounds"] += 1
    finally:
        stats["cuts"] += faults.injected
        # The rest (restoring everything) talks to RGW directly.
        w.kill_vault()
        w.start_vault(["--state", f"{w.root}/state"])
        faults.close()


def s3_kill(w, ceph, src, rounds, rng, stats):
    w.start_vault(["--state", f"{w.root}/state"])
    w.backup(src)
    for r in range(rounds):
        mail_day(src, 8000 + r)
        if r % 2 == 0:
            p = w.spawn(["backup", "--repo", w.url, "--key", w.client_key("client"),
                         "--json", src], cache="cache-client")
        else:
            snap = rng.choice(sorted(w.truth))
            target = tempfile.mkdtemp(dir=w.root, prefix="restore-")
            p = w.spawn(["restore", "--repo", w.repo, "--key", w.key("restore"), snap[:16],
                         target])
        time.sleep(rng.uniform(0, max(0.2, w.last_secs)))
        ceph.kill_rgw()
        stats["kills"] += 1
        time.sleep(rng.uniform(0.2, 2.0))
        ceph.start_rgw()
        out, _ = p.communicate(timeout=900)
        if r % 2 == 0:
            if p.returncode == 0:
                w.truth[json.loads(out)[0]["snapshot"]] = ("client", digest(src))
                stats["ok_through_fault"] += 1
            else:
                stats["clean_failures"] += 1
        else:
            if p.returncode == 0:
                inner = [os.path.join(target, d) for d in os.listdir(target)]
                if len(inner) != 1 or digest(inner[0]) != w.truth[snap][1]:
                    raise Failure(f"restore of {snap[:12]} across an RGW restart exited 0 "
                                  "with other bytes")
                stats["ok_through_fault"] += 1
            else:
                stats["clean_failures"] += 1
            shutil.rmtree(target, ignore_errors=True)
        w.backup(src)
        if r % 5 == 4 or r == rounds - 1:
            w.check(f"RGW kill round {r}")
        stats["rounds"] += 1


# --------------------------------------------------------------- mail restore

def sha(p):
    with open(p, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def mail_files(root):
    """Every file under root: path -> (inode, size, mtime_ns, sha256)."""
    out = {}
    for d, _, fs in os.walk(root):
        for f in fs:
            p = os.path.join(d, f)
            st = os.lstat(p)
            out[p] = (st.st_ino, st.st_size, st.st_mtime_ns, sha(p))
    return out


def make_mail_spool(root, users, msgs, rng):
    """Maildir++ mailboxes u*/Maildir (INBOX, .Sent, .Archive) with cur/ and
    new/ messages (distinct bytes, Dovecot-style names, old mtimes), a
    dovecot-uidlist and dovecot-keywords in INBOX, subscriptions."""
    n = 0
    for u in range(users):
        home = f"{root}/u{u}/Maildir"
        for folder in ("", ".Sent", ".Archive"):
            for sub in ("cur", "new", "tmp"):
                os.makedirs(f"{home}/{folder}/{sub}", exist_ok=True)
        with open(f"{home}/subscriptions", "wb") as f:
            f.write(b"Sent\nArchive\n")
        with open(f"{home}/dovecot-keywords", "wb") as f:
            f.write(b"0 $Important\n1 Junk\n")
        uids = []
        for m in range(msgs):
            folder = rng.choice(("", "", "", ".Sent", ".Archive"))
            data = message(rng, n)
            n += 1
            t = 1_600_000_000 + m * 977 + u
            base = f"{t}.M{m}P{u}.mx1,S={len(data)}"
            if rng.random() < 0.1:
                p = f"{home}/{folder}/new/{base}"
            else:
                p = f"{home}/{folder}/cur/{base}:2,{rng.choice(('S', 'RS', 'Sa', 'FSb', ''))}"
            with open(p, "wb") as f:
                f.write(data)
            os.utime(p, (t, t))
            if folder == "":
                uids.append(base)
        with open(f"{home}/dovecot-uidlist", "w") as f:
            f.write(f"3 V1600000000 N{len(uids) + 1}\n")
            for i, b in enumerate(uids):
                f.write(f"{i + 1} :{b}\n")


def make_live_mail(spool, target, rng):
    """Live mailboxes for every mailbox of the spool: INBOX with its own
    dovecot-uidlist, 3 messages since and a delivery in flight in tmp/;
    .Sent live with a uidlist in some (the rest come back as a disaster
    restore: control files and original names)."""
    for u in sorted(os.listdir(spool)):
        home = f"{target}/{u}/Maildir"
        folders = [""] + ([".Sent"] if rng.random() < 0.5 else [])
        for folder in folders:
            for sub in ("cur", "new", "tmp"):
                os.makedirs(f"{home}/{folder}/{sub}", exist_ok=True)
            with open(f"{home}/{folder}/dovecot-uidlist", "wb") as f:
                f.write(b"3 V1700000000 N4\n")
            for i in range(3):
                data = f"From: new@example.org\nSubject: since {i}\n\n{u}{folder} {rng.random()}\n".encode()
                sub, info = ("new", "") if i == 0 else ("cur", ":2,S")
                with open(f"{home}/{folder}/{sub}/1700000000.M{i}.live,S={len(data)}{info}", "wb") as f:
                    f.write(data)
        with open(f"{home}/tmp/1700000001.M9.live", "wb") as f:
            f.write(b"From: half@example.org\n\npartly deliv")


def mail_check(target, before, want, allowed, complete):
    """The invariants after a killed (or complete) `mail restore`: (a) every
    file there before is untouched (path, inode, size, mtime, bytes); (b) no
    message twice in cur/+new/ of a folder (by content); (c) every new file
    in cur/ or new/ is a whole message of the snapshot; (d) anything else
    new is in tmp/, a snapshot control file byte for byte, or the empty
    `maildirfolder` marker of a folder it made. With
    `complete`, every message in `want` (sha -> count) is there exactly
    once. Returns the problems."""
    now = mail_files(target)
    bad = []
    for p, v in before.items():
        if now.get(p) != v:
            bad.append(f"(a) live file changed or gone: {p}")
    folders = {}
    seen = {}
    for p, (_, _, _, h) in now.items():
        sub = os.path.basename(os.path.dirname(p))
        if sub in ("cur", "new"):
            folders.setdefault(os.path.dirname(os.path.dirname(p)), []).append(h)
        if p in before:
            continue
        if sub in ("cur", "new"):
            if h not in want:
                bad.append(f"(c) not a whole snapshot message: {p}")
            seen[h] = seen.get(h, 0) + 1
        elif sub != "tmp" and h not in allowed and not (
                os.path.basename(p) == "maildirfolder" and now[p][1] == 0):
            bad.append(f"(d) a leftover outside tmp/: {p}")
    for d, hs in folders.items():
        if len(hs) != len(set(hs)):
            bad.append(f"(b) a message twice in {d}")
    if complete:
        missing = [h for h in want if seen.get(h, 0) != 1]
        if missing:
            bad.append(f"{len(missing)} snapshot messages not there exactly once")
    return bad


def crash_mail(w, src, rounds, rng, stats):
    """kill -9 of `mail restore` (a whole spool, one mailbox, or
    --into-folder) into live mailboxes at a random moment; the invariants;
    then a rerun completes exactly and a third run writes 0."""
    w.start_vault()
    spool = f"{w.root}/mailsrc"
    make_mail_spool(spool, 5, 200, rng)
    snap = w.backup(spool)
    allowed = {sha(os.path.join(d, f)) for d, _, fs in os.walk(spool) for f in fs}
    msgs_of = {}
    for d, _, fs in os.walk(spool):
        if os.path.basename(d) in ("cur", "new"):
            box = os.path.relpath(d, spool).split("/Maildir")[0]
            for f in fs:
                msgs_of.setdefault(box, set()).add(sha(os.path.join(d, f)))
    boxes = sorted(msgs_of)
    last = 1.0
    stats.setdefault("mid_placement", 0)
    stats.setdefault("invariant_failures", 0)
    for r in range(rounds):
        target = f"{w.root}/live-{r}"
        make_live_mail(spool, target, rng)
        mode = rng.choice(("spool", "spool", "box", "into-spool", "into-box"))
        if mode.endswith("box"):
            box = rng.choice(boxes)
            path, to, want = f"mailsrc/{box}/Maildir", f"{target}/{box}/Maildir", msgs_of[box]
        else:
            path, to = "mailsrc", target
            want = set().union(*msgs_of.values())
        args = ["mail", "restore", "--repo", w.url, "--key", w.key("restore"), snap[:16],
                path, to, "--json", "--parallel", str(rng.choice((1, 2, 8)))]
        if mode.startswith("into"):
            args += ["--into-folder", "Recovered"]
        before = mail_files(target)
        landed = kill_at_random(w, args, rng, last * 1.1, "cache-mail")
        stats["kills"] += landed
        placed = sum(1 for p in mail_files(target) if p not in before
                     and os.path.basename(os.path.dirname(p)) in ("cur", "new"))
        stats["mid_placement"] += landed and 0 < placed < len(want)
        bad = mail_check(target, before, want, allowed, complete=False)
        t0 = time.time()
        rep = json.loads(w.ok(args, cache="cache-mail"))
        last = time.time() - t0
        bad += mail_check(target, before, want, allowed, complete=True)
        if rep["errors"] or rep["damaged"]:
            bad.append(f"rerun reported {rep['errors']} {rep['damaged']}")
        third = json.loads(w.ok(args, cache="cache-mail"))
        if third["written"] != 0:
            bad.append(f"third run wrote {third['written']}")
        bad += mail_check(target, before, want, allowed, complete=True)
        if bad:
            stats["invariant_failures"] += 1
            raise Failure(f"mail restore kill round {r} ({mode}, {placed} placed before "
                          f"the kill): " + "; ".join(bad[:5]))
        shutil.rmtree(target)
        stats["rounds"] += 1


# --------------------------------------------------------------- driver

KINDS = ["crash-client", "crash-vault", "crash-replica", "crash-export", "crash-mail",
         "net-drop", "net-slow", "disk-full", "clock", "soak"]
S3_KINDS = ["s3-faults", "s3-kill"]


def run_kind(kind, args, binary, base):
    rng = random.Random(f"{args.seed}-{kind}")
    root = tempfile.mkdtemp(dir=base, prefix=f"{kind}-")
    stats = {"kind": kind, "rounds": 0, "kills": 0, "restored": 0, "lost": [],
             "clean_failures": 0, "ok_through_fault": 0, "cuts": 0, "jumps": 0,
             "alerted": 0, "damaged": 0, "failure": None}
    t0 = time.time()
    rounds = args.rounds or (8 if args.quick else 120)
    w = None
    ceph = None
    try:
        if kind in S3_KINDS:
            ceph = Ceph(root)
            w = s3_world(binary, root, ceph, kind)
            src = f"{root}/src"
            make_spool(src, 4, 40, 1)
            n = max(3, rounds // 2)
            if kind == "s3-faults":
                s3_faults(w, ceph, src, n, rng, stats)
            else:
                s3_kill(w, ceph, src, n, rng, stats)
        elif kind == "soak":
            n = args.soak_clients or (8 if args.quick else 100)
            w = World(binary, root, clients=n)
            venv = dict(e.split("=", 1) for e in args.vault_env)
            soak(w, f"{root}/src", args.soak_secs or (60 if args.quick else 600), n, rng, stats,
                 vault_env=venv)
        else:
            w = World(binary, root, init_args=CLOCK_INIT if kind == "clock" else ())
            src = f"{root}/src"
            make_spool(src, 4, 40, 1)
            {
                "crash-client": lambda: crash_client(w, src, rounds * 2, rng, stats),
                "crash-vault": lambda: crash_vault(w, src, rounds, rng, stats),
                "crash-replica": lambda: crash_replica(w, src, rounds, rng, stats),
                "crash-export": lambda: crash_export(w, src, max(3, rounds // 2), rng, stats),
                "crash-mail": lambda: crash_mail(w, src, rounds, rng, stats),
                "net-drop": lambda: net(w, src, rounds, rng, stats, 0.6, 0.0),
                "net-slow": lambda: net(w, src, max(3, rounds // 2), rng, stats, 0.0, 0.02),
                "disk-full": lambda: disk_full(w, src, max(3, rounds // 2), rng, stats),
                "clock": lambda: clock(w, src, max(6, rounds // 2), rng, stats),
            }[kind]()
        if kind not in ("disk-full", "soak") and w is not None:
            if w.vault is None or w.vault.poll() is not None:
                w.start_vault()
            restored, lost = w.restore_all()
            stats["restored"] += restored
            stats["lost"] += lost
    except Failure as e:
        stats["failure"] = str(e)
        stats["damaged"] = 1
    except subprocess.TimeoutExpired as e:
        stats["failure"] = f"timed out: {e}"
    finally:
        if w is not None:
            if stats["failure"]:
                stats["vault_stderr_tail"] = w.vault_stderr()[-1500:]
            w.kill_vault()
        if ceph is not None:
            ceph.down()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    stats["secs"] = round(time.time() - t0, 1)
    return stats


def report(results, args, path):
    lines = ["# Chaos and soak", "",
             f"`python3 bench/chaos.py {' '.join(sys.argv[1:])}` "
             f"({time.strftime('%Y-%m-%d', time.gmtime())}, seed {args.seed}, "
             f"{os.cpu_count()} cores)", "",
             "| fault kind | rounds | kills / cuts | clean failures | ok through the fault "
             "| snapshots restored | lost | damaged | time |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s in results:
        lines.append(f"| {s['kind']} | {s['rounds']} | {s['kills'] or s['cuts']} | "
                     f"{s['clean_failures']} | {s['ok_through_fault']} | {s['restored']} | "
                     f"{len(s['lost'])} | {s['damaged']} | {s['secs']} s |")
    for s in results:
        if s["kind"] == "soak":
            lines += ["", f"Soak: {len(s.get('vault_rss_mib', []))} RSS samples "
                          f"{s.get('vault_rss_mib')} MiB; {s.get('backups', 0)} backups, "
                          f"{s.get('errors', 0)} errors; latency p50 {s.get('p50_s')} s, "
                          f"p99 {s.get('p99_s')} s.",
                      "", "Soak samples (seconds, backups done, RSS MiB, anonymous MiB, "
                          f"threads): {s.get('vault_samples')}; the same state reopened: "
                          f"{s.get('vault_reopened_mib')} MiB with {s.get('snapshots_live')} "
                          "live snapshots."]
        if s["kind"] == "clock":
            lines += ["", f"Clock: {s['jumps']} jumps (forward and back), {s['alerted']} alerted, "
                          f"{s.get('held', 0)} held until the quorum acknowledged the clock "
                          f"({s.get('acknowledged', 0)} acknowledgements)."]
        if s["failure"] or s["lost"]:
            lines += ["", f"**{s['kind']}**: {s['failure'] or ''} lost: {s['lost']}"]
    text = "\n".join(lines) + "\n"
    if path:
        with open(path, "w") as f:
            f.write(text)
    return text


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default="target/release/holdfast")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="")
    ap.add_argument("--rounds", type=int, default=0)
    ap.add_argument("--soak-secs", type=int, default=0)
    ap.add_argument("--soak-clients", type=int, default=0)
    ap.add_argument("--vault-env", action="append", default=[], metavar="K=V",
                    help="soak: run the vault with this in its environment (a diagnostic, "
                         "e.g. MALLOC_ARENA_MAX=2)")
    ap.add_argument("--seed", default="1")
    ap.add_argument("--out", default="")
    ap.add_argument("--keep", action="store_true", help="keep the worlds of failed kinds")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--s3", action="store_true", help="also the S3 kinds (needs Ceph)")
    args = ap.parse_args()
    binary = os.path.abspath(args.bin)
    if not os.path.exists(binary):
        sys.exit(f"{binary}: not built (cargo build --release)")
    kinds = [k for k in (args.only.split(",") if args.only
                         else KINDS + (S3_KINDS if args.s3 else [])) if k]
    for k in kinds:
        if k not in KINDS + S3_KINDS:
            sys.exit(f"unknown fault kind {k!r}; known: {', '.join(KINDS + S3_KINDS)}")
    if any(k in S3_KINDS for k in kinds) and not shutil.which("radosgw"):
        sys.exit("the S3 kinds need Ceph: apt-get install ceph-mon ceph-osd radosgw "
                 "ceph-common uuid-runtime curl")
    if "clock" in kinds and not os.path.exists(FAKETIME_LIB):
        sys.exit(f"{FAKETIME_LIB} missing: apt-get install faketime")
    base = tempfile.mkdtemp(prefix="holdfast-chaos-")
    results = []
    for k in kinds:
        s = run_kind(k, args, binary, base)
        print(f"{k}: {s['rounds']} rounds, {s['restored']} restored, {len(s['lost'])} lost, "
              f"{'FAILED: ' + s['failure'] if s['failure'] else 'clean'} ({s['secs']} s)",
              file=sys.stderr, flush=True)
        results.append(s)
    shutil.rmtree(base, ignore_errors=True)
    text = report(results, args, args.out)
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        print(text)
    bad = any(s["failure"] or s["lost"] for s in results)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
