#!/usr/bin/env python3
"""Labelled benchmark of holdfast's detection (issue 11, "The bar").

    python3 bench/detect.py [--users 100] [--size-mb 100] [--days 30]
                            [--holdfast target/release/holdfast] [--work DIR]
    python3 bench/detect.py --size-mb 500 --days 8 --no-attacks   # timings only

Corpus: shared/bench/maildir.py `make` (seeded), plus what the normal life
of a spool adds to it before the first backup: a `.Spam` folder per user
holding 30 days of spam (a server-side filter, retention 30 days), an empty
`.Trash`, and for the user with the largest mailbox a mailing-list folder
`.Lists` of 300 messages.

Normal days (labelled negative; one backup after each, exit 5 is a false
alarm): `maildir.py day` (deliveries, flag renames new/ -> cur/, deletions),
then, all seeded per day:
  * spam delivered into .Spam; list mail into .Lists;
  * moves between folders: users file a few INBOX messages into .Archive;
    now and then one files half of their INBOX at once;
  * deletes as an IMAP client does them: a few messages moved to .Trash;
  * Trash expunges: .Trash auto-expunged after 7 days (by the save time in
    the file name), and now and then a user empties Trash;
  * a retention purge: weekly, .Spam messages older than 30 days removed;
  * on day --big-folder-day, the .Lists user deletes that whole folder
    (several hundred messages).
Moved messages get a new Maildir name with the day's time, as Dovecot does.

Attacks (labelled positive), each on its own copy of corpus, repository and
cache as they are after the normal days, each followed by ONE backup:
in-place encryption of 1%, 10%, 100% of the largest mailbox; encryption
with rename to .locked (maildir.py attack, 5% of all messages); deletion of
60% of the mailboxes; a wipe of the spool root (emptied). A slow burn on
its own copy encrypts 0.5% of the messages per day in place, with the
normal life going on, for 10 days, one backup per day.

Stolen client key, through a real vault (`holdfast vault serve` on
127.0.0.1, over its own copy; the thief has the client key, not its cache):
  * a snapshot dated ten years ahead: the thief backs up the real spool
    under libfaketime (`faketime -f +10y`), so only the time is wrong;
  * a flood of --flood empty snapshots (an empty directory with a note).
Judged from the vault's side: a refusal (counted as blocked), its log flags
(`snapshots --json`, anomalies "by": "vault"), and its alert hook. A normal
backup through the same vault first is a labelled negative (control).
Needs `faketime` (Debian: apt-get install faketime).

Informational, on their own copies and not counted in the rates: deletion
of 40% of the mailboxes (below the wipe's "more than half"), and a
retention policy introduced (every .Junk purged of mail over 30 days old).

Prints per attack whether the first backup after it is detected and by
which signals; per signal, precision and recall over the labelled backups;
the false alarm rate per 1,000 mailbox-days; backup timings.

Overhead: on each normal day from day 8 (when the volume baseline exists),
before the day's real backup, the same incremental backup runs
--overhead-reps times in pairs: on a hard-linked copy of the repository and
a copy of the cache, once as is and once with `backup --no-detect` (the same
files are skipped and read; the snapshot records "checked": "off"). The
spool is not touched.

Deterministic for a given binary and seed, except timings.
"""

import argparse
import importlib.util
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PASS = "benchmark passphrase"
TRASH_EXPUNGE_DAYS = 7
SPAM_RETENTION_DAYS = 30
SPAM_PER_USER_DAY = 0.08
LIST_PREFILL, LIST_PER_DAY = 300, 5
# Signals named "critical" here: those that say encryption or destruction
# (not a volume or deletion count, which normal admin work can reach).
CRITICAL = {"in_place", "entropy", "not_mail", "renames", "new_extension", "wipe"}


def sh(cmd, env=None, ok=(0,)):
    p = subprocess.run(cmd, env=env, capture_output=True)
    if p.returncode not in ok:
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr.decode()}")
    return p


def load_maildir(path):
    spec = importlib.util.spec_from_file_location("maildir", path)
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m


