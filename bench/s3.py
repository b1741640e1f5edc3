#!/usr/bin/env python3
"""holdfast (vault on S3 with Object Lock) vs restic (S3 backend), same corpus, same run.

    D=/tmp/hf-ceph RGW_PORT=17480 MON_PORT=13300 bash crates/cli/tests/ceph/up.sh
    AWS_ENDPOINT_URL=http://127.0.0.1:17480 AWS_ACCESS_KEY_ID=testing \\
      AWS_SECRET_ACCESS_KEY=testingsecret python3 bench/s3.py [--users 400] [--size-mb 500]

One repetition (the test server keeps objects in 2 GiB of RAM, and locked
objects cannot be deleted): a fresh corpus (shared/bench/maildir.py make),
then for holdfast: init on a fresh lock bucket, a vault serving it, first
backup through the vault, one `day`, incremental backup, restore through the
vault and straight from the bucket, a replica pull and an export from the
vault; for restic: init, backup, incremental, restore on its own bucket.
Every restore is checked by digest. Results: bench/results/s3.md.
"""

import argparse
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd, env, check=True):
    t0 = time.monotonic()
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wall = time.monotonic() - t0
    if check and p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stderr.decode()}")
    return wall, p.stdout.decode()


def digest(maildir_py, path):
    return subprocess.run([sys.executable, maildir_py, "digest", path],
                          check=True, capture_output=True).stdout.strip()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=400)
    ap.add_argument("--size-mb", type=int, default=500)
    ap.add_argument("--work", default=os.path.join(ROOT, "bench", "work", "s3"))
    ap.add_argument("--maildir-py", default=os.path.join(ROOT, "..", "shared", "bench", "maildir.py"))
    a = ap.parse_args()
    ep = os.environ.get("AWS_ENDPOINT_URL")
    if not ep:
        sys.exit("set AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (see --help)")
    subprocess.run(["cargo", "build", "--release", "-q"], cwd=ROOT, check=True)
    hf = os.path.join(ROOT, "target", "release", "holdfast")
    tag = str(int(time.time()))
    w = os.path.join(a.work, tag)
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(w)
    mail = os.path.join(w, "mail")
    subprocess.run([sys.executable, a.maildir_py, "make", mail, "--users", str(a.users),
                    "--size-mb", str(a.size_mb)], check=True, stdout=subprocess.DEVNULL)
    env = dict(os.environ, HOLDFAST_PASSPHRASE="bench passphrase", RESTIC_PASSWORD="bench",
               HOLDFAST_CACHE_DIR=os.path.join(w, "cache"))
    res = {}

    # holdfast: vault on S3.
    url = f"s3://hf-bench-{tag}/repo"
    keys = os.path.join(w, "keys")
    run([hf, "init", url, "--keys", keys], env)
    state = os.path.join(w, "vault-state")
    vault = subprocess.Popen([hf, "vault", "serve", "--repo", url, "--state", state, "--key",
                              os.path.join(keys, "vault.key"), "--listen", "127.0.0.1:0"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    line = vault.stdout.readline().decode()
    vurl = next(x for x in line.split() if x.startswith("https://"))
    ck = os.path.join(keys, "client.key")
    res["hf first"], _ = run([hf, "backup", "--repo", vurl, "--key", ck, mail], env)
    subprocess.run([sys.executable, a.maildir_py, "day", mail], check=True, stdout=subprocess.DEVNULL)
    want = digest(a.maildir_py, mail)
    res["hf incr"], _ = run([hf, "backup", "--repo", vurl, "--key", ck, mail], env)
    rk = os.path.join(keys, "restore.key")
    for name, repo in [("hf restore vault", vurl), ("hf restore s3", url)]:
        out = os.path.join(w, name.replace(" ", "-"))
        res[name], _ = run([hf, "restore", "--repo", repo, "--key", rk, "latest", out], env)
        assert digest(a.maildir_py, os.path.join(out, "mail")) == want, name
        shutil.rmtree(out)
    rep = os.path.join(w, "replica")
    res["hf replica pull"], _ = run([hf, "replica", "pull", "--from", vurl, "--key",
                                     os.path.join(keys, "replica.key"), "--into", rep], env)
    res["hf export"], _ = run([hf, "export", "--repo", vurl, "--key",
                               os.path.join(keys, "replica.key"), "--to", os.path.join(w, "bundle")], env)
    vault.terminate()
    vault.wait()
    stored = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(rep) for f in fs)

    # restic on its own bucket: a fresh corpus copy made the same way.
    mail2 = os.path.join(w, "mail2")
    subprocess.run([sys.executable, a.maildir_py, "make", mail2, "--users", str(a.users),
                    "--size-mb", str(a.size_mb)], check=True, stdout=subprocess.DEVNULL)
    os.rename(mail2, mail + ".r")
    shutil.rmtree(mail)
    os.rename(mail + ".r", mail)
    env["RESTIC_CACHE_DIR"] = os.path.join(w, "restic-cache")
    r = ["restic", "-r", f"s3:{ep}/restic-bench-{tag}"]
    run(r + ["init"], env)
    res["restic first"], _ = run(r + ["backup", mail], env)
    subprocess.run([sys.executable, a.maildir_py, "day", mail], check=True, stdout=subprocess.DEVNULL)
    want = digest(a.maildir_py, mail)
    res["restic incr"], _ = run(r + ["backup", mail], env)
    out = os.path.join(w, "restic-restore")
    res["restic restore"], _ = run(r + ["restore", "latest", "--target", out], env)
    assert digest(a.maildir_py, os.path.join(out, mail.lstrip("/"))) == want, "restic restore"

    mib = stored / 2**20
    lines = [
        f"# holdfast vault on S3 (Object Lock) vs restic on S3 — {time.strftime('%Y-%m-%d %H:%M')}",
        "",
        f"Corpus: maildir.py make --users {a.users} --size-mb {a.size_mb}, then `day`. "
        f"S3: {ep} (Ceph RGW, memstore). Release build, one repetition. "
        "Command: python3 bench/s3.py",
        "",
        "| step | holdfast | restic | ratio |",
        "|---|---|---|---|",
        f"| first backup (holdfast through the vault) | {res['hf first']:.2f} s | {res['restic first']:.2f} s | {res['hf first']/res['restic first']:.2f} |",
        f"| incremental after `day` | {res['hf incr']:.2f} s | {res['restic incr']:.2f} s | {res['hf incr']/res['restic incr']:.2f} |",
        f"| restore through the vault | {res['hf restore vault']:.2f} s | {res['restic restore']:.2f} s | {res['hf restore vault']/res['restic restore']:.2f} |",
        f"| restore straight from the bucket | {res['hf restore s3']:.2f} s | | |",
        f"| replica pull from the vault ({mib:.0f} MiB) | {res['hf replica pull']:.2f} s ({mib/res['hf replica pull']:.0f} MiB/s) | | |",
        f"| export (full bundle) | {res['hf export']:.2f} s ({mib/res['hf export']:.0f} MiB/s) | | |",
        "",
    ]
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", "s3.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
