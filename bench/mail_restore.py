#!/usr/bin/env python3
"""Mail restore figures (issue 9), on a generated spool.

    python3 bench/mail_restore.py [--mailboxes 1000] [--messages 300000] [--reps 3]
                                  [--bin target/release/holdfast] [--no-restic] [--no-shm]
                                  [--corpus generated|maildir] [--size-mb M] [--rm-after]

Makes a spool of MAILBOXES Maildir++ mailboxes holding MESSAGES small
messages in all (INBOX, Sent, Archive; distinct mtimes), backs it up into a
local repository (and into a restic repository), then measures with the
real binaries:

* one mailbox restored out of the spool (`mail restore` of one Maildir):
  seconds, bytes read (the command's report) and that mailbox's stored size
  (its bytes on disk, an upper bound of what it occupies in packs);
* the whole spool, REPS times in alternating order, each into a fresh
  directory, on this disk and (unless --no-shm) into /dev/shm: plain
  `restore` into an empty directory, `mail restore` into live mailboxes
  (every mailbox exists and received 3 messages since, with its own
  dovecot-uidlist, so every message is delivered under a fresh name), and
  `restic restore`; wall time and peak RSS (wait4), medians. The target
  for `mail restore` is <= 1.3x plain `restore` and < restic;
* the time until every mailbox had its newest 100 INBOX messages (the end
  of `mail restore`'s first pass over the spool, `inbox_newest_done_secs`)
  and until every mailbox's INBOX was complete (`all_inboxes_seconds`);
* a second `mail restore` over the result (writes 0);
* `drill --sample 10`.

Prints a Markdown table; nothing is timed in CI.

`--corpus maildir` makes the spool with the shared corpus generator
(`maildir.py make DIR --users MAILBOXES --size-mb M --seed 1`; the script
is --maildir-py, by default ../shared/bench/maildir.py beside this
repository): MAILBOXES users `uNNNNN/Maildir` with five folders, skewed
mailbox sizes, text and base64 attachments, shared popular attachments.
Its mailboxes are found as the directories holding cur/ (not `.Folder`s).

Disk use: on disk, every whole-spool restore is kept until the end (a mass
deletion just before a run slows inode creation), so a run needs the spool,
the repositories and 2 x REPS + 3 copies of the spool. `--rm-after` removes
each restore as soon as it is measured (then syncs, outside the timing), so
at most two copies exist besides the spool and the repositories: use it
(with --no-restic --no-shm) for the growth runs, e.g. at 1,000,000
messages. The space needed is estimated after the spool is made and the
run stops there if the disk lacks it.
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


def mailbox_dirs(spool):
    """The Maildirs under spool (directories holding cur/ and new/, not a
    Maildir++ `.Folder`), relative, sorted."""
    out = []
    for d, dirs, _ in os.walk(spool):
        if "cur" in dirs and "new" in dirs and not os.path.basename(d).startswith("."):
            out.append(os.path.relpath(d, spool))
        dirs[:] = [x for x in dirs if x not in ("cur", "new", "tmp") and not x.startswith(".")]
    return sorted(out)


def du(path):
    total = 0
    for d, _, fs in os.walk(path):
        for f in fs:
            total += os.lstat(os.path.join(d, f)).st_size
    return total


def measured(cmd, env, ok=(0,)):
    """Runs cmd; returns (seconds, peak RSS MiB from wait4, stdout)."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = p.stdout.read()
    err = p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    dt = time.monotonic() - t0
    if p.returncode not in ok:
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{err.decode(errors='replace')[-3000:]}")
    return dt, ru.ru_maxrss / 1024.0, out


def make_live(boxes, target, seed=2):
    """Every mailbox of the spool (`boxes`, relative), live: a new uidlist
    and 3 messages since."""
    rnd = random.Random(seed)
    for u in boxes:
        home = os.path.join(target, u)
        for s_ in ["cur", "new", "tmp"]:
            os.makedirs(os.path.join(home, s_), exist_ok=True)
        with open(os.path.join(home, "dovecot-uidlist"), "wb") as f:
            f.write(b"3 V1700000000 N4\n")
        for i in range(3):
            msg = b"From: new@example.org\nSubject: since %d\n\n%d\n" % (i, rnd.randrange(1 << 30))
            sub, info = ("new", "") if i == 0 else ("cur", ":2,S")
            with open(os.path.join(home, sub, f"1700000000.M{i}.live,S={len(msg)}{info}"), "wb") as f:
                f.write(msg)


