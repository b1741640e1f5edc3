#!/usr/bin/env python3
"""The read side at scale (issue 10): restore, ls, diff and verify of 100,000
and 1,000,000 small files, holdfast (release build) against restic in the
same run; restore through a vault against a local directory; restore from S3
against restic's S3 backend; 1, 2 and 4 parallel restorers over disjoint
mailboxes.

  restore_scale.py local --files N [--repeat R] [--vault] [--out FILE] [--keep]
        makes a Maildir-shaped spool of N ~4 KB messages under
        /work/tmp-restore (N/1000 mailboxes, cur/new/tmp and two folders),
        backs it up with both tools, changes 1% of it and backs up again,
        then: restore (fresh directory each time, alternating tool order,
        the first holdfast restore reported apart: it builds the on-disk
        index), into /dev/shm when it fits, ls, diff, verify --read-data;
        with --vault, restore through `holdfast vault serve` on the same
        directory against the local restore. Wall time and peak RSS come
        from wait4(). Medians over R repetitions.

  restore_scale.py s3 --files N [--repeat R] [--out FILE]
        the same spool into a bucket (holdfast: a vault on S3, as
        bench/s3.py; restic: its S3 backend, same RGW), then restore
        straight from the bucket against restic's, and 1, 2 and 4
        holdfast processes restoring disjoint halves/quarters of the
        mailboxes (restore --path) at once. Needs AWS_ENDPOINT_URL,
        AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (a Ceph RGW from
        crates/cli/tests/ceph/up.sh).

Only the standard library is used; the same arguments give the same bytes.
"""
import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import time

