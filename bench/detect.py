#!/usr/bin/env python3
"""Labelled benchmark of holdfast's client-side detection (issue 11).

    python3 bench/detect.py [--users 100] [--size-mb 100] [--days 10]

A deterministic Maildir corpus (shared/bench/maildir.py make) is backed up
to a local repository, then lives DAYS normal days (`maildir.py day`:
deliveries, flag renames and moves, deletions), one backup per day: every
exit 5 there is a false alarm. From the state after the normal days, each
attack runs on its own copy (corpus, repository, cache) and is followed by
one backup: it is detected if that backup exits 5. The slow burn encrypts
0.5% of the messages per day, with normal activity, until detected.

Prints, per attack, whether the first backup after it exits 5 and which
signals fired; per signal, on how many attacks and normal days it fired;
and the false alarm rate per 1,000 mailbox-days. What it does not cover:
the vault's own signals (a stolen key's snapshots; see
crates/cli/tests/detect.rs), and only the spool shapes maildir.py makes.
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


def sh(cmd, env=None, ok=(0,)):
    p = subprocess.run(cmd, env=env, capture_output=True)
    if p.returncode not in ok:
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr.decode()}")
    return p


class Site:
    """A corpus, its repository and its client cache."""

    def __init__(self, hf, work, name):
        self.hf, self.dir = hf, os.path.join(work, name)
        self.mail = os.path.join(self.dir, "mail")
        self.repo = os.path.join(self.dir, "repo")
        self.keys = os.path.join(self.dir, "keys")
        self.cache = os.path.join(self.dir, "cache")

    def env(self):
        e = dict(os.environ)
        e["HOLDFAST_CACHE_DIR"] = self.cache
        e["HOLDFAST_PASSPHRASE"] = "benchmark passphrase"
        return e

    def backup(self):
        t = time.monotonic()
        p = sh([self.hf, "backup", "--repo", self.repo, "--key",
                os.path.join(self.keys, "client.key"), "--json", self.mail],
               env=self.env(), ok=(0, 5))
        secs = time.monotonic() - t
        report = json.loads(p.stdout)[0]
        return p.returncode, [a["signal"] for a in report.get("anomalies", [])], secs

    def copy_to(self, other):
        """Copies corpus, keys, cache and repository to another site's
        paths (the cache remembers absolute paths: an attack must run where
        the backups ran)."""
        shutil.rmtree(other.dir, ignore_errors=True)
        os.makedirs(other.dir)
        for sub in ("mail", "keys", "cache"):
            shutil.copytree(os.path.join(self.dir, sub), os.path.join(other.dir, sub), symlinks=True)
        # Objects are immutable: hard links are a faithful, cheap copy.
        subprocess.run(["cp", "-al", self.repo, other.repo], check=True)


def messages(root, user=None):
    out = []
    base = os.path.join(root, user) if user else root
    for d, dirs, files in os.walk(base):
        dirs.sort()
        if os.path.basename(d) in ("cur", "new"):
            out.extend(os.path.join(d, f) for f in sorted(files))
    return out


def encrypt_in_place(paths, rng):
    for p in paths:
        n = os.path.getsize(p)
        with open(p, "wb") as f:
            f.write(rng.randbytes(n))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=100)
    ap.add_argument("--size-mb", type=int, default=100)
    ap.add_argument("--days", type=int, default=10)
    ap.add_argument("--work", default=os.path.join(ROOT, "bench", "work-detect"))
    ap.add_argument("--maildir-py", default=os.path.join(ROOT, "..", "shared", "bench", "maildir.py"))
    a = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "holdfast-cli"], cwd=ROOT, check=True)
    hf = os.path.join(ROOT, "target", "release", "holdfast")
    mdp = [sys.executable, a.maildir_py]
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)

    base = Site(hf, a.work, "base")
    os.makedirs(base.dir)
    sh(mdp + ["make", base.mail, "--users", str(a.users), "--size-mb", str(a.size_mb)])
    sh([hf, "init", base.repo, "--keys", base.keys], env=base.env())
    code, sig, first = base.backup()
    assert code == 0, sig

    fired_normal = {}
    alarms, incr = 0, []
    for day in range(1, a.days + 1):
        sh(mdp + ["day", base.mail, "--seed", str(day)])
        code, sig, secs = base.backup()
        incr.append(secs)
        alarms += code == 5
        for s in sig:
            fired_normal[s] = fired_normal.get(s, 0) + 1
        if code == 5:
            print(f"normal day {day}: FALSE ALARM {sig}")

    rng = random.Random(7)
    users = sorted(os.listdir(base.mail))
    victim = users[len(users) // 2]

    def one_mailbox(frac):
        def f(s):
            ms = messages(s.mail, victim)
            encrypt_in_place(rng.sample(ms, max(1, int(len(ms) * frac))), rng)
        return f

    def locked(s):
        sh(mdp + ["attack", s.mail, "--mode", "encrypt", "--fraction", "0.05", "--seed", "11"])

    def delete_mailboxes(s):
        for u in rng.sample(users, int(len(users) * 0.6)):
            shutil.rmtree(os.path.join(s.mail, u))

    def wipe(s):
        for u in os.listdir(s.mail):
            shutil.rmtree(os.path.join(s.mail, u))

    attacks = [
        ("in-place encryption, 1% of one mailbox", one_mailbox(0.01)),
        ("in-place encryption, 10% of one mailbox", one_mailbox(0.10)),
        ("in-place encryption, 100% of one mailbox", one_mailbox(1.0)),
        ("encryption with rename to .locked, 5% of all", locked),
        ("deletion of 60% of the mailboxes", delete_mailboxes),
        ("wipe of the spool root", wipe),
    ]
    fired_attack = {}
    rows = []
    pristine = Site(hf, a.work, "pristine")
    base.copy_to(pristine)
    # The copy has new inodes: one backup re-reads it (and finds nothing).
    code, sig, _ = base.backup()
    assert code == 0, sig
    for name, act in attacks:
        pristine.copy_to(base)
        act(base)
        code, sig, _ = base.backup()
        rows.append((name, code == 5, sig))
        for x in sig:
            fired_attack[x] = fired_attack.get(x, 0) + 1

    # Slow burn: 0.5% of the messages per day, with normal activity.
    pristine.copy_to(base)
    s = base
    total = len(messages(s.mail))
    encrypted = set()
    burn = None
    for d in range(1, 11):
        sh(mdp + ["day", s.mail, "--seed", str(100 + d)])
        pool = [m for m in messages(s.mail) if m not in encrypted]
        hit = rng.sample(pool, max(1, int(total * 0.005)))
        encrypt_in_place(hit, rng)
        encrypted.update(hit)
        code, sig, _ = s.backup()
        if code == 5:
            burn = (d, 100 * len(encrypted) / total, sig)
            break
    rows.append(("slow burn, 0.5% of messages per day",
                 burn is not None, burn[2] if burn else []))
    for x in (burn[2] if burn else []):
        fired_attack[x] = fired_attack.get(x, 0) + 1

    n_attacks = len(rows)
    print(f"\n# holdfast detection — {a.users} users, {a.size_mb} MB, {a.days} normal days\n")
    print("| attack | exit 5 at the first backup after it | signals |")
    print("|---|---|---|")
    for name, det, sig in rows:
        print(f"| {name} | {'yes' if det else 'NO'} | {', '.join(sig)} |")
    if burn:
        print(f"\nslow burn detected on day {burn[0]}, with {burn[1]:.1f}% of messages encrypted (target: by 2%)")
    else:
        print("\nslow burn NOT detected in 10 days")
    mbd = a.users * a.days
    print(f"\nnormal days: {alarms} alarm(s) in {a.days} backups = "
          f"{1000 * alarms / mbd:.2f} per 1,000 mailbox-days (target ≤ 1)")
    print("\n| signal | attacks it fired on | normal days it fired on |")
    print("|---|---|---|")
    for x in sorted(set(fired_attack) | set(fired_normal)):
        print(f"| {x} | {fired_attack.get(x, 0)} of {n_attacks} | {fired_normal.get(x, 0)} of {a.days} |")
    detected = sum(1 for _, d, _ in rows if d)
    print(f"\nrecall (any signal): {detected}/{n_attacks}; precision over backups: "
          f"{detected}/{detected + alarms}")
    print(f"first backup {first:.2f} s; incremental median {sorted(incr)[len(incr) // 2]:.2f} s")
    shutil.rmtree(a.work, ignore_errors=True)


if __name__ == "__main__":
    main()
