#!/usr/bin/env python3
"""holdfast vs restic on the same Maildir corpus, in one run.

    python3 bench/compare.py [--users 400] [--size-mb 500] [--reps 3]

For each repetition: a fresh deterministic corpus (shared/bench/maildir.py
make), first backup with each tool, one day of mail activity (`day`), an
incremental backup with each tool, then a restore of the latest snapshot
with each tool, checked against the corpus digest. The order of the two tools
alternates between repetitions. Times are wall-clock seconds, memory is peak
RSS (/usr/bin/time). Medians are reported, with the ratio holdfast / restic,
in bench/results/latest.md. Page cache is warm for both tools alike.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGETS = {"first backup": 0.50, "incremental": 0.33, "restore": 0.60, "repository size": 1.00}


def run(cmd, env=None, check=True):
    """Runs cmd under /usr/bin/time; returns (seconds, peak RSS in KiB)."""
    tfile = "/tmp/holdfast-bench-time"
    t0 = time.monotonic()
    p = subprocess.run(["/usr/bin/time", "-o", tfile, "-f", "%e %M"] + cmd,
                       env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.monotonic() - t0
    if check and p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stderr.decode()}")
    _, rss = open(tfile).read().split()[-2:]
    return wall, int(rss)


def du(path):
    total = 0
    for d, _, fs in os.walk(path):
        for f in fs:
            total += os.lstat(os.path.join(d, f)).st_size
    return total


def digest(maildir_py, path):
    return subprocess.run([sys.executable, maildir_py, "digest", path],
                          check=True, capture_output=True).stdout.strip()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=400)
    ap.add_argument("--size-mb", type=int, default=500)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--work", default=os.path.join(ROOT, "bench", "work"))
    ap.add_argument("--maildir-py", default=os.path.join(ROOT, "..", "shared", "bench", "maildir.py"))
    a = ap.parse_args()
    if not shutil.which("restic"):
        sys.exit("restic not found: apt-get install restic")
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "holdfast-cli"], cwd=ROOT, check=True)
    hf = os.path.join(ROOT, "target", "release", "holdfast")
    restic_version = subprocess.run(["restic", "version"], capture_output=True, text=True).stdout.strip()

    res = {k: {"holdfast": [], "restic": []} for k in
           ["first backup", "incremental", "restore", "repository size", "peak RSS"]}
    for rep in range(a.reps):
        w = os.path.join(a.work, f"rep{rep}")
        shutil.rmtree(w, ignore_errors=True)
        os.makedirs(w)
        corpus = os.path.join(w, "corpus")
        subprocess.run([sys.executable, a.maildir_py, "make", corpus, "--users", str(a.users),
                        "--size-mb", str(a.size_mb)], check=True, stdout=subprocess.DEVNULL)
        env = dict(os.environ, HOLDFAST_PASSPHRASE="bench passphrase",
                   HOLDFAST_CACHE_DIR=os.path.join(w, "hf-cache"),
                   RESTIC_PASSWORD="bench", RESTIC_CACHE_DIR=os.path.join(w, "restic-cache"))
        hrepo, rrepo = os.path.join(w, "hf-repo"), os.path.join(w, "restic-repo")
        subprocess.run([hf, "init", hrepo, "--keys", os.path.join(w, "keys")], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run(["restic", "init", "-q", "-r", rrepo], env=env, check=True)
        hkey, rkey = os.path.join(w, "keys", "client.key"), os.path.join(w, "keys", "restore.key")
        tools = {
            "holdfast": {
                "backup": [hf, "backup", "--repo", hrepo, "--key", hkey, corpus],
                "restore": lambda t: [hf, "restore", "--repo", hrepo, "--key", rkey, "latest", t],
                "repo": hrepo,
            },
            "restic": {
                "backup": ["restic", "-r", rrepo, "backup", "-q", corpus],
                "restore": lambda t: ["restic", "-r", rrepo, "restore", "-q", "latest", "--target", t],
                "repo": rrepo,
            },
        }
        order = ["holdfast", "restic"] if rep % 2 == 0 else ["restic", "holdfast"]
        peak = {"holdfast": 0, "restic": 0}
        for name in order:
            subprocess.run(["sync"])
            s, m = run(tools[name]["backup"], env)
            res["first backup"][name].append(s)
            peak[name] = max(peak[name], m)
        subprocess.run([sys.executable, a.maildir_py, "day", corpus], check=True, stdout=subprocess.DEVNULL)
        want = digest(a.maildir_py, corpus)
        for name in order:
            subprocess.run(["sync"])
            s, m = run(tools[name]["backup"], env)
            res["incremental"][name].append(s)
            peak[name] = max(peak[name], m)
        for name in order:
            target = os.path.join(w, f"restore-{name}")
            subprocess.run(["sync"])
            s, m = run(tools[name]["restore"](target), env)
            res["restore"][name].append(s)
            peak[name] = max(peak[name], m)
            # holdfast stores each path under its last component; restic
            # under the full absolute path.
            got = os.path.join(target, "corpus") if name == "holdfast" else target + corpus
            if digest(a.maildir_py, got) != want:
                sys.exit(f"{name}: restored tree differs from the corpus")
        for name in order:
            res["repository size"][name].append(du(tools[name]["repo"]) / 2**20)
            res["peak RSS"][name].append(peak[name] / 1024)
        print(f"rep {rep + 1}/{a.reps}: " + ", ".join(
            f"{k} {res[k]['holdfast'][-1]:.2f}/{res[k]['restic'][-1]:.2f}" for k in res), flush=True)
        # Each repetition's files are kept until the end: deleting 500 MB of
        # small files just before the next run slows ext4 inode creation
        # (recently deleted inodes) and would penalise whichever tool runs next.

    lines = [f"# holdfast vs restic — {a.users} users, {a.size_mb} MB Maildir, "
             f"{a.reps} reps, medians", "",
             f"`python3 bench/compare.py --users {a.users} --size-mb {a.size_mb} --reps {a.reps}`, "
             f"{restic_version}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}", "",
             "| | holdfast | restic | ratio | target |", "|---|---|---|---|---|"]
    summary = {}
    for k, v in res.items():
        h, r = statistics.median(v["holdfast"]), statistics.median(v["restic"])
        unit = " MiB" if k in ("repository size", "peak RSS") else " s"
        ratio = h / r if r else float("nan")
        tgt = TARGETS.get(k)
        if k == "peak RSS":
            mark = f"≤ 64 MiB {'✓' if h <= 64 else '✗'}"
        else:
            mark = f"≤ {tgt:.2f} {'✓' if ratio <= tgt else '✗'}"
        lines.append(f"| {k} | {h:.2f}{unit} | {r:.2f}{unit} | {ratio:.2f} | {mark} |")
        summary[k] = {"holdfast": h, "restic": r, "ratio": ratio, "all": v}
    out = "\n".join(lines) + "\n"
    print(out)
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", "latest.md"), "w") as f:
        f.write(out)
    with open(os.path.join(ROOT, "bench", "results", "latest.json"), "w") as f:
        json.dump(summary, f, indent=1)
    shutil.rmtree(a.work, ignore_errors=True)


if __name__ == "__main__":
    main()