ROOT = "/work/tmp-restore"
HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(HERE)
HOLDFAST = os.environ.get("HOLDFAST_BIN", os.path.join(REPO_ROOT, "target", "release", "holdfast"))
# The binary that writes the backups, when another one should (the read
# side measured against a fixed writer).
BACKUP_BIN = os.environ.get("HOLDFAST_BACKUP_BIN", HOLDFAST)
PASS = "restore bench passphrase"
WORDS = ("the of and to in is for on that with as was at by this from be are "
         "or have an it not which we you your invoice meeting report attached "
         "please find below regards thanks update schedule project account "
         "payment order delivery server backup restore mailbox password team "
         "review draft contract budget quarter release customer support ticket").split()


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def make(dst, files, seed=10):
    """N/1000 mailboxes; messages over INBOX cur/new, .Sent/cur and
    .Archive/cur, ~4 KB each, unique, text that compresses like mail."""
    rng = random.Random(seed)
    text = " ".join(rng.choice(WORDS) for _ in range(200_000)).encode()
    users = max(1, files // 1000)
    done = 0
    for u in range(users):
        n = files // users + (1 if u < files % users else 0)
        mb = os.path.join(dst, f"user{u:05d}")
        dirs = []
        for f in ("", ".Sent", ".Archive"):
            for sub in ("cur", "new", "tmp"):
                os.makedirs(os.path.join(mb, f, sub), exist_ok=True)
            dirs.append(os.path.join(mb, f))
        for k in range(n):
            folder = dirs[0] if k % 10 < 6 else dirs[1] if k % 10 < 8 else dirs[2]
            sub = "new" if k % 10 == 0 else "cur"
            t = 1_550_000_000 + done
            name = f"{t}.M{k}P{u}.mx1" + ("" if sub == "new" else ":2,S")
            size = 2500 + rng.randrange(3500)
            off = rng.randrange(len(text) - size)
            msg = (f"Return-Path: <u{rng.randrange(99999)}@example.com>\n"
                   f"From: u{u}@example.net\nTo: user{u}@mail.example.net\n"
                   f"Subject: message {done}\nMessage-ID: <{done}.{seed}@mx>\n\n").encode()
            p = os.path.join(folder, sub, name)
            with open(p, "wb") as fh:
                fh.write(msg + text[off:off + size] + b"\n")
            os.utime(p, (t, t))
            done += 1
    return done


def day(spool, seed=11):
    """1% new messages into new/, 0.2% deleted: a day of mail."""
    rng = random.Random(seed)
    users = sorted(os.listdir(spool))
    files = 0
    for u in users:
        cur = os.path.join(spool, u, "cur")
        names = sorted(os.listdir(cur))
        files += len(names)
        for n in names[: len(names) // 500]:
            os.remove(os.path.join(cur, n))
        for k in range(max(1, len(names) // 60)):
            p = os.path.join(spool, u, "new", f"1700000000.M{k}P{u}.mx2")
            with open(p, "wb") as fh:
                fh.write(f"From: x@example.org\nSubject: day {k}\n\n".encode()
                         + " ".join(rng.choice(WORDS) for _ in range(600)).encode())


def tree_sum(root):
    """(files, bytes) under root."""
    n = b = 0
    for d, _, fs in os.walk(root):
        for f in fs:
            st = os.lstat(os.path.join(d, f))
            n += 1
            b += st.st_size
    return n, b


def measured(cmd, env, ok=(0,), stdout=subprocess.DEVNULL):
    """Runs cmd; returns (seconds, peak RSS MiB, stdout bytes or None)."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, env=env, stdout=stdout, stderr=subprocess.PIPE)
    out = p.stdout.read() if stdout == subprocess.PIPE else None
    err = p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    dt = time.monotonic() - t0
    if p.returncode not in ok:
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}\n{err.decode(errors='replace')[-3000:]}")
    return dt, ru.ru_maxrss / 1024.0, out


def rm(p):
    if os.path.lexists(p):
        shutil.rmtree(p, ignore_errors=True)


class Tools:
    def __init__(self, work):
        self.work = work
        self.hf_env = dict(os.environ, HOLDFAST_PASSPHRASE=PASS,
                           HOLDFAST_CACHE_DIR=os.path.join(work, "hf-cache"))
        self.rs_env = dict(os.environ, RESTIC_PASSWORD=PASS,
                           RESTIC_CACHE_DIR=os.path.join(work, "rs-cache"))
        self.keys = os.path.join(work, "hf-keys")
        self.rk = os.path.join(self.keys, "restore.key")
        self.ck = os.path.join(self.keys, "client.key")

    def hf(self, *a, ok=(0,), stdout=subprocess.DEVNULL):
        return measured([BACKUP_BIN if a[0] == "backup" else HOLDFAST, *a], self.hf_env, ok, stdout)

    def rs(self, repo, *a, ok=(0,), stdout=subprocess.DEVNULL):
        return measured(["restic", "-q", "-r", repo, *a], self.rs_env, ok, stdout)


def fresh(base, tag):
    p = f"{base}/out-{tag}-{time.monotonic_ns()}"
    return p


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def local(a):
    os.makedirs(ROOT, exist_ok=True)
    spool = os.path.join(ROOT, f"spool-{a.files}")
    work = os.path.join(ROOT, f"work-{a.files}")
    rm(work)
    os.makedirs(work)
    if not os.path.isdir(spool):
        t = time.monotonic()
        n = make(spool, a.files)
        log(f"made {n} files in {time.monotonic() - t:.0f} s")
    T = Tools(work)
    hrepo, rrepo = os.path.join(work, "hf-repo"), os.path.join(work, "rs-repo")
    subprocess.run([HOLDFAST, "init", hrepo, "--keys", T.keys], env=T.hf_env, check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run(["restic", "init", "-q", "-r", rrepo], env=T.rs_env, check=True,
                   stdout=subprocess.DEVNULL)
    ids = []
    for step in ("first", "day"):
        if step == "day":
            day(spool)
        _, _, out = T.hf("backup", "--repo", hrepo, "--key", T.ck, "--json", spool,
                         ok=(0, 5), stdout=subprocess.PIPE)
        import json
        ids.append(json.loads(out)[0]["snapshot"])
        T.rs(rrepo, "backup", spool)
        log(f"backed up ({step})")
    _, _, out = T.rs(rrepo, "snapshots", "--json", stdout=subprocess.PIPE)
    import json
    rids = [s["short_id"] for s in json.loads(out)]
    want = tree_sum(spool)
    inside = spool.lstrip("/")
    res = {}

    def hf_restore(base, repo=hrepo, check=False):
        out = fresh(base, "hf")
        dt, rss, _ = T.hf("restore", "--repo", repo, "--key", T.rk, ids[1], out)
        if check:
            got = tree_sum(os.path.join(out, os.path.basename(spool)))
            assert got == want, (got, want)
        rm(out)
        return dt, rss

    def rs_restore(base, check=False):
        out = fresh(base, "rs")
        dt, rss, _ = T.rs(rrepo, "restore", rids[-1], "--target", out)
        if check:
            got = tree_sum(os.path.join(out, inside))
            assert got == want, (got, want)
        rm(out)
        return dt, rss

    # The first holdfast read builds the on-disk index (cold).
    res["hf restore cold"] = [hf_restore(work, check=True)]
    res["rs restore first"] = [rs_restore(work, check=True)]
    log("cold:", res)
    targets = [("disk", work)]
    shm_free = shutil.disk_usage("/dev/shm").free
    if a.shm and want[1] * 2 + want[0] * 4096 < shm_free:
        targets.append(("shm", "/dev/shm/hf-restore-bench"))
        os.makedirs("/dev/shm/hf-restore-bench", exist_ok=True)
    for where, base in targets:
        for i in range(a.repeat):
            order = ("hf", "rs") if i % 2 == 0 else ("rs", "hf")
            for tool in order:
                k = f"{tool} restore {where}"
                r = hf_restore(base) if tool == "hf" else rs_restore(base)
                res.setdefault(k, []).append(r)
                log(k, r)
    rm("/dev/shm/hf-restore-bench")

    # Listings and checks.
    for i in range(a.repeat):
        for k, f in (("hf ls", lambda: T.hf("ls", "--repo", hrepo, "--key", T.rk, ids[1], "--json")),
                     ("rs ls", lambda: T.rs(rrepo, "ls", "--json", rids[-1])),
                     ("hf diff", lambda: T.hf("diff", "--repo", hrepo, "--key", T.rk, ids[0], ids[1], "--json")),
                     ("rs diff", lambda: T.rs(rrepo, "diff", rids[0], rids[-1]))):
            dt, rss, _ = f()
            res.setdefault(k, []).append((dt, rss))
            log(k, dt, rss)
    for k, f in (("hf verify --read-data", lambda: T.hf("verify", "--repo", hrepo, "--key", T.rk, "--read-data")),
                 ("rs check --read-data", lambda: T.rs(rrepo, "check", "--read-data"))):
        dt, rss, _ = f()
        res.setdefault(k, []).append((dt, rss))
        log(k, dt, rss)

    if a.vault:
        vault = subprocess.Popen([HOLDFAST, "vault", "serve", "--repo", hrepo, "--key",
                                  os.path.join(T.keys, "vault.key"), "--listen", "127.0.0.1:0"],
                                 env=T.hf_env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        line = vault.stdout.readline().decode()
        vurl = next(x for x in line.split() if x.startswith("https://"))
        try:
            res["hf restore vault (first)"] = [hf_restore(work, repo=vurl, check=True)]
            for i in range(a.repeat):
                order = ("vault", "local") if i % 2 == 0 else ("local", "vault")
                for where in order:
                    r = hf_restore(work, repo=vurl if where == "vault" else hrepo)
                    res.setdefault(f"hf restore {where} (vs vault)", []).append(r)
                    log(where, r)
        finally:
            vault.terminate()
            vault.wait()

    def row(label, k, rk=None):
        if k not in res:
            return None
        hs, hr = med([x[0] for x in res[k]]), med([x[1] for x in res[k]])
        n = len(res[k])
        if rk and rk in res:
            rs_, rr = med([x[0] for x in res[rk]]), med([x[1] for x in res[rk]])
            return (f"| {a.files:,} | {label} (n={n}) | {hs:.2f} s | {hr:.1f} MiB | {rs_:.2f} s | "
                    f"{rr:.1f} MiB | {hs / rs_:.2f}× |")
        return f"| {a.files:,} | {label} (n={n}) | {hs:.2f} s | {hr:.1f} MiB | | | |"

    rows = [
        row("restore, first (builds the index)", "hf restore cold", "rs restore first"),
        row("restore to disk", "hf restore disk", "rs restore disk"),
        row("restore to /dev/shm", "hf restore shm", "rs restore shm"),
        row("ls --json", "hf ls", "rs ls"),
        row("diff", "hf diff", "rs diff"),
        row("verify --read-data / check --read-data", "hf verify --read-data", "rs check --read-data"),
        row("restore through a vault (same disk)", "hf restore vault (vs vault)"),
        row("restore local, same rounds", "hf restore local (vs vault)"),
    ]
    if "hf restore vault (vs vault)" in res:
        v = med([x[0] for x in res["hf restore vault (vs vault)"]])
        loc = med([x[0] for x in res["hf restore local (vs vault)"]])
        rows.append(f"| {a.files:,} | vault ÷ local restore | {v / loc:.2f}× | | | | |")
    table = "\n".join(r for r in rows if r)
    print(table)
    if a.out:
        with open(a.out, "a") as fh:
            fh.write(table + "\n")
    log(json.dumps(res))
    rm(work)
    if not a.keep:
        rm(spool)


def s3(a):
    ep = os.environ.get("AWS_ENDPOINT_URL")
    if not ep:
        sys.exit("set AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (see --help)")
    os.makedirs(ROOT, exist_ok=True)
    spool = os.path.join(ROOT, f"spool-s3-{a.files}")
    work = os.path.join(ROOT, f"work-s3-{a.files}")
    rm(work)
    os.makedirs(work)
    if not os.path.isdir(spool):
        make(spool, a.files, seed=20)
    T = Tools(work)
    tag = str(int(time.time()))
    url = f"s3://hf-restore-{tag}/repo"
    rrepo = f"s3:{ep}/rs-restore-{tag}"
    subprocess.run([HOLDFAST, "init", url, "--keys", T.keys], env=T.hf_env, check=True,
                   stdout=subprocess.DEVNULL)
    state = os.path.join(work, "vault-state")
    vault = subprocess.Popen([HOLDFAST, "vault", "serve", "--repo", url, "--state", state, "--key",
                              os.path.join(T.keys, "vault.key"), "--listen", "127.0.0.1:0"],
                             env=T.hf_env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    line = vault.stdout.readline().decode()
    vurl = next(x for x in line.split() if x.startswith("https://"))
    import json
    try:
        _, _, out = T.hf("backup", "--repo", vurl, "--key", T.ck, "--json", spool,
                         ok=(0, 5), stdout=subprocess.PIPE)
    finally:
        vault.terminate()
        vault.wait()
    sid = json.loads(out)[0]["snapshot"]
    subprocess.run(["restic", "init", "-q", "-r", rrepo], env=T.rs_env, check=True,
                   stdout=subprocess.DEVNULL)
    T.rs(rrepo, "backup", spool)
    want = tree_sum(spool)
    res = {}
    for i in range(a.repeat):
        order = ("hf", "rs") if i % 2 == 0 else ("rs", "hf")
        for tool in order:
            out = fresh(work, tool)
            if tool == "hf":
                r = T.hf("restore", "--repo", url, "--key", T.rk, sid, out)
                got = tree_sum(os.path.join(out, os.path.basename(spool)))
            else:
                r = T.rs(rrepo, "restore", "latest", "--target", out)
                got = tree_sum(os.path.join(out, spool.lstrip("/")))
            assert got == want, (tool, got, want)
            rm(out)
            res.setdefault(tool, []).append(r[:2])
            log(tool, r[:2])
    # Parallel restorers over disjoint mailboxes.
    users = sorted(os.listdir(spool))
    base = os.path.basename(spool)
    par = {}
    for k in (1, 2, 4):
        groups = [users[i::k] for i in range(k)]
        outs = [fresh(work, f"p{k}-{i}") for i in range(k)]
        t0 = time.monotonic()
        procs = []
        for g, o in zip(groups, outs):
            args = [HOLDFAST, "restore", "--repo", url, "--key", T.rk, sid, o]
            for u in g:
                args += ["--path", f"{base}/{u}"]
            procs.append(subprocess.Popen(args, env=T.hf_env, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE))
        rss = []
        for p in procs:
            _, st, ru = os.wait4(p.pid, 0)
            if os.waitstatus_to_exitcode(st) != 0:
                sys.exit(f"parallel restore failed: {p.stderr.read().decode()[-2000:]}")
            rss.append(ru.ru_maxrss / 1024.0)
        dt = time.monotonic() - t0
        got = [0, 0]
        for o in outs:
            n, b = tree_sum(o)
            got[0] += n
            got[1] += b
            rm(o)
        assert tuple(got) == want, (k, got, want)
        par[k] = (dt, max(rss))
        log("parallel", k, par[k])
    mb = want[1] / 1e6
    hs, rs_ = med([x[0] for x in res["hf"]]), med([x[0] for x in res["rs"]])
    hr, rr = med([x[1] for x in res["hf"]]), med([x[1] for x in res["rs"]])
    rows = [f"| {a.files:,} | restore from S3 (n={a.repeat}) | {hs:.2f} s | {hr:.1f} MiB | "
            f"{rs_:.2f} s | {rr:.1f} MiB | {hs / rs_:.2f}× |"]
    for k, (dt, r) in par.items():
        rows.append(f"| {a.files:,} | {k} parallel restorer(s), disjoint mailboxes | {dt:.2f} s "
                    f"({mb / dt:.0f} MB/s, {a.files / dt:,.0f} files/s) | {r:.1f} MiB each | | | |")
    table = "\n".join(rows)
    print(table)
    if a.out:
        with open(a.out, "a") as fh:
            fh.write(table + "\n")
    log(json.dumps({"restore": res, "parallel": par}))
    rm(work)
    rm(spool)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("dir")
    m.add_argument("--files", type=int, required=True)
    for name in ("local", "s3"):
        r = sub.add_parser(name)
        r.add_argument("--files", type=int, required=True)
        r.add_argument("--repeat", type=int, default=3)
        r.add_argument("--out")
        if name == "local":
            r.add_argument("--vault", action="store_true")
            r.add_argument("--no-shm", dest="shm", action="store_false",
                           help="skip the restores into /dev/shm")
            r.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    if a.cmd == "make":
        print(make(a.dir, a.files))
    elif a.cmd == "local":
        local(a)
    else:
        s3(a)


if __name__ == "__main__":
    main()
