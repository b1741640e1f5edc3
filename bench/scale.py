#!/usr/bin/env python3
"""Backup memory and time at scale (issue 10, goal 1): holdfast against restic.

  scale.py make  DIR --files N       a deterministic Maildir-shaped spool of
                                     N small (~4 KB) messages: N/1000 mailboxes,
                                     each a Maildir (cur/ new/ tmp/) with
                                     .Sent and .Archive folders
  scale.py run   --files N [--repeat R] [--out FILE] [--keep]
                                     makes the spool under /work/tmp-scale,
                                     then for holdfast (release build) and
                                     restic, in alternating order, R times:
                                     first backup into a fresh repository,
                                     unchanged re-run, and (holdfast) a run
                                     with the cache deleted; wall time and
                                     peak RSS from wait4(); medians

Only the standard library is used; the same arguments give the same bytes.
The results go to a markdown table (bench/results/scale-backup.md with
--out). The spool is deleted afterwards unless --keep.
"""
import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = "/work/tmp-scale"
HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(HERE)
HOLDFAST = os.path.join(REPO_ROOT, "target", "release", "holdfast")
PASS = "scale bench passphrase"
WORDS = ("the of and to in is for on that with as was at by this from be are "
         "or have an it not which we you your invoice meeting report attached "
         "please find below regards thanks update schedule project account "
         "payment order delivery server backup restore mailbox password team "
         "review draft contract budget quarter release customer support ticket").split()


