#!/usr/bin/env python3
"""`holdfast mount` at scale (issue 15): a 300,000-message spool of 1,000
mailboxes, backed up once with the release build, then read through the
mount from the local directory and through a vault on 127.0.0.1.

  mount.py run [--files N] [--repeat R] [--out FILE] [--keep] [--bin PATH]

What is measured (each on a fresh mount with an empty disk cache unless
said otherwise; medians of R):
  * mount ready: from starting `holdfast mount` to `snapshots/` answering;
  * first byte of a message: open + 1-byte read of a message in a mailbox
    not touched yet on that mount (the path walked from the top, so the
    folder's tree is fetched too); the very first read after mounting
    (which also loads the pack tables) is given apart;
  * listing the 10,000-message folder: os.listdir, and os.listdir + lstat of
    every entry (what `ls -l` does), cold;
  * reading that whole mailbox (10,000 messages) through the mount, one
    reader in walk order, against `restore --path` of the same mailbox
    into a fresh directory;
  * `ls -laR` of the whole snapshot (every folder, every entry stat'ed);
  * peak RSS of the mount process (VmHWM from /proc), the maximum over all
    mounts of the run.

The spool: mailbox user0000 has 10,000 messages in INBOX/cur; the others
share the rest, spread over INBOX cur/new, .Sent/cur and .Archive/cur; each
message 2.5-6 KB of word text with its own headers (like bench/scale.py).
Only the standard library is used; the same arguments give the same bytes.
Data lives under /work/tmp-mount and is deleted afterwards unless --keep.
"""
import argparse
import concurrent.futures
import os
import random
import shutil
import statistics
import subprocess
import sys
import time

ROOT = "/work/tmp-mount"
HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(HERE)
PASS = "mount bench passphrase"
WORDS = ("the of and to in is for on that with as was at by this from be are "
         "or have an it not which we you your invoice meeting report attached "
         "please find below regards thanks update schedule project account "
         "payment order delivery server backup restore mailbox password team "
         "review draft contract budget quarter release customer support ticket").split()
BIG = 10_000  # messages in user0000/cur


def make(dst, files, mailboxes=1000, seed=15):
    rng = random.Random(seed)
    text = " ".join(rng.choice(WORDS) for _ in range(200_000)).encode()
    base = 1_550_000_000
    done = 0
    rest = files - BIG
    for u in range(mailboxes):
        mb = os.path.join(dst, f"user{u:04d}")
        dirs = []
        for f in ("", ".Sent", ".Archive"):
            for sub in ("cur", "new", "tmp"):
                os.makedirs(os.path.join(mb, f, sub), exist_ok=True)
            dirs.append(os.path.join(mb, f))
        if u == 0:
            n = BIG
        else:
            others = mailboxes - 1
            n = rest // others + (1 if (u - 1) < rest % others else 0)
        for k in range(n):
            if u == 0:
                folder, sub = dirs[0], "cur"
            else:
                folder = dirs[0] if k % 10 < 6 else dirs[1] if k % 10 < 8 else dirs[2]
                sub = "new" if k % 10 == 0 else "cur"
            t = base + done
            name = f"{t}.M{k}P{u}.mx1,S=4096" + ("" if sub == "new" else ":2,S")
            size = 2500 + rng.randrange(3500)
            off = rng.randrange(len(text) - size)
            msg = (f"Return-Path: <u{rng.randrange(99999)}@example.com>\n"
                   f"From: u{u}@example.net\nTo: user{u}@mail.example.net\n"
                   f"Subject: message {done}\nMessage-ID: <{done}.{seed}@mx>\n\n").encode()
            with open(os.path.join(folder, sub, name), "wb") as fh:
                fh.write(msg + text[off:off + size] + b"\n")
            done += 1
    return done


def env():
    return dict(os.environ, HOLDFAST_PASSPHRASE=PASS,
                HOLDFAST_CACHE_DIR=os.path.join(ROOT, "hf-cache"))