class Site:
    """A corpus, its repository and its client cache."""

    def __init__(self, hf, work, name):
        self.hf, self.dir = hf, os.path.join(work, name)
        self.mail = os.path.join(self.dir, "mail")
        self.repo = os.path.join(self.dir, "repo")
        self.keys = os.path.join(self.dir, "keys")
        self.cache = os.path.join(self.dir, "cache")

    def key(self, role):
        return os.path.join(self.keys, f"{role}.key")

    def env(self):
        e = dict(os.environ)
        e["HOLDFAST_CACHE_DIR"] = self.cache
        e["HOLDFAST_PASSPHRASE"] = PASS
        return e

    def backup(self, repo=None, src=None, cache=None, prefix=(), extra=()):
        """One backup: (exit code, client signals, seconds, report or None,
        stderr)."""
        cmd = list(prefix) + [self.hf, "backup", "--repo", repo or self.repo,
                              "--key", self.key("client"), "--json"] + list(extra)
        if cache:
            cmd += ["--cache-dir", cache]
        t, r0 = time.monotonic(), resource.getrusage(resource.RUSAGE_CHILDREN)
        p = subprocess.run(cmd + [src or self.mail], env=self.env(), capture_output=True)
        secs = time.monotonic() - t
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        # CPU seconds (user + system) of the backup: steadier than wall time
        # on a shared machine.
        self.last_cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        report = None
        if p.returncode in (0, 5):
            report = json.loads(p.stdout)[0]
        elif p.returncode != 1 or repo is None:
            sys.exit(f"backup failed ({p.returncode}): {p.stderr.decode()}")
        sig = [a["signal"] for a in (report or {}).get("anomalies", [])]
        return p.returncode, sig, secs, report, p.stderr.decode()

    def copy_to(self, other):
        """Copies corpus, keys, cache and repository to another site's
        paths (the cache remembers absolute paths: an attack must run where
        the backups ran). A full copy: a vault started on a copy appends to
        files in it."""
        shutil.rmtree(other.dir, ignore_errors=True)
        os.makedirs(other.dir)
        for sub in ("mail", "keys", "cache", "repo"):
            subprocess.run(["cp", "-a", os.path.join(self.dir, sub), os.path.join(other.dir, sub)],
                           check=True)


class Vault:
    """`holdfast vault serve` on 127.0.0.1 over a site's repository, with an
    alert hook writing to a file."""

    def __init__(self, site):
        self.alerts = os.path.join(site.dir, "alerts.txt")
        self.errpath = os.path.join(site.dir, "vault.err")
        self.p = subprocess.Popen(
            [site.hf, "vault", "serve", "--repo", site.repo, "--key", site.key("vault"),
             "--listen", "127.0.0.1:0",
             "--alert-cmd", f'echo "$HOLDFAST_ALERT" >> {self.alerts}'],
            env=site.env(), stdout=subprocess.PIPE, stderr=open(self.errpath, "wb"))
        line = self.p.stdout.readline().decode()
        urls = [w for w in line.split() if w.startswith("https://")]
        if not urls:
            self.p.kill()
            sys.exit(f"vault did not start: {line}{open(self.errpath).read()}")
        self.url = urls[0]
        threading.Thread(target=self.p.stdout.read, daemon=True).start()

    def stderr(self):
        with open(self.errpath, errors="replace") as f:
            return f.read()

    def alert_lines(self):
        time.sleep(0.5)  # the hook runs asynchronously
        try:
            with open(self.alerts, errors="replace") as f:
                return [l for l in f.read().splitlines() if l.strip()]
        except FileNotFoundError:
            return []

    def stop(self):
        self.p.terminate()
        try:
            self.p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()


def listed(site, url):
    p = sh([site.hf, "snapshots", "--repo", url, "--key", site.key("client"), "--json"],
           env=site.env(), ok=(0, 1))
    if p.returncode != 0:  # fall back to the auditor key
        p = sh([site.hf, "snapshots", "--repo", url, "--key", site.key("auditor"), "--json"],
               env=site.env())
    return {s["id"]: s for s in json.loads(p.stdout)}


def by_vault(s):
    return sorted({a["signal"] for a in s.get("anomalies", []) if a.get("by") == "vault"})


# ---------------------------------------------------------------- the spool

def messages(root, user=None):
    out = []
    base = os.path.join(root, user) if user else root
    for d, dirs, files in os.walk(base):
        dirs.sort()
        if os.path.basename(d) in ("cur", "new"):
            out.extend(os.path.join(d, f) for f in sorted(files))
    return out


def folder_msgs(mail, user, folder):
    fd = os.path.join(mail, user, "Maildir", folder)
    out = []
    for sub in ("cur", "new"):
        d = os.path.join(fd, sub)
        if os.path.isdir(d):
            out.extend(os.path.join(d, f) for f in sorted(os.listdir(d)))
    return out