def make(dst, files, seed=10):
    """N/1000 mailboxes (at least 1); messages spread over INBOX cur/new,
    .Sent/cur and .Archive/cur; each ~4 KB, unique (a header with its
    number), text from a shared word stream so it compresses like mail."""
    rng = random.Random(seed)
    text = " ".join(rng.choice(WORDS) for _ in range(200_000)).encode()
    users = max(1, files // 1000)
    done = 0
    base = 1_550_000_000
    os.makedirs(dst, exist_ok=True)
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
            sub = "new" if (k % 10 == 0) else "cur"
            t = base + done
            name = f"{t}.M{k}P{u}.mx1,S={4096}" + ("" if sub == "new" else ":2,S")
            size = 2500 + rng.randrange(3500)
            off = rng.randrange(len(text) - size)
            msg = (f"Return-Path: <u{rng.randrange(99999)}@example.com>\n"
                   f"From: u{u}@example.net\nTo: user{u}@mail.example.net\n"
                   f"Subject: message {done}\nMessage-ID: <{done}.{seed}@mx>\n\n").encode()
            with open(os.path.join(folder, sub, name), "wb") as fh:
                fh.write(msg + text[off:off + size] + b"\n")
            done += 1
    return done


def run_measured(cmd, env=None):
    """Runs cmd under /usr/bin/time (whose child is forked from a small C
    program: Python's own pages do not count into the child's ru_maxrss);
    returns (seconds, peak RSS in MiB, exit status, stdout)."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        t0 = time.monotonic()
        p = subprocess.run(["/usr/bin/time", "-o", tf.name, "-f", "%e %M"] + cmd, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        dt = time.monotonic() - t0
        code = p.returncode
        if code not in (0, 3):
            sys.stderr.write(f"{cmd[0]} {cmd[1]} failed ({code}): {p.stderr.decode(errors='replace')}\n")
            raise SystemExit(1)
        line = [l for l in open(tf.name).read().splitlines() if l.strip()][-1]
        secs, kib = line.split()
        return float(secs), int(kib) / 1024.0, code, p.stdout


def drop_caches_fresh(path):
    if os.path.exists(path):
        shutil.rmtree(path)


def holdfast_round(spool, work):
    env = dict(os.environ, HOLDFAST_PASSPHRASE=PASS)
    repo, keys, cache = (os.path.join(work, x) for x in ("hf-repo", "hf-keys", "hf-cache"))
    for p in (repo, keys, cache):
        drop_caches_fresh(p)
    subprocess.run([HOLDFAST, "init", repo, "--keys", keys], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    cmd = [HOLDFAST, "backup", "--repo", repo, "--key", os.path.join(keys, "client.key"),
           "--cache-dir", cache, "--json", spool]
    r = {}
    for step in ("first", "unchanged", "lost_cache"):
        if step == "lost_cache":
            shutil.rmtree(cache)
        packs_before = len(os.listdir(os.path.join(repo, "packs"))) if os.path.isdir(
            os.path.join(repo, "packs")) else None
        dt, rss, code, out = run_measured(cmd, env)
        j = json.loads(out)[0]
        r[step] = {"s": dt, "rss": rss, "files": j["files"], "read": j["files_read"],
                   "packs_written": j["packs_written"]}
        del packs_before
    shutil.rmtree(repo)
    shutil.rmtree(cache, ignore_errors=True)
    return r


def restic_round(spool, work):
    env = dict(os.environ, RESTIC_PASSWORD=PASS, RESTIC_CACHE_DIR=os.path.join(work, "rs-cache"))
    repo = os.path.join(work, "rs-repo")
    drop_caches_fresh(repo)
    drop_caches_fresh(env["RESTIC_CACHE_DIR"])
    subprocess.run(["restic", "init", "-q", "--repo", repo], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    r = {}
    for step in ("first", "unchanged"):
        dt, rss, _, _ = run_measured(["restic", "backup", "-q", "--repo", repo, spool], env)
        r[step] = {"s": dt, "rss": rss}
    shutil.rmtree(repo)
    shutil.rmtree(env["RESTIC_CACHE_DIR"], ignore_errors=True)
    return r


def median(rounds, tool, step, field):
    return statistics.median(r[tool][step][field] for r in rounds)


def run(args):
    os.makedirs(ROOT, exist_ok=True)
    spool = os.path.join(ROOT, f"spool-{args.files}")
    if not os.path.isdir(spool):
        t = time.monotonic()
        n = make(spool, args.files)
        print(f"made {n} files in {time.monotonic() - t:.0f} s", file=sys.stderr)
    work = os.path.join(ROOT, f"work-{args.files}")
    os.makedirs(work, exist_ok=True)
    rounds = []
    for i in range(args.repeat):
        order = ("holdfast", "restic") if i % 2 == 0 else ("restic", "holdfast")
        res = {}
        for tool in order:
            res[tool] = holdfast_round(spool, work) if tool == "holdfast" else restic_round(spool, work)
            print(f"round {i + 1} {tool}: {json.dumps(res[tool])}", file=sys.stderr)
        rounds.append(res)
    shutil.rmtree(work, ignore_errors=True)
    if not args.keep:
        shutil.rmtree(spool)
    rows = []
    for step, label in (("first", "first backup"), ("unchanged", "unchanged re-run"),
                        ("lost_cache", "lost cache")):
        hs, hr = median(rounds, "holdfast", step, "s"), median(rounds, "holdfast", step, "rss")
        if step in rounds[0]["restic"]:
            rs, rr = median(rounds, "restic", step, "s"), median(rounds, "restic", step, "rss")
            rows.append(f"| {args.files:,} | {label} | {hs:.2f} s | {hr:.1f} MiB | {rs:.2f} s | "
                        f"{rr:.1f} MiB | {hs / rs:.2f}× |")
        else:
            pw = max(r["holdfast"][step]["packs_written"] for r in rounds)
            rows.append(f"| {args.files:,} | {label} ({pw} packs written) | {hs:.2f} s | "
                        f"{hr:.1f} MiB | | | |")
    table = "\n".join(rows)
    print(table)
    if args.out:
        with open(args.out, "a") as fh:
            fh.write(table + "\n")
    print(json.dumps(rounds), file=sys.stderr)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("dir")
    m.add_argument("--files", type=int, required=True)
    r = sub.add_parser("run")
    r.add_argument("--files", type=int, required=True)
    r.add_argument("--repeat", type=int, default=3)
    r.add_argument("--out")
    r.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    if a.cmd == "make":
        print(make(a.dir, a.files))
    else:
        run(a)


if __name__ == "__main__":
    main()