def hf(bin_, env, *args, json_out=False):
    t = time.monotonic()
    p = subprocess.run([bin_, *args], env=env, capture_output=True)
    dt = time.monotonic() - t
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): holdfast {' '.join(args)}\n{p.stderr.decode()}")
    return dt, (json.loads(p.stdout) if json_out else p.stdout.decode())


def fresh(base, tag):
    os.makedirs(base, exist_ok=True)
    return os.path.join(base, f"{tag}-{time.monotonic_ns()}")


RM_AFTER = False


def done(out):
    """Restores into /dev/shm are removed at once (memory); on disk they stay
    until the end (a mass deletion just before slows inode creation) unless
    --rm-after: then they go at once too, and the deletion is synced before
    the next run."""
    if out.startswith("/dev/shm/"):
        shutil.rmtree(out)
    elif RM_AFTER:
        shutil.rmtree(out)
        os.sync()


def med(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mailboxes", type=int, default=None,
                    help="mailboxes (generated: 1000; maildir: its --users, 200)")
    ap.add_argument("--messages", type=int, default=300_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "holdfast"))
    ap.add_argument("--work", default=os.path.join(ROOT, "bench", "work-mail"))
    ap.add_argument("--corpus", choices=["generated", "maildir"], default="generated",
                    help="generated: this script's spool (--mailboxes, --messages); maildir: "
                         "the shared maildir.py corpus (--mailboxes users, --size-mb)")
    ap.add_argument("--maildir-py", default=os.path.join(os.path.dirname(ROOT), "shared", "bench",
                                                         "maildir.py"),
                    help="the corpus generator for --corpus maildir")
    ap.add_argument("--size-mb", type=int, default=500, help="--corpus maildir: its size")
    ap.add_argument("--rm-after", action="store_true",
                    help="remove each restore once measured (bounded disk use)")
    ap.add_argument("--no-restic", action="store_true")
    ap.add_argument("--no-shm", action="store_true")
    ap.add_argument("--spool", help="use this spool (made by an earlier run) instead of making one")
    ap.add_argument("--reuse", help="the --work of an earlier run on the same spool: its repositories")
    a = ap.parse_args()
    global RM_AFTER
    RM_AFTER = a.rm_after
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    spool = os.path.join(a.work, "mail")
    t = time.monotonic()
    if a.spool:
        os.symlink(os.path.abspath(a.spool), spool)
        spool = os.path.realpath(spool)
    elif a.corpus == "maildir":
        if not os.path.isfile(a.maildir_py):
            sys.exit(f"{a.maildir_py}: no such file (--maildir-py)")
        subprocess.run([sys.executable, a.maildir_py, "make", spool, "--users",
                        str(a.mailboxes or 200), "--size-mb", str(a.size_mb), "--seed", "1"],
                       check=True, stdout=sys.stderr)
    else:
        make_spool(spool, a.mailboxes or 1000, a.messages)
    top = os.path.basename(spool)  # the spool's name in the snapshot
    nfiles = sum(len(fs) for _, _, fs in os.walk(spool))
    nmsgs = sum(len(fs) for d, _, fs in os.walk(spool) if os.path.basename(d) in ("cur", "new"))
    spool_bytes = du(spool)
    print(f"spool made in {time.monotonic() - t:.1f} s: {nfiles} files, {nmsgs} messages, "
          f"{spool_bytes / 1e6:.1f} MB", file=sys.stderr)
    # One copy on disk: its bytes in 4 KiB blocks plus directories.
    copy = 4096 * nfiles + spool_bytes
    copies = 3 if a.rm_after else 2 * a.reps + 3
    need = copies * copy + (0 if a.reuse else 2 * spool_bytes)  # + repositories
    free = shutil.disk_usage(a.work).free
    print(f"disk: about {need / 1e9:.1f} GB needed ({copies} restores of {copy / 1e9:.2f} GB"
          f"{'' if a.rm_after else '; --rm-after needs 3'}), {free / 1e9:.1f} GB free",
          file=sys.stderr)
    if need > free:
        sys.exit("not enough free disk for this run" + ("" if a.rm_after else ": try --rm-after"))
    env = dict(os.environ, HOLDFAST_PASSPHRASE=PASS, HOLDFAST_CACHE_DIR=os.path.join(a.work, "cache"))
    repo, keys = os.path.join(a.work, "repo"), os.path.join(a.work, "keys")
    rk = os.path.join(keys, "restore.key")
    renv = dict(os.environ, RESTIC_PASSWORD=PASS, RESTIC_CACHE_DIR=os.path.join(a.work, "restic-cache"))
    rrepo = os.path.join(a.work, "restic")
    rows = []
    if a.reuse:
        for d in ["repo", "keys", "restic", "cache", "restic-cache"]:
            os.symlink(os.path.join(os.path.abspath(a.reuse), d), os.path.join(a.work, d))
    else:
        hf(a.bin, env, "init", repo, "--keys", keys)
        tb, _ = hf(a.bin, env, "backup", "--repo", repo, "--key", os.path.join(keys, "client.key"), spool)
        rows = [("backup", f"{tb:.2f} s", "")]
    if not a.no_restic and not a.reuse:
        subprocess.run(["restic", "init", "-q", "--repo", rrepo], env=renv, check=True,
                       stdout=subprocess.DEVNULL)
        trb, _, _ = measured(["restic", "backup", "-q", "--repo", rrepo, spool], renv)
        rows.append(("restic backup", f"{trb:.2f} s", ""))

    boxes = mailbox_dirs(spool)
    one = os.path.join(spool, boxes[len(boxes) // 2])
    t1, r1 = hf(a.bin, env, "mail", "restore", "--repo", repo, "--key", rk, "latest", one,
                os.path.join(a.work, "one"), "--json", json_out=True)
    rows.append(("one mailbox: mail restore", f"{t1:.2f} s",
                 f"{r1['written']} msgs, read {r1['bytes_read'] / 1e6:.2f} MB, mailbox on disk {du(one) / 1e6:.2f} MB, "
                 f"repository {du(repo) / 1e6:.1f} MB"))

    def synced():
        """Seconds a `sync` right after a restore takes: until then what
        plain restore and restic wrote may sit in the page cache only,
        while `mail restore` has already made every message durable."""
        t0 = time.monotonic()
        os.sync()
        return time.monotonic() - t0

    def plain(base):
        out = fresh(base, "plain")
        dt, rss, _ = measured([a.bin, "restore", "--repo", repo, "--key", rk, "latest", out], env)
        sdt = synced()
        done(out)
        return dt, rss, None, sdt

    def mail(base):
        out = fresh(base, "live")
        make_live(boxes, out)
        dt, rss, o = measured([a.bin, "mail", "restore", "--repo", repo, "--key", rk, "latest", top,
                               out, "--json"], env)
        r = json.loads(o)
        assert r["written"] == nmsgs and not r["errors"] and not r["damaged"], r
        sdt = synced()
        done(out)
        return dt, rss, r, sdt

    def restic(base):
        out = fresh(base, "restic")
        dt, rss, _ = measured(["restic", "restore", "-q", "--repo", rrepo, "latest", "--target", out], renv)
        sdt = synced()
        done(out)
        return dt, rss, None, sdt

    tools = [("restore", plain), ("mail restore (live)", mail)]
    if not a.no_restic:
        tools.append(("restic restore", restic))
    places = [("disk", os.path.join(a.work, "out"))]
    if not a.no_shm and shutil.disk_usage("/dev/shm").free > 4 * du(spool) + 4096 * nfiles:
        places.append(("/dev/shm", "/dev/shm/hf-mail-bench"))
    # The first restore builds the on-disk pack index (cold): not measured.
    warm = fresh(places[0][1], "warm")
    hf(a.bin, env, "restore", "--repo", repo, "--key", rk, "latest", warm)
    done(warm)
    res = {}
    for place, base in places:
        for i in range(a.reps):
            order = tools if i % 2 == 0 else tools[::-1]
            for name, f in order:
                dt, rss, r, sdt = f(base)
                res.setdefault((place, name), []).append((dt, rss, r, sdt))
                print(f"{place} {name} #{i}: {dt:.2f} s (+{sdt:.2f} s sync), {rss:.1f} MiB",
                      file=sys.stderr)
        if base.startswith("/dev/shm/"):
            shutil.rmtree(base, ignore_errors=True)
    for place, _ in places:
        tp = med([x[0] for x in res[(place, "restore")]])
        for name, _ in tools:
            xs = res[(place, name)]
            dt, rss = med([x[0] for x in xs]), med([x[1] for x in xs])
            note = f"peak RSS {rss:.1f} MiB; runs {', '.join(f'{x[0]:.1f}' for x in xs)} s"
            if name != "restore":
                note += f"; {dt / tp:.2f}x plain restore"
            if name.startswith("mail"):
                rm = xs[[x[0] for x in xs].index(dt)][2]
                newest = rm.get("inbox_newest_done_secs")
                newest = "n/a" if newest is None else f"{newest:.2f} s"
                note += (f"; every mailbox's newest 100 INBOX messages {newest}, "
                         f"first INBOX {rm['first_inbox_seconds']:.2f} s, every INBOX "
                         f"{rm['all_inboxes_seconds']:.2f} s; {rm['written']} msgs, {rm['syncs']} syncfs")
                if not a.no_restic:
                    tr = med([x[0] for x in res[(place, "restic restore")]])
                    note += f"; {dt / tr:.2f}x restic"
            rows.append((f"whole spool into {place}: {name} (median of {len(xs)})", f"{dt:.2f} s", note))
        # The same runs until durable (the restore, then `sync`): what a
        # crash right after would keep.
        durable = {name: med([x[0] + x[3] for x in res[(place, name)]]) for name, _ in tools}
        for name, _ in tools:
            xs = res[(place, name)]
            note = f"runs {', '.join(f'{x[0]:.1f}+{x[3]:.1f}' for x in xs)} s"
            if name != "restore":
                note += f"; {durable[name] / durable['restore']:.2f}x plain restore"
            if name.startswith("mail") and "restic restore" in durable:
                note += f"; {durable[name] / durable['restic restore']:.2f}x restic"
            rows.append((f"whole spool into {place}, until durable (+ sync): {name} (median of {len(xs)})",
                         f"{durable[name]:.2f} s", note))

    merged = os.path.join(a.work, "merged")
    tm, rm = hf(a.bin, env, "mail", "restore", "--repo", repo, "--key", rk, "latest", top,
                merged, "--json", json_out=True)
    t2, r2 = hf(a.bin, env, "mail", "restore", "--repo", repo, "--key", rk, "latest", top,
                merged, "--json", json_out=True)
    rows.append(("second mail restore over a full one", f"{t2:.2f} s",
                 f"{r2['written']} written, {r2['skipped']} skipped"))
    done(merged)
    td, rd = hf(a.bin, env, "drill", "--repo", repo, "--key", rk, "--sample", "10", "--json",
                "--history", os.path.join(a.work, "drill.jsonl"), json_out=True)
    run = rd["run"]
    rows.append(("drill --sample 10", f"{td:.2f} s",
                 f"{run['mb_per_s']:.1f} MB/s, {run['files_per_s']:.0f} files/s, "
                 f"projected full {run['projected_full_seconds']:.1f} s"))
    print(f"| {len(boxes)} mailboxes ({a.corpus}), {nmsgs} messages, {nfiles} files, "
          f"{spool_bytes / 1e6:.0f} MB | time | notes |\n|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")


if __name__ == "__main__":
    main()