def saved_at(path):
    try:
        return int(os.path.basename(path).split(".")[0])
    except ValueError:
        return 0


class Life:
    """The normal life of the spool on top of `maildir.py day`."""

    def __init__(self, md, mail, users, heavy):
        self.md, self.mail, self.users, self.heavy = md, mail, users, heavy
        self.stats = {}

    def when(self, day):
        return self.md.BASE_TIME + 86400 * (1 + day)  # as maildir.py day

    def bump(self, k, n=1):
        self.stats[k] = self.stats.get(k, 0) + n

    def move(self, rng, src, user, folder, t):
        name = os.path.basename(src)
        base, _, flags = name.partition(":2,")
        size = base.rsplit("S=", 1)[-1] if "S=" in base else str(os.path.getsize(src))
        new = f"{t}.M{rng.randrange(10**6)}P{rng.randrange(1, 65536)}.mx,S={size}:2,{flags}"
        os.rename(src, os.path.join(self.mail, user, "Maildir", folder, "cur", new))

    def prepare(self, seed):
        """What a live spool holds beyond maildir.py make (before the first
        backup): Trash and Spam folders, 30 days of spam, a list folder."""
        for u in self.users:
            for f in (".Trash", ".Spam"):
                for sub in ("cur", "new", "tmp"):
                    os.makedirs(os.path.join(self.mail, u, "Maildir", f, sub), exist_ok=True)
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(self.mail, self.heavy, "Maildir", ".Lists", sub), exist_ok=True)
        corpus = self.md.Corpus(seed)
        for d in range(1 - SPAM_RETENTION_DAYS, 1):
            self.spam(corpus, d)
        t0 = self.when(0)
        for k in range(LIST_PREFILL):
            self.md.deliver(corpus, self.mail, self.heavy, t0 - 86400 * k - corpus.rng.randrange(86400),
                            ".Lists", "cur")
        self.stats = {}

    def spam(self, corpus, day):
        t = self.when(day)
        for u in self.users:
            if corpus.rng.random() < SPAM_PER_USER_DAY:
                self.md.deliver(corpus, self.mail, u, t - corpus.rng.randrange(86400), ".Spam", "new")
                self.bump("spam delivered")

    def day(self, day, big_folder_day):
        rng = random.Random(1000 + day)
        corpus = self.md.Corpus(2000 + day)
        t = self.when(day)
        self.spam(corpus, day)
        if os.path.isdir(os.path.join(self.mail, self.heavy, "Maildir", ".Lists")):
            for _ in range(LIST_PER_DAY):
                self.md.deliver(corpus, self.mail, self.heavy, t - rng.randrange(86400), ".Lists", "new")
                self.bump("list mail delivered")
        # Now and then one user files half of a full INBOX at once.
        full = [u for u in self.users
                if sum("/cur/" in p for p in folder_msgs(self.mail, u, "")) >= 20]
        filer = rng.choice(full) if full and rng.random() < 0.15 else None
        for u in self.users:
            inbox = [p for p in folder_msgs(self.mail, u, "") if "/cur/" in p]
            if u == filer:
                for p in rng.sample(inbox, len(inbox) // 2):
                    self.move(rng, p, u, ".Archive", t)
                    self.bump("moved INBOX -> .Archive (bulk filing, half an INBOX)")
            elif rng.random() < 0.2 and inbox:
                for p in rng.sample(inbox, min(len(inbox), rng.randint(1, 8))):
                    self.move(rng, p, u, ".Archive", t)
                    self.bump("moved INBOX -> .Archive")
            if rng.random() < 0.2:
                pool = [p for f in ("", ".Archive", ".Sent") for p in folder_msgs(self.mail, u, f)
                        if "/cur/" in p]
                for p in rng.sample(pool, min(len(pool), rng.randint(1, 4))):
                    self.move(rng, p, u, ".Trash", t)
                    self.bump("moved to .Trash (IMAP delete)")
            trash = folder_msgs(self.mail, u, ".Trash")
            if rng.random() < 0.03:
                for p in trash:
                    os.remove(p)
                    self.bump("expunged: user emptied Trash")
            else:
                for p in trash:
                    if saved_at(p) < t - TRASH_EXPUNGE_DAYS * 86400:
                        os.remove(p)
                        self.bump(f"expunged: .Trash auto-expunge after {TRASH_EXPUNGE_DAYS} d")
            if day % 7 == 0:
                for p in folder_msgs(self.mail, u, ".Spam"):
                    if saved_at(p) < t - SPAM_RETENTION_DAYS * 86400:
                        os.remove(p)
                        self.bump(f"retention purge: .Spam older than {SPAM_RETENTION_DAYS} d")
        if day == big_folder_day:
            d = os.path.join(self.mail, self.heavy, "Maildir", ".Lists")
            if os.path.isdir(d):
                n = len(folder_msgs(self.mail, self.heavy, ".Lists"))
                shutil.rmtree(d)
                self.bump(f"one user deleted a whole folder (.Lists, day {day})", n)
                return n
        return 0


def encrypt_in_place(paths, rng):
    for p in paths:
        n = os.path.getsize(p)
        with open(p, "wb") as f:
            f.write(rng.randbytes(n))


def median(v):
    v = sorted(v)
    return v[len(v) // 2] if v else float("nan")


def overhead_trial(site, detect, k):
    """One incremental backup of the site's spool as it is now, on a
    hard-linked copy of its repository and a copy of its cache, with or
    without `--no-detect`: (seconds, files read, signals, CPU seconds)."""
    trial = os.path.join(site.dir, f"trial-{k}")
    shutil.rmtree(trial, ignore_errors=True)
    os.makedirs(os.path.join(trial, "cache"))
    subprocess.run(["cp", "-al", site.repo, os.path.join(trial, "repo")], check=True)
    for name in os.listdir(site.cache):
        src, dst = os.path.join(site.cache, name), os.path.join(trial, "cache", name)
        if os.path.isfile(src):
            shutil.copy2(src, dst)
    code, sig, secs, rep, err = site.backup(repo=os.path.join(trial, "repo"),
                                            cache=os.path.join(trial, "cache"),
                                            extra=() if detect else ("--no-detect",))
    shutil.rmtree(trial, ignore_errors=True)
    want = "compared" if detect else "off"
    if rep.get("checked") != want:
        sys.exit(f"overhead trial: the backup says checked={rep.get('checked')!r}, not {want!r}")
    return secs, rep["files_read"], sig, site.last_cpu


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=100)
    ap.add_argument("--size-mb", type=int, default=100)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--big-folder-day", type=int, default=20)
    ap.add_argument("--flood", type=int, default=125, help="empty snapshots posted with the stolen key")
    ap.add_argument("--no-attacks", action="store_true", help="normal days and timings only")
    ap.add_argument("--overhead-reps", type=int, default=2,
                    help="paired backups with and without detection on each normal day from day 8")
    ap.add_argument("--holdfast", help="the holdfast binary (default: cargo build --release here)")
    ap.add_argument("--work", default=os.path.join(ROOT, "bench", "work-detect"))
    ap.add_argument("--keep", action="store_true", help="leave the work directory")
    ap.add_argument("--maildir-py", default=os.path.join(ROOT, "..", "shared", "bench", "maildir.py"))
    a = ap.parse_args()
    if a.holdfast:
        hf = os.path.abspath(a.holdfast)
    else:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "holdfast-cli"], cwd=ROOT, check=True)
        hf = os.path.join(ROOT, "target", "release", "holdfast")
    md = load_maildir(a.maildir_py)
    mdp = [sys.executable, a.maildir_py]
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())

    base = Site(hf, a.work, "base")
    os.makedirs(base.dir)
    sh(mdp + ["make", base.mail, "--users", str(a.users), "--size-mb", str(a.size_mb),
              "--seed", str(a.seed)])
    users = sorted(os.listdir(base.mail))
    sizes = {u: len(messages(base.mail, u)) for u in users}
    heavy = max(users, key=lambda u: (sizes[u], u))
    life = Life(md, base.mail, users, heavy)
    life.prepare(a.seed + 500)
    n_msgs0 = len(messages(base.mail))
    bytes0 = sum(os.path.getsize(p) for p in messages(base.mail))
    sh([hf, "init", base.repo, "--keys", base.keys], env=base.env())
    code, sig, first, _, err = base.backup()
    assert code == 0, (sig, err)

    # ------------------------------------------------ normal days
    obs = []  # (label, scenario, signals set, detected)
    normal_rows, incr = [], []
    alarms = critical = 0
    big_n = 0
    pairs = []  # (day, (secs, files read, checked) with detection, same without)
    for day in range(1, a.days + 1):
        sh(mdp + ["day", base.mail, "--seed", str(day)])
        big_n += life.day(day, a.big_folder_day)
        if day >= 8:
            for k in range(a.overhead_reps):
                # Alternate the order, so that neither side always gets the
                # cold page cache.
                order = (True, False) if (day + k) % 2 == 0 else (False, True)
                r = {d: overhead_trial(base, d, k) for d in order}
                if r[True] and r[False]:
                    pairs.append((day, r[True], r[False]))
        code, sig, secs, rep, err = base.backup()
        incr.append((secs, rep["files_read"], rep["new_bytes"]))
        alarms += code == 5
        crit = sorted(set(sig) & CRITICAL)
        critical += bool(crit)
        obs.append(("normal", f"day {day}", set(sig), code == 5))
        if code == 5:
            detail = "; ".join(f"{x['signal']}: {x['detail']}" for x in rep["anomalies"])
            normal_rows.append((day, detail))
            print(f"normal day {day}: FALSE ALARM {detail}", file=sys.stderr)
    n_msgs1 = len(messages(base.mail))
    normal_stats = dict(life.stats)

    rows, burn, vault_rows = [], None, []
    burn_days = []
    if not a.no_attacks:
        rng = random.Random(a.seed * 7 + 7)
        victim = heavy
        n_victim = len(messages(base.mail, victim))

        def one_mailbox(frac):
            def f(s):
                ms = messages(s.mail, victim)
                encrypt_in_place(rng.sample(ms, max(1, round(len(ms) * frac))), rng)
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
            (f"in-place encryption, 1% of one mailbox ({max(1, round(n_victim * .01))} of {n_victim})",
             one_mailbox(0.01)),
            (f"in-place encryption, 10% of one mailbox ({max(1, round(n_victim * .1))} of {n_victim})",
             one_mailbox(0.10)),
            (f"in-place encryption, 100% of one mailbox ({n_victim})", one_mailbox(1.0)),
            ("encryption with rename to .locked, 5% of all messages", locked),
            ("deletion of 60% of the mailboxes", delete_mailboxes),
            ("wipe of the spool root (emptied)", wipe),
        ]
        pristine = Site(hf, a.work, "pristine")
        base.copy_to(pristine)
        # The copy has new inodes: one backup re-reads it (and finds nothing).
        code, sig, _, _, err = base.backup()
        assert code == 0, (sig, err)
        base.copy_to(pristine)
        for name, act in attacks:
            pristine.copy_to(base)
            act(base)
            code, sig, _, rep, _ = base.backup()
            rows.append((name, code == 5, sig))
            obs.append(("attack", name, set(sig), code == 5))

        # Slow burn: 0.5% of the messages per day, with the normal life.
        pristine.copy_to(base)
        life.mail = base.mail
        total = len(messages(base.mail))
        encrypted = set()
        for d in range(1, 11):
            day = a.days + d
            sh(mdp + ["day", base.mail, "--seed", str(day)])
            life.day(day, -1)
            pool = [m for m in messages(base.mail) if m not in encrypted]
            hit = rng.sample(pool, max(1, round(total * 0.005)))
            encrypt_in_place(hit, rng)
            encrypted.update(hit)
            code, sig, _, _, _ = base.backup()
            pct = 100 * len(encrypted) / total
            burn_days.append((d, pct, code == 5, sig))
            if burn is None and code == 5:
                burn = (d, pct, sig)
        obs.append(("attack", "slow burn, first day (0.5%)", set(burn_days[0][3]), burn_days[0][2]))
        rows.append(("slow burn, 0.5% of messages per day (first day)", burn_days[0][2], burn_days[0][3]))

        # Stolen client key, through a vault.
        thief_src = os.path.join(a.work, "thief-empty")
        os.makedirs(thief_src, exist_ok=True)
        with open(os.path.join(thief_src, "README"), "w") as f:
            f.write("your mail is gone\n")

        def with_vault(name, attack):
            pristine.copy_to(base)
            v = Vault(base)
            try:
                code, sig, _, rep, err = base.backup(repo=v.url)
                if code not in (0, 5):
                    sys.exit(f"normal backup through the vault failed: {err}\n{v.stderr()}")
                healthy = rep["snapshot"]
                before = listed(base, v.url)
                ctl = by_vault(before[healthy])
                obs.append(("normal", "control: a normal backup through the vault",
                            set(sig) | set(ctl), code == 5 or bool(ctl)))
                n_alerts0 = len(v.alert_lines())
                res = attack(v, healthy, before)
                res["alerts"] = v.alert_lines()[n_alerts0:]
                after = listed(base, v.url)
                lock0 = before[healthy].get("locked_until_ns") or 0
                lock1 = after.get(healthy, {}).get("locked_until_ns") or 0
                res["held_days"] = (lock1 - time.time_ns()) / 86400e9 if lock1 > lock0 else None
                res["vault_alerts"] = v.stderr().count("holdfast vault ALERT:")
            finally:
                v.stop()
            vault_rows.append((name, res))
            first = res["first"]
            obs.append(("attack", name, first["signals"], first["detected"]))
            rows.append((name, first["detected"], sorted(first["signals"])))

        def future(v, healthy, before):
            thief_cache = os.path.join(base.dir, "thief-cache")
            n_err0 = len(v.stderr())
            code, sig, _, rep, err = base.backup(repo=v.url, cache=thief_cache,
                                                 prefix=("faketime", "-f", "+10y"))
            time.sleep(0.5)
            after = listed(base, v.url)
            res = {"exit": code, "client_stderr": err.strip().splitlines()[-1:] if err.strip() else []}
            sigs = set()
            if code in (0, 5):
                sid = rep["snapshot"]
                sigs |= set(by_vault(after.get(sid, {}))) | set(sig)
                res["stored"] = sid in after
            else:
                # A refusal is a block, whichever check of the vault made it.
                if "refused" in err:
                    status = err.split("refused (", 1)[1].split(")", 1)[0] if "refused (" in err else "?"
                    sigs.add(f"refused ({status})")
                res["stored"] = False
            res["vault_lines"] = [l for l in v.stderr()[n_err0:].splitlines() if l.strip()][-3:]
            res["first"] = {"signals": sigs, "detected": bool(sigs)}
            return res

        def flood(v, healthy, before):
            thief_cache = os.path.join(base.dir, "thief-cache")
            seq = []
            for i in range(a.flood):
                code, sig, _, rep, err = base.backup(repo=v.url, src=thief_src, cache=thief_cache)
                seq.append((code, rep["snapshot"] if rep else None, sig,
                            err.strip().splitlines()[-1] if code == 1 and err.strip() else ""))
            after = listed(base, v.url)
            per = []
            for code, sid, sig, err in seq:
                if sid:
                    s = set(by_vault(after.get(sid, {}))) | set(sig)
                else:
                    s = {"refused (429)" if "429" in err else "refused"} if "refused" in err else set()
                per.append(s)
            res = {"seq": seq, "per": per,
                   "first": {"signals": per[0], "detected": bool(per[0])}}
            return res

        with_vault("stolen key: a snapshot dated ten years ahead", future)
        with_vault(f"stolen key: a flood of {a.flood} empty snapshots", flood)

        # Informational, beyond the bar: fewer mailboxes deleted than the
        # wipe's "more than half" (which signal, if any, is left?).
        extra = []
        pristine.copy_to(base)
        for u in random.Random(a.seed + 40).sample(users, int(len(users) * 0.4)):
            shutil.rmtree(os.path.join(base.mail, u))
        code, sig, _, rep, _ = base.backup()
        extra.append(("attack beyond the bar: deletion of 40% of the mailboxes", code == 5,
                      "; ".join(f"{x['signal']}: {x['detail']}" for x in rep["anomalies"])))

        # Informational: a retention policy introduced (first run over old mail).
        pristine.copy_to(base)
        cut = life.when(a.days) - SPAM_RETENTION_DAYS * 86400
        purged = 0
        for u in users:
            for p in folder_msgs(base.mail, u, ".Junk"):
                if saved_at(p) < cut:
                    os.remove(p)
                    purged += 1
        code, sig, _, rep, _ = base.backup()
        extra.append((f"admin event: a retention policy introduced, every user's .Junk older than "
                      f"{SPAM_RETENTION_DAYS} d purged at once ({purged} messages)", code == 5,
                      "; ".join(f"{x['signal']}: {x['detail']}" for x in rep["anomalies"])))

    # ------------------------------------------------ report
    out = []
    p = out.append
    p(f"# holdfast detection — {a.users} users, {a.size_mb} MB, {a.days} normal days (seed {a.seed})\n")
    p(f"Run {started}; binary {hf}.")
    p(f"Corpus before the first backup: {n_msgs0} messages, {bytes0 / 1e6:.1f} MB "
      f"(maildir.py make plus .Spam, .Trash, .Lists); after the normal days: {n_msgs1} messages.\n")
    p("## Normal days\n")
    p("| activity over the normal days | messages |")
    p("|---|---|")
    p(f"| maildir.py day (deliveries, flag renames, deletions) | {a.days} days |")
    for k, n in sorted(normal_stats.items()):
        p(f"| {k} | {n} |")
    mbd = a.users * a.days
    p("")
    p(f"False alarms: {alarms} backup(s) with exit 5 out of {a.days} = "
      f"**{1000 * alarms / mbd:.2f} per 1,000 mailbox-days** ({a.users} mailboxes × {a.days} days; "
      f"target ≤ 1); critical (signals {', '.join(sorted(CRITICAL))}): {critical}.")
    if normal_rows:
        p("\n| normal day | findings |")
        p("|---|---|")
        for d, det in normal_rows:
            p(f"| {d} | {det} |")
    if not a.no_attacks:
        p("\n## Attacks (each on its own copy; detected = exit 5 or a vault flag or refusal "
          "at the first backup after it)\n")
        p("| attack | detected at the first backup | signals |")
        p("|---|---|---|")
        for name, det, sig in rows:
            p(f"| {name} | {'yes' if det else '**NO**'} | {', '.join(sorted(sig))} |")
        p("\nSlow burn (0.5% of messages per day, with the normal life):\n")
        p("| day | encrypted | exit 5 | signals |")
        p("|---|---|---|---|")
        for d, pct, det, sig in burn_days:
            p(f"| {d} | {pct:.1f}% | {'yes' if det else 'no'} | {', '.join(sig)} |")
        if burn:
            p(f"\nSlow burn first detected on day {burn[0]}, with {burn[1]:.1f}% of the messages "
              f"encrypted (target: by 2%): {'met' if burn[1] <= 2.0 + 1e-9 else 'MISSED'}.")
        else:
            p("\nSlow burn NOT detected in 10 days (target: by 2%): MISSED.")
        p("\n## Stolen client key, judged by the vault\n")
        for name, res in vault_rows:
            p(f"**{name}.**")
            if "seq" in res:
                per, seq = res["per"], res["seq"]
                ok = [i for i, (c, _, _, _) in enumerate(seq) if c in (0, 5)]
                refused = [i for i, (c, _, _, _) in enumerate(seq) if c == 1]
                flagged = [i for i in ok if per[i]]
                first_burst = next((i + 1 for i in ok if "burst" in per[i]), None)
                p(f"{len(ok)} stored, {len(flagged)} of them flagged by the vault; "
                  f"{len(refused)} refused"
                  + (f" (from #{refused[0] + 1}: {seq[refused[0]][3]})" if refused else "") + ".")
                kinds = {}
                for i in ok:
                    for s in per[i]:
                        kinds[s] = kinds.get(s, 0) + 1
                p("Flags on stored ones: " + ", ".join(f"{k} ×{n}" for k, n in sorted(kinds.items()))
                  + (f"; burst from snapshot #{first_burst}" if first_burst else "") + ".")
            else:
                p(f"Thief's backup exit {res['exit']}"
                  + (f" ({res['client_stderr'][0]})" if res['client_stderr'] else "")
                  + f"; stored: {'yes' if res['stored'] else 'no'}; signals: "
                  + (", ".join(sorted(res['first']['signals'])) or "none") + ".")
                p("Vault's stderr for it: " + (" / ".join(f"`{l[:200]}`" for l in res["vault_lines"])
                                               or "nothing") + ".")
            p(f"Vault ALERT lines on stderr (whole run): {res['vault_alerts']}; "
              f"alert hook lines for the attack (the hook is rate-limited): {len(res['alerts'])}"
              + (f", e.g. `{res['alerts'][0][:160]}`" if res["alerts"] else "") + ".")
            p("Last healthy snapshot's lock: "
              + (f"extended, now {res['held_days']:.1f} days ahead." if res["held_days"] is not None
                 else "not extended.") + "\n")
        p("Informational, not counted above (each on its own copy, one backup):\n")
        p("| event | exit 5 | findings |")
        p("|---|---|---|")
        for name, det, findings in extra:
            p(f"| {name} | {'yes' if det else 'no'} | {findings} |")

        # Precision and recall per signal over the labelled backups.
        pos = [o for o in obs if o[0] == "attack"]
        neg = [o for o in obs if o[0] == "normal"]
        known = ["in_place", "entropy", "not_mail", "renames", "new_extension", "deletions", "wipe",
                 "volume", "shrink", "burst", "client_reported"]
        seen = set().union(*(o[2] for o in obs))
        sigs = known + sorted(seen - set(known))
        p(f"\n## Precision and recall per signal\n")
        p(f"Over the labelled backups: {len(pos)} attack scenarios (first backup after each) and "
          f"{len(neg)} normal backups ({a.days} days + {len(neg) - a.days} vault controls). "
          "Recall is over all attacks, so a signal built for one kind of attack cannot reach 1; "
          "the attacks it fired on are listed.\n")
        p("| signal | by | fired on attacks | on normal backups | precision | recall | "
          "attacks only it caught | attacks it fired on |")
        p("|---|---|---|---|---|---|---|---|")
        vault_sigs = {"shrink", "burst", "client_reported"}
        for s in sigs + ["(any)"]:
            hit = (lambda o: o[3]) if s == "(any)" else (lambda o, s=s: s in o[2])
            tp = sum(1 for o in pos if hit(o))
            fp = sum(1 for o in neg if hit(o))
            prec = f"{tp / (tp + fp):.2f}" if tp + fp else "–"
            names = "; ".join(o[1].split(" (")[0] for o in pos if hit(o)) if s != "(any)" else ""
            only = sum(1 for o in pos if hit(o) and o[2] == {s})
            by = "" if s == "(any)" else "vault" if s in vault_sigs or s.startswith("refused") else "client"
            p(f"| {s} | {by} | {tp} | {fp} | {prec} | {tp / len(pos):.2f} | "
              f"{only if s != '(any)' else ''} | {names} |")

    p("\n## Timings\n")
    s_med = median([x[0] for x in incr])
    p(f"First backup {first:.2f} s; incremental after a normal day: median {s_med:.2f} s "
      f"(min {min(x[0] for x in incr):.2f}, max {max(x[0] for x in incr):.2f}), "
      f"median {median([x[1] for x in incr])} files read, "
      f"{median([x[2] for x in incr]) / 1e6:.1f} MB new.")
    if pairs:
        on = [x[1][0] for x in pairs]
        off = [x[2][0] for x in pairs]
        diff = [x[1][0] - x[2][0] for x in pairs]
        same_reads = all(x[1][1] == x[2][1] for x in pairs)
        # Proof that the second side ran without detection: where the first
        # found something, it found nothing.
        flagged = [x for x in pairs if x[1][2]]
        quiet = sum(1 for x in flagged if not x[2][2])
        def q(v):
            v = sorted(v)
            return v[len(v) // 4], v[len(v) // 2], v[(3 * len(v)) // 4]
        cpu_on, cpu_off = [x[1][3] for x in pairs], [x[2][3] for x in pairs]
        cpu_diff = [x[1][3] - x[2][3] for x in pairs]
        p(f"\nDetection overhead, {len(pairs)} paired incremental backups on days 8–{a.days} "
          f"(each pair: the same spool state, a hard-linked copy of the repository, a copy of the "
          f"cache; without detection = `backup --no-detect`, whose report says \"checked\": "
          f"\"off\"): with detection median "
          f"{median(on):.3f} s, without {median(off):.3f} s; median paired difference "
          f"{median(diff) * 1000:+.0f} ms = **{100 * median(diff) / median(off):+.1f}%** of the "
          f"backup without detection (target ≤ 10%). Same files read in every pair: "
          f"{'yes' if same_reads else 'NO'}; pairs where the backup with detection found "
          f"something: {len(flagged)}, and the one without found nothing in {quiet} of them.")
        p("\n| per pair | with detection | without | paired difference (quartiles) | of without |")
        p("|---|---|---|---|---|")
        for label, a_, b_, d_ in (("wall time", on, off, diff), ("CPU time (user+sys)", cpu_on, cpu_off, cpu_diff)):
            d1 = q(d_)
            p(f"| {label} | {median(a_):.3f} s | {median(b_):.3f} s | "
              f"{d1[0] * 1000:+.0f} / {d1[1] * 1000:+.0f} / {d1[2] * 1000:+.0f} ms | "
              f"{100 * d1[1] / median(b_):+.1f}% |")
    print("\n".join(out))
    if not a.keep:
        shutil.rmtree(a.work, ignore_errors=True)


if __name__ == "__main__":
    main()
