//! Rotation of the vault key (issue 13, SPEC G7), with the real binary and
//! real vaults on 127.0.0.1: proposed by one admin, approved by the quorum,
//! executed by a vault that holds the new key; from then on the vault signs
//! checkpoints and presents TLS with the new key, and clients, replicas,
//! audits, bundles and restores follow through the log without a manual
//! step. A rotated-out key (leaked, say) signs nothing a reader accepts,
//! and the vault host alone cannot rotate.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::*;
use holdfast_core::governance::{Action, Proposal, vault_key_pop};
use holdfast_core::merkle::{self, Checkpoint};
use holdfast_core::vaultlog::{Entry, Event, frame, split_log};

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Everything a command said (problems are listed on stdout).
fn said(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A vault over `repo` with `key` (and maybe `--next-key`), like
/// `World::start_vault` but with a key of the test's choosing.
fn start(w: &World, repo: &str, key: &str, extra: &[&str]) -> VaultProc {
    let mut args = vec!["--reclaim-every-secs", "1"];
    args.extend_from_slice(extra);
    w.start_vault_key(repo, key, &args, &[])
}

/// `vault serve` that must refuse to start: its output.
fn refused_start(w: &World, key: &str, extra: &[&str]) -> Output {
    let repo = w.repo();
    let mut args = vec![
        "vault",
        "serve",
        "--repo",
        repo.as_str(),
        "--key",
        key,
        "--listen",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    let o = w
        .cmd(&args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!o.status.success(), "the vault started: {}", err(&o));
    o
}

/// The Ed25519 key in the certificate the vault at `url` presents.
fn tls_key_is(url: &str, key: &[u8; 32]) -> bool {
    let s = tls_from("127.0.0.1".parse().unwrap(), vault_addr(url)).unwrap();
    let der = s.conn.peer_certificates().unwrap()[0].to_vec();
    der.windows(32).any(|w| w == key)
}

fn public_of(path: &str) -> [u8; 32] {
    load_key(path).identity().unwrap().public()
}

/// The vault's log and a checkpoint over it signed by `key` (a forgery
/// when `key` is not the vault key the log's chain makes current).
fn resign(w: &World, key: &str) -> Vec<Vec<u8>> {
    resign_in(&w.path("repo"), key)
}

/// [`resign`] in the vault directory of `dir` (a repository, replica or
/// bundle).
fn resign_in(dir: &Path, key: &str) -> Vec<Vec<u8>> {
    let raw = std::fs::read(dir.join("vault/log")).unwrap();
    let entries: Vec<Vec<u8>> = split_log(&raw).0.into_iter().map(|e| e.to_vec()).collect();
    let leaves: Vec<_> = entries.iter().map(|e| merkle::leaf_hash(e)).collect();
    let k = load_key(key);
    let cp = Checkpoint::sign(
        k.config_id.0,
        entries.len() as u64,
        merkle::root(&leaves),
        holdfast_repo::now_ns(),
        k.identity().unwrap(),
    );
    std::fs::write(dir.join("vault/checkpoint"), cp.encode()).unwrap();
    entries
}

fn new_vault_key(w: &World, name: &str) -> (String, String) {
    let out = w.path(name).display().to_string();
    let o = w.ok(&[
        "key",
        "new",
        "vault",
        "--key",
        &w.key("vault"),
        "--out",
        &out,
    ]);
    assert!(o.contains("--next-key"), "{o}");
    (out.clone(), format!("{out}.pub"))
}

fn copy_dir(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .args(["-a", from.to_str().unwrap(), to.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn the_vault_key_rotates_and_clients_replicas_and_readers_follow() {
    let w = World::new();
    let keys = w.path("keys").display().to_string();
    w.ok(&["init", &w.repo(), "--keys", &keys, "--delay-secs", "1"]);
    let old_key = w.key("vault");
    let old = public_of(&old_key);
    let mut vault = start(&w, &w.repo(), &old_key, &[]);
    let url = vault.url.clone();
    let src = w.path("mail");
    make_maildir(&src, 2, 8, 131);
    let before = backup_via(&w, &url, &w.key("client"), &src);
    let d_before = digest(&src);
    let replica = w.path("replica");
    let pull = |url: &str| {
        w.run(&[
            "replica",
            "pull",
            "--from",
            url,
            "--key",
            &w.key("replica"),
            "--into",
            replica.to_str().unwrap(),
        ])
    };
    let o = pull(&url);
    assert!(o.status.success(), "{}", err(&o));
    w.ok(&["audit", "--repo", &url, "--key", &w.key("auditor")]);
    assert!(tls_key_is(&url, &old));

    // What a thief of the old vault key keeps: the state as it was.
    vault.stop();
    let stale = w.path("stale");
    copy_dir(&w.path("repo"), &stale);
    let mut vault = start(&w, &w.repo(), &old_key, &[]);
    let url = vault.url.clone();

    // The vault's operator makes the next key; an admin proposes it.
    let (new_key, new_pub) = new_vault_key(&w, "vault-2.key");
    let new = public_of(&new_key);
    let o = w.ok(&[
        "propose",
        "vault-key",
        "--repo",
        &url,
        "--key",
        &w.key("admin-1"),
        &new_pub,
    ]);
    assert!(o.contains("submitted"), "{o}");
    let p = w.proposals(&url);
    let fp = holdfast_core::id::hex(&new);
    let prop = p
        .iter()
        .find(|p| p["action"].as_str().unwrap_or("").contains("new vault key"))
        .unwrap_or_else(|| panic!("the rotation is not listed: {p:?}"));
    assert!(
        prop["action"].as_str().unwrap().contains(&fp),
        "the listing does not show the whole fingerprint: {prop}"
    );
    let pid = prop["id"].as_str().unwrap().to_string();
    w.ok(&[
        "approve",
        "--repo",
        &url,
        "--key",
        &w.key("admin-2"),
        &pid[..12],
    ]);
    // Ready, but this vault does not hold the new key: it says so once and
    // goes on with the old one.
    wait_for("the unrunnable rotation's alert", || {
        vault.stderr().contains("does not hold the new vault key")
    });
    assert!(tls_key_is(&url, &old));
    let pending = backup_via(&w, &url, &w.key("client"), &src);

    // Restarted with --next-key: the rotation runs.
    vault.stop();
    let mut vault = start(&w, &w.repo(), &old_key, &["--next-key", &new_key]);
    let url = vault.url.clone();
    wait_for("the rotation to run", || {
        vault.stderr().contains("EXECUTED")
    });
    assert!(
        tls_key_is(&url, &new),
        "the vault still presents the old TLS key"
    );
    assert!(!tls_key_is(&url, &old));
    let cp = Checkpoint::decode(&std::fs::read(w.path("repo/vault/checkpoint")).unwrap()).unwrap();
    assert_eq!(
        cp.signer, new,
        "the vault signs with the old key after the rotation"
    );

    // The same client backs up on, with no manual step; it keeps the chain.
    mail_day(&src, 7);
    let after = backup_via(&w, &url, &w.key("client"), &src);
    let d_after = digest(&src);
    let chains: Vec<PathBuf> = files(&w.path("cache"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".vaultkeys"))
        .collect();
    assert!(!chains.is_empty(), "the client kept no chain of vault keys");
    let text = std::fs::read_to_string(&chains[0]).unwrap();
    assert!(text.contains(&fp), "{text}");

    // Replica, audit, verify, snapshots, restore of old and new snapshots.
    let o = pull(&url);
    assert!(o.status.success(), "replica pull: {}", err(&o));
    w.ok(&["audit", "--repo", &url, "--key", &w.key("auditor")]);
    let rs = replica.display().to_string();
    w.ok(&["audit", "--repo", &rs, "--key", &w.key("auditor")]);
    w.ok(&["verify", "--repo", &url, "--key", &w.key("restore")]);
    w.ok(&["verify", "--repo", &rs, "--key", &w.key("restore")]);
    let list = w.ok(&["snapshots", "--repo", &url, "--key", &w.key("restore")]);
    for s in [&before, &pending, &after] {
        assert!(list.contains(&s[..8]), "{s} missing from {list}");
    }
    for (snap, d, n) in [(&before, &d_before, "a"), (&after, &d_after, "b")] {
        let t = w.path(&format!("restored-{n}"));
        w.ok(&[
            "restore",
            "--repo",
            &url,
            "--key",
            &w.key("restore"),
            &snap[..12],
            t.to_str().unwrap(),
        ]);
        assert_eq!(&digest(&t.join("mail")), d);
    }
    // A bundle exported across the rotation verifies.
    let bundle = w.path("bundle");
    let b = bundle.display().to_string();
    w.ok(&[
        "export",
        "--repo",
        &rs,
        "--key",
        &w.key("replica"),
        "--to",
        &b,
    ]);
    let spec = format!("bundle:{b}");
    w.ok(&["verify", "--repo", &spec, "--key", &w.key("restore")]);
    w.ok(&["audit", "--repo", &spec, "--key", &w.key("auditor")]);

    // A vault restarted with only the old key refuses, in one line.
    vault.stop();
    let o = refused_start(&w, &old_key, &[]);
    let e = err(&o);
    assert!(e.contains("does not hold the current vault key"), "{e}");
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    // With the new key as --key it serves, and clients go on.
    let mut vault = start(&w, &w.repo(), &new_key, &[]);
    let url = vault.url.clone();
    backup_via(&w, &url, &w.key("client"), &src);

    // The thief of the old key serves the old state with it: the client
    // that saw the rotation refuses (a key rollback), and so does a replica.
    let mut impostor = start(&w, stale.to_str().unwrap(), &old_key, &[]);
    let o = w.run(&[
        "backup",
        "--repo",
        &impostor.url,
        "--key",
        &w.key("client"),
        src.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(4), "{}", err(&o));
    assert!(err(&o).contains("rotated-out"), "{}", err(&o));
    let o = pull(&impostor.url);
    assert_eq!(o.status.code(), Some(4), "{}", err(&o));
    // A reader with no state (a new or reinstalled machine, a DR host)
    // trusts the config's key: the impostor's old log passes. Given the
    // chain of a reader that synced (--vault-keys), it refuses the old key.
    let synced = w.path("synced.vaultkeys");
    std::fs::copy(&chains[0], &synced).unwrap();
    let restore_key = w.key("restore");
    let fresh = |cache: &str, extra: &[&str]| {
        let mut args = vec!["snapshots", "--repo", &impostor.url, "--key", &restore_key];
        args.extend_from_slice(extra);
        w.cmd(&args)
            .env("HOLDFAST_CACHE_DIR", w.path(cache))
            .output()
            .unwrap()
    };
    let o = fresh("fresh-1", &[]);
    assert!(o.status.success(), "{}", said(&o));
    let o = fresh("fresh-2", &["--vault-keys", synced.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(4), "{}", said(&o));
    assert!(said(&o).contains("rotated-out"), "{}", said(&o));
    // The same seed against the real vault: accepted, and kept.
    let o = w
        .cmd(&[
            "snapshots",
            "--repo",
            &url,
            "--key",
            &restore_key,
            "--vault-keys",
            synced.to_str().unwrap(),
        ])
        .env("HOLDFAST_CACHE_DIR", w.path("fresh-3"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", said(&o));
    // A seed of another chain, or damaged: one line, not a first contact.
    std::fs::write(w.path("bad.vaultkeys"), "holdfast-vault-keys-v1\n+0 00\n").unwrap();
    let bad = w.path("bad.vaultkeys");
    let o = fresh("fresh-4", &["--vault-keys", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", said(&o));
    assert!(said(&o).contains("--vault-keys"), "{}", said(&o));
    // The impostor grows its old log past the rotation's size (a fresh
    // client backs up to it), a fresh replica copies it: read offline, the
    // fork passes without the chain and is tampering with it.
    let text = std::fs::read_to_string(&synced).unwrap();
    let rotated_at: u64 = text
        .lines()
        .nth(2)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let size_of = |d: &Path| {
        Checkpoint::decode(&std::fs::read(d.join("vault/checkpoint")).unwrap())
            .unwrap()
            .size
    };
    let mut day = 100;
    while size_of(&stale) < rotated_at {
        day += 1;
        mail_day(&src, day);
        let o = w
            .cmd(&[
                "backup",
                "--repo",
                &impostor.url,
                "--key",
                &w.key("client"),
                src.to_str().unwrap(),
            ])
            .env("HOLDFAST_CACHE_DIR", w.path("fresh-b"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", said(&o));
    }
    let forked = w.path("forked-replica");
    let o = w
        .cmd(&[
            "replica",
            "pull",
            "--from",
            &impostor.url,
            "--key",
            &w.key("replica"),
            "--into",
            forked.to_str().unwrap(),
        ])
        .env("HOLDFAST_CACHE_DIR", w.path("fresh-r"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", said(&o));
    let fs = forked.display().to_string();
    w.ok(&["verify", "--repo", &fs, "--key", &restore_key]);
    let o = w.run(&[
        "verify",
        "--repo",
        &fs,
        "--key",
        &restore_key,
        "--vault-keys",
        synced.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(4), "{}", said(&o));
    assert!(said(&o).contains("--vault-keys"), "{}", said(&o));
    // And in a bundle exported from it.
    let fb = w.path("forked-bundle").display().to_string();
    w.ok(&[
        "export",
        "--repo",
        &fs,
        "--key",
        &w.key("replica"),
        "--to",
        &fb,
    ]);
    let fspec = format!("bundle:{fb}");
    w.ok(&["verify", "--repo", &fspec, "--key", &restore_key]);
    let o = w.run(&[
        "audit",
        "--repo",
        &fspec,
        "--key",
        &w.key("auditor"),
        "--vault-keys",
        synced.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(4), "{}", said(&o));
    assert!(said(&o).contains("--vault-keys"), "{}", said(&o));
    impostor.stop();

    // The old key signs a checkpoint over the real log after the rotation:
    // every reader calls it tampering, and the vault does not start on it.
    vault.stop();
    let saved = std::fs::read(w.path("repo/vault/checkpoint")).unwrap();
    resign(&w, &old_key);
    let repo = w.repo();
    for args in [
        vec!["verify", "--repo", &repo, "--key", &w.key("restore")],
        vec!["audit", "--repo", &repo, "--key", &w.key("auditor")],
        vec!["snapshots", "--repo", &repo, "--key", &w.key("restore")],
    ] {
        let o = w.run(&args);
        assert_eq!(o.status.code(), Some(4), "{args:?}: {}", said(&o));
        assert!(said(&o).contains("rotated-out"), "{args:?}: {}", said(&o));
    }
    let o = refused_start(&w, &new_key, &[]);
    assert_eq!(o.status.code(), Some(4), "{}", err(&o));
    std::fs::write(w.path("repo/vault/checkpoint"), &saved).unwrap();
    // The same forgery in a replica's copy and in a bundle.
    for (dir, spec) in [
        (replica.clone(), rs.clone()),
        (bundle.clone(), spec.clone()),
    ] {
        let good = std::fs::read(dir.join("vault/checkpoint")).unwrap();
        resign_in(&dir, &old_key);
        for args in [
            vec!["verify", "--repo", &spec, "--key", &w.key("restore")],
            vec!["audit", "--repo", &spec, "--key", &w.key("auditor")],
        ] {
            let o = w.run(&args);
            assert_eq!(o.status.code(), Some(4), "{args:?}: {}", said(&o));
            assert!(said(&o).contains("rotated-out"), "{args:?}: {}", said(&o));
        }
        std::fs::write(dir.join("vault/checkpoint"), &good).unwrap();
        w.ok(&["verify", "--repo", &spec, "--key", &w.key("restore")]);
    }
    // The vault starts again on its own checkpoint.
    let _vault = start(&w, &w.repo(), &new_key, &[]);
}

#[test]
fn the_vault_host_alone_cannot_rotate_and_a_bad_proof_is_refused() {
    let w = World::new();
    let keys = w.path("keys").display().to_string();
    w.ok(&["init", &w.repo(), "--keys", &keys, "--delay-secs", "1"]);
    let old_key = w.key("vault");
    let old = public_of(&old_key);
    let (new_key, new_pub) = new_vault_key(&w, "vault-2.key");
    let new = public_of(&new_key);
    let mut vault = start(&w, &w.repo(), &old_key, &["--next-key", &new_key]);
    let url = vault.url.clone();
    let src = w.path("mail");
    make_maildir(&src, 1, 6, 17);
    backup_via(&w, &url, &w.key("client"), &src);

    // A proof of possession by another key, or damaged: refused by the
    // CLI in one line, and by the vault when sent anyway.
    let text = std::fs::read_to_string(&new_pub).unwrap();
    let mut parts: Vec<String> = text.split_whitespace().map(String::from).collect();
    let last = parts.last_mut().unwrap();
    let flipped = if last.ends_with('0') { '1' } else { '0' };
    last.pop();
    last.push(flipped);
    let bad_pub = w.path("bad.pub");
    std::fs::write(&bad_pub, parts.join(" ") + "\n").unwrap();
    let o = w.run(&[
        "propose",
        "vault-key",
        "--repo",
        &url,
        "--key",
        &w.key("admin-1"),
        bad_pub.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("proof of possession"), "{}", err(&o));
    assert_eq!(err(&o).trim().lines().count(), 1, "{}", err(&o));
    // The vault's secret key file is never taken in place of its .pub.
    let o = w.run(&[
        "propose",
        "vault-key",
        "--repo",
        &url,
        "--key",
        &w.key("admin-1"),
        &new_key,
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(
        err(&o).contains("not a vault public key file"),
        "{}",
        err(&o)
    );
    assert_eq!(err(&o).trim().lines().count(), 1, "{}", err(&o));
    let admin = load_key(&w.key("admin-1"));
    let other = holdfast_core::crypto::Identity::from_bytes([9; 32]);
    let p = Proposal::new(
        admin.config_id,
        Action::RotateVaultKey {
            key: new,
            pop: vault_key_pop(&admin.config_id, &other),
        },
        admin.identity().unwrap(),
        holdfast_repo::now_ns(),
    )
    .unwrap();
    let v = raw(&w, &url, &w.key("admin-1"));
    match v.request("POST", "/v1/proposals", &p.encode(), None) {
        Err(holdfast_store::StoreError::Refused(m)) => {
            assert!(
                m.contains("400") && m.contains("proof of possession"),
                "{m}"
            )
        }
        r => panic!("a proposal with a bad proof was not refused: {r:?}"),
    }

    // One admin's proposal, never approved: the vault that holds the new
    // key still does not rotate.
    w.ok(&[
        "propose",
        "vault-key",
        "--repo",
        &url,
        "--key",
        &w.key("admin-1"),
        &new_pub,
    ]);
    let pid = w
        .proposals(&url)
        .iter()
        .find(|p| p["action"].as_str().unwrap_or("").contains("new vault key"))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    std::thread::sleep(Duration::from_secs(3));
    assert!(!vault.stderr().contains("EXECUTED"), "{}", vault.stderr());
    assert!(tls_key_is(&url, &old));
    backup_via(&w, &url, &w.key("client"), &src);

    // Root on the vault host logs the execution itself and signs with the
    // new key it holds: every reader refuses, and the vault will not start.
    vault.stop();
    let log = w.path("repo/vault/log");
    let mut raw_log = std::fs::read(&log).unwrap();
    let last_t = split_log(&raw_log)
        .0
        .iter()
        .map(|e| Entry::decode(e).unwrap().time_ns)
        .max()
        .unwrap();
    let e = Entry {
        time_ns: last_t + 1_000_000_000,
        event: Event::Executed {
            proposal: holdfast_core::ObjectId::from_hex(&pid).unwrap(),
        },
    };
    frame(&e.encode(), &mut raw_log);
    std::fs::write(&log, &raw_log).unwrap();
    resign(&w, &new_key);
    let repo = w.repo();
    for args in [
        vec!["verify", "--repo", &repo, "--key", &w.key("restore")],
        vec!["audit", "--repo", &repo, "--key", &w.key("auditor")],
    ] {
        let o = w.run(&args);
        assert_eq!(o.status.code(), Some(4), "{args:?}: {}", said(&o));
        let e = said(&o);
        assert!(
            e.contains("without a quorum") || e.contains("unknown key"),
            "{args:?}: {e}"
        );
    }
    let o = refused_start(&w, &old_key, &["--next-key", &new_key]);
    assert_eq!(o.status.code(), Some(4), "{}", err(&o));
    // Signed with the old key instead, the forged execution is still seen.
    resign(&w, &old_key);
    let o = w.run(&["verify", "--repo", &repo, "--key", &w.key("restore")]);
    assert_eq!(o.status.code(), Some(4), "{}", said(&o));
    assert!(said(&o).contains("without a quorum"), "{}", said(&o));
}

#[test]
fn a_session_open_across_the_rotation_goes_on() {
    // One client session (a long backup, a mount) connected before the
    // rotation runs and used after it: it follows the new key, over a new
    // connection pool, with no error.
    let w = World::new();
    let keys = w.path("keys").display().to_string();
    w.ok(&["init", &w.repo(), "--keys", &keys, "--delay-secs", "1"]);
    let old_key = w.key("vault");
    let old = public_of(&old_key);
    let (new_key, new_pub) = new_vault_key(&w, "vault-2.key");
    let new = public_of(&new_key);
    let vault = start(&w, &w.repo(), &old_key, &["--next-key", &new_key]);
    let url = vault.url.clone();
    let src = w.path("mail");
    make_maildir(&src, 1, 6, 23);
    backup_via(&w, &url, &w.key("client"), &src);
    let session = raw(&w, &url, &w.key("client"));
    let before = session.sync_checkpoint().unwrap();
    assert_eq!(before.signer, old);

    w.ok(&[
        "propose",
        "vault-key",
        "--repo",
        &url,
        "--key",
        &w.key("admin-1"),
        &new_pub,
    ]);
    let pid = w
        .proposals(&url)
        .iter()
        .find(|p| p["action"].as_str().unwrap_or("").contains("new vault key"))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    w.ok(&[
        "approve",
        "--repo",
        &url,
        "--key",
        &w.key("admin-2"),
        &pid[..12],
    ]);
    wait_for("the rotation to run", || {
        vault.stderr().contains("EXECUTED")
    });
    assert!(tls_key_is(&url, &new));

    // At once (a pooled connection of the old key may still be open) and
    // after the pool's idle time (new handshakes, which see the new key).
    let cp = session.sync_checkpoint().unwrap();
    assert_eq!(cp.signer, new);
    std::thread::sleep(Duration::from_secs(6));
    let cp = session.sync_checkpoint().unwrap();
    assert_eq!(cp.signer, new);
    assert_eq!(
        session.log_entries(0, cp.size).unwrap().len() as u64,
        cp.size
    );
    use holdfast_store::Backend;
    assert!(
        !session
            .list(holdfast_store::Kind::Snapshot)
            .unwrap()
            .is_empty()
    );
    // The session's kept chain names the new key.
    let chain = std::fs::read_to_string(holdfast_store::VaultBackend::keys_path(
        &holdfast_store::VaultBackend::checkpoint_path(
            &w.path("raw-state").join(w.key("client").replace('/', "_")),
            &load_key(&w.key("client")).config_id,
            &load_key(&w.key("client")).identity().unwrap().public(),
        ),
    ))
    .unwrap();
    assert!(chain.contains(&holdfast_core::id::hex(&new)), "{chain}");
    mail_day(&src, 3);
    backup_via(&w, &url, &w.key("client"), &src);
}

/// What a man in the middle with no key of the repository answers: the
/// real config, under a TLS key of its own, a checkpoint that key signs,
/// and log pages of `page` (a declared length, or a stream of bytes).
enum Page {
    Declared(u64),
    Streamed(u64),
}

fn hostile_peer(config: Vec<u8>, cid: [u8; 32], size: u64, page: Page) -> String {
    use std::io::{Read, Write};
    let fresh = holdfast_core::crypto::Identity::from_bytes([77; 32]);
    let certs = holdfast_vault::tls::SwapCert::new(&fresh).unwrap();
    let tls = holdfast_vault::tls::server_config(certs).unwrap();
    let cp = Checkpoint::sign(cid, size, [5; 32], holdfast_repo::now_ns(), &fresh).encode();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}", l.local_addr().unwrap());
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            let Ok(conn) = rustls::ServerConnection::new(tls.clone()) else {
                continue;
            };
            let mut t = rustls::StreamOwned::new(conn, s);
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && head.len() < 65536 {
                match t.read(&mut b) {
                    Ok(1) => head.push(b[0]),
                    _ => break,
                }
            }
            let line = String::from_utf8_lossy(&head)
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            let path = line.split(' ').nth(1).unwrap_or("").to_string();
            let ok = |t: &mut rustls::StreamOwned<_, _>, body: &[u8]| {
                let _ = t.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    )
                    .as_bytes(),
                );
                let _ = t.write_all(body);
                let _ = t.flush();
            };
            if path == "/v1/config" {
                ok(&mut t, &config);
            } else if path == "/v1/log/checkpoint" {
                ok(&mut t, &cp);
            } else if path == "/v1/identities" {
                ok(&mut t, b"[]");
            } else if path.starts_with("/v1/log/entries") {
                match page {
                    Page::Declared(n) => {
                        let _ = t.write_all(
                            format!(
                                "HTTP/1.1 200 OK\r\ncontent-length: {n}\r\nconnection: close\r\n\r\n"
                            )
                            .as_bytes(),
                        );
                        let _ = t.flush();
                    }
                    Page::Streamed(n) => {
                        let _ = t.write_all(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n");
                        let chunk = vec![0u8; 1 << 20];
                        for _ in 0..n >> 20 {
                            if t.write_all(&chunk).is_err() {
                                break;
                            }
                        }
                        let _ = t.flush();
                    }
                }
            } else {
                ok(&mut t, b"");
            }
            t.conn.send_close_notify();
            let _ = t.flush();
        }
    });
    url
}

#[test]
fn a_man_in_the_middle_with_a_fresh_key_cannot_make_a_client_read_the_log_unbounded() {
    let w = World::new();
    w.init();
    let config = std::fs::read(w.path("repo/config")).unwrap();
    let cid = load_key(&w.key("restore")).config_id.0;
    let restore = w.key("restore");
    let cases = [
        (1u64 << 40, Page::Declared(10), "log entries"),
        (5, Page::Declared(1 << 30), "an answer over"),
        (5, Page::Streamed(80 << 20), "an answer over"),
    ];
    for (i, (size, page, said_what)) in cases.into_iter().enumerate() {
        let url = hostile_peer(config.clone(), cid, size, page);
        let o = w
            .cmd(&["snapshots", "--repo", &url, "--key", &restore])
            .env("HOLDFAST_CACHE_DIR", w.path(&format!("mitm-{i}")))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(4), "case {i}: {}", said(&o));
        assert!(said(&o).contains(said_what), "case {i}: {}", said(&o));
    }
}

#[test]
fn an_identity_record_naming_an_admin_as_a_client_is_refused_and_the_admin_keeps_its_veto() {
    // One admin signs a record that names another admin's key with the
    // client role; the vault host places it in the repository. The config
    // wins: the vault alerts and ignores it, the second admin's veto still
    // stops a proposal, and a replica reports the record.
    let w = World::new();
    let keys = w.path("keys").display().to_string();
    w.ok(&["init", &w.repo(), "--keys", &keys, "--delay-secs", "1"]);
    let a1 = load_key(&w.key("admin-1"));
    let a2 = load_key(&w.key("admin-2"));
    let rec = holdfast_core::format::IdentityRecord::new(
        a1.config_id,
        holdfast_core::format::Member {
            role: holdfast_core::format::Role::Client,
            name: "demoted".into(),
            public: a2.identity().unwrap().public(),
        },
        a1.identity().unwrap(),
        holdfast_repo::now_ns(),
    )
    .encode();
    let id = holdfast_core::ObjectId::of(&rec).to_hex();
    std::fs::write(w.path("repo/identities").join(&id), &rec).unwrap();
    let vault = start(&w, &w.repo(), &w.key("vault"), &[]);
    let url = vault.url.clone();
    wait_for("the alert on the record", || {
        vault.stderr().contains("names a member of the config")
    });
    let (_, new_pub) = new_vault_key(&w, "vault-2.key");
    w.ok(&[
        "propose",
        "vault-key",
        "--repo",
        &url,
        "--key",
        &w.key("admin-1"),
        &new_pub,
    ]);
    let pid = w
        .proposals(&url)
        .iter()
        .find(|p| p["action"].as_str().unwrap_or("").contains("new vault key"))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    w.ok(&[
        "veto",
        "--repo",
        &url,
        "--key",
        &w.key("admin-2"),
        &pid[..12],
    ]);
    let p = w.proposals(&url);
    let prop = p.iter().find(|p| p["id"].as_str() == Some(&pid)).unwrap();
    assert!(
        prop["vetoed_by"]
            .as_str()
            .is_some_and(|by| by.contains("admin-2")),
        "admin-2's veto did not count: {prop}"
    );
    let replica = w.path("replica");
    let o = w.run(&[
        "replica",
        "pull",
        "--from",
        &url,
        "--key",
        &w.key("replica"),
        "--into",
        replica.to_str().unwrap(),
    ]);
    assert!(
        said(&o).contains("names a member of the config"),
        "{}",
        said(&o)
    );
}
