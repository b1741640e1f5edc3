//! The vault for many servers: 32 clients at once through one real vault,
//! each restoring what it backed up byte for byte; and the Merkle node
//! store beside the log, deleted, truncated or damaged, rebuilt at start
//! with every reader's consistency proofs still verifying.

mod common;

use std::path::Path;

use common::*;

/// A way to damage the node file, by name.
type Damage = (&'static str, Box<dyn Fn(&Path)>);
use holdfast_store::Backend;

fn init_clients(w: &World, names: &[String]) {
    let (repo, keys) = (w.repo(), w.path("keys").display().to_string());
    let mut args = vec!["init", repo.as_str(), "--keys", keys.as_str()];
    for n in names {
        args.push("--client");
        args.push(n);
    }
    w.ok(&args);
}

fn run(args: &[&str], cache: &Path) -> std::process::Output {
    let mut c = std::process::Command::new(bin());
    c.args(args)
        .env("HOLDFAST_PASSPHRASE", PASS)
        .env("HOLDFAST_CACHE_DIR", cache)
        .env_remove("XDG_CACHE_HOME");
    c.output().unwrap()
}

/// 32 clients, each with its own key and tree, back up at the same time
/// through one vault, then each restores its snapshot (with the restore
/// key, also at the same time) and finds its tree exactly: paths, modes,
/// mtimes, bytes. Then a second round with new mail, and the whole
/// repository verifies. Zero errors allowed.
#[test]
fn thirty_two_clients_back_up_and_restore_through_one_vault() {
    let w = World::new();
    let names: Vec<String> = (0..32).map(|i| format!("c{i:02}")).collect();
    init_clients(&w, &names);
    let vault = w.start_vault(&["--max-connections", "128"]);
    let url = vault.url.clone();
    let restore_key = w.key("restore");
    let start = std::time::Instant::now();
    let handles: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let key = if i == 0 {
                w.key("client")
            } else {
                w.path(&format!("keys/client-{n}.key"))
                    .display()
                    .to_string()
            };
            let src = w.path(&format!("src-{n}"));
            make_maildir(&src, 2, 6, 500 + i as u64);
            let (url, restore_key) = (url.clone(), restore_key.clone());
            let cache = w.path(&format!("cache-{n}"));
            let target_base = w.path(&format!("restored-{n}"));
            std::thread::spawn(move || -> Result<(), String> {
                for round in 0..2 {
                    if round == 1 {
                        mail_day(&src, 7 + i as u64);
                    }
                    let o = run(
                        &[
                            "backup",
                            "--repo",
                            &url,
                            "--key",
                            &key,
                            "--json",
                            src.to_str().unwrap(),
                        ],
                        &cache,
                    );
                    if !o.status.success() {
                        return Err(format!(
                            "backup {round}: {}",
                            String::from_utf8_lossy(&o.stderr)
                        ));
                    }
                    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
                        .map_err(|e| format!("backup output: {e}"))?;
                    let snap = v[0]["snapshot"].as_str().ok_or("no snapshot id")?;
                    let target = target_base.join(format!("r{round}"));
                    let o = run(
                        &[
                            "restore",
                            "--repo",
                            &url,
                            "--key",
                            &restore_key,
                            snap,
                            target.to_str().unwrap(),
                        ],
                        &cache.join("restore"),
                    );
                    if !o.status.success() {
                        return Err(format!(
                            "restore {round}: {}",
                            String::from_utf8_lossy(&o.stderr)
                        ));
                    }
                    // A path is restored under its last component.
                    if digest(&src) != digest(&target.join(src.file_name().unwrap())) {
                        return Err(format!("round {round}: restored tree differs"));
                    }
                }
                Ok(())
            })
        })
        .collect();
    let errors: Vec<String> = handles
        .into_iter()
        .zip(&names)
        .filter_map(|(h, n)| h.join().unwrap().err().map(|e| format!("{n}: {e}")))
        .collect();
    eprintln!(
        "32 clients × 2 backups and restores in {:?}",
        start.elapsed()
    );
    assert!(errors.is_empty(), "{errors:#?}\n{}", vault.stderr());
    let snaps: Vec<serde_json::Value> = serde_json::from_str(&w.ok(&[
        "snapshots",
        "--repo",
        &url,
        "--key",
        &restore_key,
        "--json",
    ]))
    .unwrap();
    assert_eq!(snaps.len(), 64);
    w.ok(&[
        "verify",
        "--repo",
        &url,
        "--key",
        &restore_key,
        "--read-data",
    ]);
    assert!(
        !vault.stderr().contains("TAMPERING") && !vault.stderr().contains("BUG"),
        "{}",
        vault.stderr()
    );
}