def timed(cmd, **kw):
    t0 = time.monotonic()
    p = subprocess.run(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
    dt = time.monotonic() - t0
    if p.returncode != 0:
        sys.stderr.write(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.decode(errors='replace')}\n")
        raise SystemExit(1)
    return dt, p.stdout


def mounted(mp):
    with open("/proc/mounts") as f:
        return any(l.split()[1] == mp for l in f)


class Mount:
    n = 0

    def __init__(self, hf, repo, key, label):
        Mount.n += 1
        self.mp = os.path.join(ROOT, f"mnt-{label}-{Mount.n}")
        self.cache = os.path.join(ROOT, f"mcache-{label}-{Mount.n}")
        os.makedirs(self.mp, exist_ok=True)
        self.err = open(os.path.join(ROOT, f"mount-{label}-{Mount.n}.err"), "wb")
        t0 = time.monotonic()
        self.p = subprocess.Popen(
            [hf, "mount", "--repo", repo, "--key", key, "--cache-dir", self.cache, self.mp],
            env=env(), stdout=subprocess.DEVNULL, stderr=self.err)
        while not (mounted(self.mp) and os.path.isdir(os.path.join(self.mp, "snapshots"))):
            if self.p.poll() is not None:
                raise SystemExit(f"mount exited: {open(self.err.name).read()}")
            if time.monotonic() - t0 > 300:
                raise SystemExit("mount did not come up")
            time.sleep(0.005)
        self.ready = time.monotonic() - t0
        snaps = os.listdir(os.path.join(self.mp, "snapshots"))
        self.snap = os.path.join(self.mp, "snapshots", sorted(snaps)[-1], "spool")

    def hwm_mib(self):
        with open(f"/proc/{self.p.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
        return 0.0

    def close(self):
        hwm = self.hwm_mib()
        self.p.terminate()
        self.p.wait(timeout=120)
        self.err.close()
        if self.p.returncode != 0:
            raise SystemExit(f"mount exited {self.p.returncode}: {open(self.err.name).read()}")
        shutil.rmtree(self.cache, ignore_errors=True)
        os.rmdir(self.mp)
        return hwm


def first_byte(path):
    t0 = time.monotonic()
    with open(path, "rb") as f:
        b = f.read(1)
    assert len(b) == 1
    return time.monotonic() - t0


def some_message(spool, u):
    d = os.path.join(spool, f"user{u:04d}", "cur")
    names = sorted(os.listdir(d))
    return os.path.join(f"user{u:04d}", "cur", names[len(names) // 2])


def read_tree_parallel(top, workers=4):
    paths = []
    for dirpath, dirnames, filenames in os.walk(top):
        paths += [os.path.join(dirpath, n) for n in filenames]

    def one(p):
        with open(p, "rb") as f:
            return len(f.read())

    with concurrent.futures.ThreadPoolExecutor(workers) as ex:
        return len(paths), sum(ex.map(one, paths, chunksize=64))


def read_tree(top):
    n = total = 0
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        for name in sorted(filenames):
            with open(os.path.join(dirpath, name), "rb") as f:
                total += len(f.read())
            n += 1
    return n, total


def suite(hf, repo, key, label, spool, repeat, rng):
    # The first mount builds the snapshot's on-disk blob index (then
    # cached, as restore and ls cache it): counted in its first read.
    shutil.rmtree(os.path.join(ROOT, "hf-cache", "pack-index"), ignore_errors=True)
    r = {"ready": [], "first_after_mount": [], "first_byte": [], "listdir": [],
         "listdir_stat": [], "mailbox": [], "mailbox4": [], "lsR": [], "rss": []}
    for i in range(repeat):
        # 1: first byte (7 cold mailboxes), listing of the big folder.
        m = Mount(hf, repo, key, label)
        r["ready"].append(m.ready)
        users = rng.sample(range(1, 1000), 8)
        r["first_after_mount"].append(first_byte(os.path.join(m.snap, some_message(spool, users[0]))))
        for u in users[1:]:
            r["first_byte"].append(first_byte(os.path.join(m.snap, some_message(spool, u))))
        big = os.path.join(m.snap, "user0000", "cur")
        t0 = time.monotonic()
        names = os.listdir(big)
        r["listdir"].append(time.monotonic() - t0)
        assert len(names) == BIG, len(names)
        r["rss"].append(m.close())
        # The same listing with every entry stat'ed, on its own fresh mount.
        m = Mount(hf, repo, key, label)
        t0 = time.monotonic()
        for name in os.listdir(big := os.path.join(m.snap, "user0000", "cur")):
            os.lstat(os.path.join(big, name))
        r["listdir_stat"].append(time.monotonic() - t0)
        # 2: the whole 10,000-message mailbox, one reader.
        t0 = time.monotonic()
        n, total = read_tree(os.path.join(m.snap, "user0000"))
        r["mailbox"].append(time.monotonic() - t0)
        assert n == BIG, n
        r["rss"].append(m.close())
        # The same with 4 readers at once (as an IMAP server with several
        # clients, or `xargs -P4 cat`), on a fresh mount.
        m = Mount(hf, repo, key, label)
        t0 = time.monotonic()
        n, total = read_tree_parallel(os.path.join(m.snap, "user0000"))
        r["mailbox4"].append(time.monotonic() - t0)
        assert n == BIG, n
        r["rss"].append(m.close())
    # 3: ls -laR of the whole snapshot (once per repeat, fresh mount).
    for i in range(max(1, repeat // 2)):
        m = Mount(hf, repo, key, label)
        t0 = time.monotonic()
        p = subprocess.run(["ls", "-laR", m.snap], stdout=subprocess.PIPE, check=True)
        r["lsR"].append(time.monotonic() - t0)
        r["lsR_lines"] = p.stdout.count(b"\n")
        r["rss"].append(m.close())
    return r


def restore_mailbox(hf, repo, keys, repeat):
    out = []
    for i in range(repeat):
        target = os.path.join(ROOT, f"restore-{i}")
        shutil.rmtree(target, ignore_errors=True)
        dt, _ = timed([hf, "restore", "--repo", repo, "--key", os.path.join(keys, "restore.key"),
                       "--path", "spool/user0000", "latest", target])
        out.append(dt)
        shutil.rmtree(target)
    return out


def start_vault(hf, repo, keys):
    err = open(os.path.join(ROOT, "vault.err"), "wb")
    p = subprocess.Popen([hf, "vault", "serve", "--repo", repo, "--key",
                          os.path.join(keys, "vault.key"), "--listen", "127.0.0.1:0"],
                         env=env(), stdout=subprocess.PIPE, stderr=err)
    line = p.stdout.readline().decode()
    url = next((w for w in line.split() if w.startswith("https://")), None)
    if not url:
        raise SystemExit(f"vault did not start: {line} {open(err.name).read()}")
    return p, url


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def run(a):
    hf = a.bin
    os.makedirs(ROOT, exist_ok=True)
    spool = os.path.join(ROOT, "spool")
    if not os.path.isdir(spool):
        t0 = time.monotonic()
        n = make(spool, a.files)
        print(f"made {n} messages in {time.monotonic() - t0:.0f} s", flush=True)
    repo, keys = os.path.join(ROOT, "repo"), os.path.join(ROOT, "keys")
    if not os.path.isdir(os.path.join(repo, "packs")):
        shutil.rmtree(repo, ignore_errors=True)
        shutil.rmtree(keys, ignore_errors=True)
        subprocess.run([hf, "init", repo, "--keys", keys], env=env(), check=True,
                       stdout=subprocess.DEVNULL)
        dt, _ = timed([hf, "backup", "--repo", repo, "--key", os.path.join(keys, "client.key"),
                       spool])
        print(f"backup: {dt:.1f} s", flush=True)
    key = os.path.join(keys, "restore.key")
    rng = random.Random(1)
    res = {}
    res["local"] = suite(hf, repo, key, "local", spool, a.repeat, rng)
    print("local done", flush=True)
    res["restore_local"] = restore_mailbox(hf, repo, keys, a.repeat)
    vp, url = start_vault(hf, repo, keys)
    try:
        res["vault"] = suite(hf, url, key, "vault", spool, a.repeat, rng)
        print("vault done", flush=True)
        res["restore_vault"] = restore_mailbox(hf, url, keys, a.repeat)
    finally:
        vp.terminate()
        vp.wait()
    report(a, res)
    if not a.keep:
        shutil.rmtree(ROOT)


def report(a, res):
    L, V = res["local"], res["vault"]
    ms = lambda x: f"{x * 1000:.1f} ms"
    s = lambda x: f"{x:.2f} s"
    rl, rv = med(res["restore_local"]), med(res["restore_vault"])
    rows = [
        ("mount ready", s(med(L["ready"])), s(med(V["ready"])), ""),
        ("first byte of a message, first read after mounting (opens the snapshot's blob "
         "index; median; the first mount, which builds it)",
         f"{ms(med(L['first_after_mount']))}; {ms(L['first_after_mount'][0])}",
         f"{ms(med(V['first_after_mount']))}; {ms(V['first_after_mount'][0])}",
         "< 200 ms / < 500 ms"),
        ("first byte of a message in a mailbox not read yet (median of "
         f"{len(L['first_byte'])}; max)",
         f"{ms(med(L['first_byte']))}; {ms(max(L['first_byte']))}",
         f"{ms(med(V['first_byte']))}; {ms(max(V['first_byte']))}", "< 200 ms / < 500 ms"),
        (f"list the folder of {BIG:,} messages (names), cold",
         ms(med(L["listdir"])), ms(med(V["listdir"])), "< 1 s"),
        (f"list it with every entry stat'ed (`ls -l`), cold",
         ms(med(L["listdir_stat"])), ms(med(V["listdir_stat"])), "< 1 s"),
        (f"read the whole mailbox ({BIG:,} messages) through the mount",
         s(med(L["mailbox"])), s(med(V["mailbox"])), ""),
        ("the same with 4 readers at once", s(med(L["mailbox4"])), s(med(V["mailbox4"])), ""),
        ("`restore --path` of the same mailbox", s(rl), s(rv), ""),
        ("mount (one reader) / restore", f"{med(L['mailbox']) / rl:.2f}x",
         f"{med(V['mailbox']) / rv:.2f}x", "<= 1.5x"),
        ("mount (4 readers) / restore", f"{med(L['mailbox4']) / rl:.2f}x",
         f"{med(V['mailbox4']) / rv:.2f}x", "<= 1.5x"),
        (f"`ls -laR` of the whole snapshot ({L.get('lsR_lines', 0):,} lines), cold",
         s(med(L["lsR"])), s(med(V["lsR"])), ""),
        ("peak RSS of the mount process (max over the run's mounts)",
         f"{max(L['rss']):.1f} MiB", f"{max(V['rss']):.1f} MiB", "bounded (issue 10: <= 96 MiB at 1M files)"),
    ]
    lines = ["| | local directory | vault on 127.0.0.1 | target |", "|---|---|---|---|"]
    lines += [f"| {a_} | {b} | {c} | {d} |" for a_, b, c, d in rows]
    table = "\n".join(lines)
    print(table)
    if a.out:
        with open(a.out, "w") as f:
            f.write(f"# holdfast mount at scale ({a.files:,} messages, 1,000 mailboxes)\n\n")
            f.write(f"`python3 bench/mount.py run --files {a.files} --repeat {a.repeat}"
                    f"{' --bin ' + a.bin if a.bin != default_bin() else ''} --out {a.out}`"
                    f" ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n\n")
            f.write(table + "\n\nRaw (seconds; RSS in MiB):\n\n```\n")
            for k, v in res.items():
                f.write(f"{k}: {v}\n")
            f.write("```\n")


def default_bin():
    return os.path.join(REPO_ROOT, "target", "release", "holdfast")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--files", type=int, default=300_000)
    r.add_argument("--repeat", type=int, default=3)
    r.add_argument("--out")
    r.add_argument("--keep", action="store_true")
    r.add_argument("--bin", default=default_bin())
    m = sub.add_parser("make")
    m.add_argument("dir")
    m.add_argument("--files", type=int, default=300_000)
    a = ap.parse_args()
    if a.cmd == "make":
        print(make(a.dir, a.files))
    else:
        run(a)


if __name__ == "__main__":
    main()
