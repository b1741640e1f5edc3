#!/usr/bin/env python3
"""Mail restore figures (issue 9), on a generated spool.

    python3 bench/mail_restore.py [--mailboxes 1000] [--messages 300000] [--bin target/release/holdfast]

Makes a spool of MAILBOXES Maildir++ mailboxes holding MESSAGES small
messages in all (INBOX, Sent, Archive; distinct mtimes), backs it up into a
local repository, then measures with the real binary:

* one mailbox restored out of the spool (`mail restore` of one Maildir):
  seconds, bytes read (the command's report) and that mailbox's stored size
  (its bytes on disk, an upper bound of what it occupies in packs);
* a plain `restore` of the whole spool vs `mail restore` of it (ratio, the
  target is <= 1.3), and the time until every mailbox's INBOX was complete
  (`all_inboxes_seconds`; newest first, so its newest 100 came before);
* a second `mail restore` over the result (writes 0);
* `drill --sample 10`.

Prints a Markdown table; nothing is timed in CI. Use --maildir-py to run on
the shared corpus generator instead (`maildir.py make DIR`).
"""

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PASS = "bench passphrase, long enough"


def make_spool(root, mailboxes, messages, seed=1):
    rnd = random.Random(seed)
    words = b"mail meeting invoice the attached please regards server backup tomorrow".split()
    per = max(1, messages // mailboxes)
    t0 = 1_600_000_000
    for u in range(mailboxes):
        home = os.path.join(root, f"user{u:04d}")
        for d in ["", ".Sent", ".Archive"]:
            for s in ["cur", "new", "tmp"]:
                os.makedirs(os.path.join(home, d, s), exist_ok=True)
        with open(os.path.join(home, "subscriptions"), "wb") as f:
            f.write(b"Sent\nArchive\n")
        for i in range(per):
            folder = ["", "", ".Sent", ".Archive"][i % 4]
            body = b" ".join(rnd.choice(words) for _ in range(60 + rnd.randrange(400)))
            msg = (b"From: a@example.org\nTo: user%d@example.org\nSubject: %d\nMessage-ID: <%d.%d@bench>\n\n"
                   % (u, i, u, i)) + body + b"\n"
            t = t0 + i * 600 + u
            name = f"{t}.M{i}P{u}.bench,S={len(msg)}:2,S"
            p = os.path.join(home, folder, "cur", name)
            with open(p, "wb") as f:
                f.write(msg)
            os.utime(p, (t, t))


def du(path):
    total = 0
    for d, _, fs in os.walk(path):
        for f in fs:
            total += os.lstat(os.path.join(d, f)).st_size
    return total


def hf(bin_, env, *args, json_out=False):
    t = time.monotonic()
    p = subprocess.run([bin_, *args], env=env, capture_output=True)
    dt = time.monotonic() - t
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): holdfast {' '.join(args)}\n{p.stderr.decode()}")
    return dt, (json.loads(p.stdout) if json_out else p.stdout.decode())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mailboxes", type=int, default=1000)
    ap.add_argument("--messages", type=int, default=300_000)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "holdfast"))
    ap.add_argument("--work", default=os.path.join(ROOT, "bench", "work-mail"))
    ap.add_argument("--maildir-py", help="make the spool with this generator (maildir.py make DIR) instead")
    a = ap.parse_args()
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    spool = os.path.join(a.work, "mail")
    t = time.monotonic()
    if a.maildir_py:
        subprocess.run([sys.executable, a.maildir_py, "make", spool], check=True)
    else:
        make_spool(spool, a.mailboxes, a.messages)
    print(f"spool made in {time.monotonic() - t:.1f} s: {du(spool) / 1e6:.1f} MB", file=sys.stderr)
    env = dict(os.environ, HOLDFAST_PASSPHRASE=PASS, HOLDFAST_CACHE_DIR=os.path.join(a.work, "cache"))
    repo, keys = os.path.join(a.work, "repo"), os.path.join(a.work, "keys")
    rk = os.path.join(keys, "restore.key")
    hf(a.bin, env, "init", repo, "--keys", keys)
    tb, _ = hf(a.bin, env, "backup", "--repo", repo, "--key", os.path.join(keys, "client.key"), spool)
    rows = [("backup", f"{tb:.2f} s", "")]

    boxes = sorted(d for d in os.listdir(spool) if os.path.isdir(os.path.join(spool, d)))
    one = os.path.join(spool, boxes[len(boxes) // 2])
    t1, r1 = hf(a.bin, env, "mail", "restore", "--repo", repo, "--key", rk, "latest", one,
                os.path.join(a.work, "one"), "--json", json_out=True)
    rows.append(("one mailbox: mail restore", f"{t1:.2f} s",
                 f"{r1['written']} msgs, read {r1['bytes_read'] / 1e6:.2f} MB, mailbox on disk {du(one) / 1e6:.2f} MB, "
                 f"repository {du(repo) / 1e6:.1f} MB"))

    tp, _ = hf(a.bin, env, "restore", "--repo", repo, "--key", rk, "latest", os.path.join(a.work, "plain"))
    rows.append(("whole spool: restore", f"{tp:.2f} s", ""))
    tm, rm = hf(a.bin, env, "mail", "restore", "--repo", repo, "--key", rk, "latest", "mail",
                os.path.join(a.work, "merged"), "--json", json_out=True)
    rows.append(("whole spool: mail restore", f"{tm:.2f} s",
                 f"ratio {tm / tp:.2f} (target <= 1.3); first INBOX {rm['first_inbox_seconds']:.2f} s, "
                 f"every INBOX {rm['all_inboxes_seconds']:.2f} s; {rm['written']} msgs"))
    t2, r2 = hf(a.bin, env, "mail", "restore", "--repo", repo, "--key", rk, "latest", "mail",
                os.path.join(a.work, "merged"), "--json", json_out=True)
    rows.append(("second mail restore", f"{t2:.2f} s", f"{r2['written']} written, {r2['skipped']} skipped"))
    td, rd = hf(a.bin, env, "drill", "--repo", repo, "--key", rk, "--sample", "10", "--json",
                "--history", os.path.join(a.work, "drill.jsonl"), json_out=True)
    run = rd["run"]
    rows.append(("drill --sample 10", f"{td:.2f} s",
                 f"{run['mb_per_s']:.1f} MB/s, {run['files_per_s']:.0f} files/s, "
                 f"projected full {run['projected_full_seconds']:.1f} s"))
    print(f"| {len(boxes)} mailboxes | time | notes |\n|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")


if __name__ == "__main__":
    main()