/// The vault's Merkle node file (`vault/log.nodes`) is derived from the
/// log: deleted, cut short or damaged, the vault rebuilds it at start (a
/// damaged one is kept aside, never deleted), and clients holding earlier
/// checkpoints get consistency proofs that verify (a wrong proof would be
/// TAMPERING DETECTED, exit 4).
#[test]
fn the_merkle_node_store_is_rebuilt_when_deleted_truncated_or_damaged() {
    let w = World::new();
    w.init();
    let state = w.path("repo/vault");
    let nodes = state.join("log.nodes");
    let src = w.path("mail");
    make_maildir(&src, 2, 5, 77);
    let key = w.key("client");
    let restore = w.key("restore");
    let mut day = 0u64;
    // A backup through the vault: the client checks a consistency proof
    // from the checkpoint it holds; then the restore key lists (another
    // reader with its own held checkpoint).
    let mut round = |w: &World, url: &str| {
        day += 1;
        mail_day(&src, day);
        backup_via(w, url, &key, &src);
        w.ok(&["snapshots", "--repo", url, "--key", &restore, "--json"]);
    };
    let mut damage: Vec<Damage> = vec![
        (
            "deleted",
            Box::new(|p: &Path| std::fs::remove_file(p).unwrap()),
        ),
        (
            "truncated mid-node",
            Box::new(|p: &Path| {
                let b = std::fs::read(p).unwrap();
                std::fs::write(p, &b[..b.len() / 2 + 7]).unwrap();
            }),
        ),
        (
            "emptied",
            Box::new(|p: &Path| std::fs::write(p, b"").unwrap()),
        ),
        (
            "damaged",
            Box::new(|p: &Path| {
                let mut b = std::fs::read(p).unwrap();
                b[40] ^= 0x55;
                std::fs::write(p, &b).unwrap();
            }),
        ),
    ];
    let mut vault = w.start_vault(&[]);
    round(&w, &vault.url.clone());
    round(&w, &vault.url.clone());
    for (what, f) in damage.drain(..) {
        vault.stop();
        let good = std::fs::read(&nodes).unwrap();
        assert!(good.len() >= 32 * 3, "{what}: node file too small");
        f(&nodes);
        vault = w.start_vault(&[]);
        // Rebuilt at start, identical to what it was.
        let now = std::fs::read(&nodes).unwrap();
        assert_eq!(now[..good.len()], good[..], "{what}: not rebuilt");
        round(&w, &vault.url.clone());
        assert!(
            !vault.stderr().contains("TAMPERING"),
            "{what}: {}",
            vault.stderr()
        );
    }
    let aside: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("log.nodes.damaged-")
        })
        .collect();
    assert_eq!(aside.len(), 1, "the damaged node file is kept as evidence");
    // The whole history still verifies for an auditor folding the log.
    let url = vault.url.clone();
    w.ok(&["verify", "--repo", &url, "--key", &restore]);
}

/// Quota is checked before the upload and held by a reservation until the
/// pack is recorded: eight uploads at once from one client (each passing
/// the check on its own) never store more than the quota between them.
#[test]
fn concurrent_uploads_from_one_client_never_overshoot_its_quota() {
    let w = World::new();
    w.init();
    let vault = w.start_vault(&["--quota-mib", "2"]);
    let url = vault.url.clone();
    let key = w.key("client");
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let src = w.path(&format!("src-{i}"));
            std::fs::create_dir_all(&src).unwrap();
            std::fs::write(src.join("random"), Rng(90 + i).bytes(700 << 10)).unwrap();
            let (url, key) = (url.clone(), key.clone());
            let cache = w.path(&format!("cache-{i}"));
            std::thread::spawn(move || {
                run(
                    &[
                        "backup",
                        "--repo",
                        &url,
                        "--key",
                        &key,
                        src.to_str().unwrap(),
                    ],
                    &cache,
                )
            })
        })
        .collect();
    let outs: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let ok = outs.iter().filter(|o| o.status.success()).count();
    let quota = outs
        .iter()
        .filter(|o| String::from_utf8_lossy(&o.stderr).contains("quota"))
        .count();
    assert!(ok >= 1, "no backup got through");
    assert!(quota >= 1, "eight 700 KiB uploads all fit a 2 MiB quota?");
    assert_eq!(ok + quota, 8);
    let stored: u64 = raw(&w, &url, &key)
        .list(holdfast_store::Kind::Pack)
        .unwrap()
        .iter()
        .map(|(_, n)| n)
        .sum();
    assert!(
        stored <= 2 << 20,
        "{stored} bytes stored over a 2 MiB quota"
    );
}
