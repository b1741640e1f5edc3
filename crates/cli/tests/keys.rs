//! The restore key split M-of-N, combined, and used straight from shares
//! (issue "Keys that live as long as the data"), with the real binary.

mod common;

use std::path::PathBuf;

use common::*;

struct Split {
    w: World,
    shares: Vec<PathBuf>,
    snap: String,
    src: PathBuf,
}

fn split_3_of_5() -> Split {
    let w = World::new();
    w.init();
    let src = w.path("mail");
    make_maildir(&src, 2, 8, 91);
    let snap = w.backup(&[&src])["snapshot"].as_str().unwrap().to_string();
    let out = w.path("shares");
    let j: serde_json::Value = serde_json::from_str(&w.ok(&[
        "key",
        "split",
        "--key",
        &w.key("restore"),
        "--threshold",
        "3",
        "--shares",
        "5",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]))
    .unwrap();
    let shares: Vec<PathBuf> = j["shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| PathBuf::from(p.as_str().unwrap()))
        .collect();
    assert_eq!(shares.len(), 5);
    for s in &shares {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(s).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", s.display());
        // A share is not the key: nothing of the key's secret in the clear.
        assert!(!std::fs::read(s).unwrap().is_empty());
    }
    Split {
        w,
        shares,
        snap,
        src,
    }
}

fn combine(s: &Split, pick: &[usize], out: &str) -> std::process::Output {
    let out = s.w.path(out);
    let mut args = vec![
        "key".to_string(),
        "combine".into(),
        "--out".into(),
        out.display().to_string(),
    ];
    args.extend(pick.iter().map(|&i| s.shares[i].display().to_string()));
    let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    s.w.run(&a)
}

#[test]
fn every_three_shares_rebuild_a_key_that_restores() {
    let s = split_3_of_5();
    let want = digest(&s.src);
    for (n, pick) in [[0, 1, 2], [2, 3, 4], [0, 2, 4], [4, 1, 3]]
        .iter()
        .enumerate()
    {
        let name = format!("rebuilt-{n}.key");
        let o = combine(&s, pick, &name);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let key = s.w.path(&name).display().to_string();
        let target = s.w.path(&format!("out-{n}"));
        s.w.ok(&[
            "restore",
            "--repo",
            &s.w.repo(),
            "--key",
            &key,
            &s.snap[..12],
            target.to_str().unwrap(),
        ]);
        assert_eq!(digest(&target.join("mail")), want);
    }
}

#[test]
fn too_few_damaged_and_foreign_shares_are_refused_in_one_line() {
    let s = split_3_of_5();
    // Two of a 3-of-5.
    let o = combine(&s, &[0, 3], "two.key");
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("3-of-5") && e.lines().count() == 1, "{e}");
    assert!(!s.w.path("two.key").exists());
    // The same share three times is one share.
    let o = combine(&s, &[1, 1, 1], "same.key");
    assert_eq!(o.status.code(), Some(1));

    // A damaged share: one flipped byte.
    let mut b = std::fs::read(&s.shares[2]).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x10;
    let damaged = s.w.path("damaged.hfshare");
    std::fs::write(&damaged, &b).unwrap();
    let mut args = vec![
        "key".to_string(),
        "combine".into(),
        "--out".into(),
        s.w.path("d.key").display().to_string(),
    ];
    args.push(s.shares[0].display().to_string());
    args.push(s.shares[1].display().to_string());
    args.push(damaged.display().to_string());
    let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let o = s.w.run(&a);
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("damaged") && e.contains("damaged.hfshare"),
        "{e}"
    );

    // A share from another split of the same key.
    let other = s.w.path("other");
    s.w.ok(&[
        "key",
        "split",
        "--key",
        &s.w.key("restore"),
        "--threshold",
        "2",
        "--shares",
        "3",
        "--out",
        other.to_str().unwrap(),
    ]);
    let foreign = files(&other)[0].clone();
    let mut args = vec![
        "key".to_string(),
        "combine".into(),
        "--out".into(),
        s.w.path("f.key").display().to_string(),
    ];
    args.push(s.shares[0].display().to_string());
    args.push(s.shares[1].display().to_string());
    args.push(foreign.display().to_string());
    let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let o = s.w.run(&a);
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("another split"), "{e}");

    // A wrong passphrase on a share.
    let o =
        s.w.cmd(&[
            "key",
            "combine",
            "--out",
            s.w.path("p.key").to_str().unwrap(),
            s.shares[0].to_str().unwrap(),
            s.shares[1].to_str().unwrap(),
            s.shares[2].to_str().unwrap(),
        ])
        .env("HOLDFAST_PASSPHRASE", "not the passphrase")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));

    // Only the restore key is split; bad numbers are refused.
    let o = s.w.run(&[
        "key",
        "split",
        "--key",
        &s.w.key("client"),
        "--threshold",
        "2",
        "--shares",
        "3",
        "--out",
        s.w.path("c").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let o = s.w.run(&[
        "key",
        "split",
        "--key",
        &s.w.key("restore"),
        "--threshold",
        "4",
        "--shares",
        "3",
        "--out",
        s.w.path("c").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));

    // A share given where a key is wanted says what to do.
    let o = s.w.run(&[
        "snapshots",
        "--repo",
        &s.w.repo(),
        "--key",
        s.shares[0].to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("one share of a split restore key"), "{e}");
}

/// Commands that need the restore key take M shares instead: the whole key
/// never touches disk.
#[test]
fn restore_straight_from_shares() {
    let s = split_3_of_5();
    let target = s.w.path("out");
    let repo = s.w.repo();
    let o = s.w.ok(&[
        "restore",
        "--repo",
        &repo,
        "--key",
        s.shares[4].to_str().unwrap(),
        "--key",
        s.shares[0].to_str().unwrap(),
        "--key",
        s.shares[2].to_str().unwrap(),
        &s.snap[..12],
        target.to_str().unwrap(),
    ]);
    assert!(!o.is_empty());
    assert_eq!(digest(&target.join("mail")), digest(&s.src));
    // Two shares are not enough, in one line.
    let o = s.w.run(&[
        "verify",
        "--repo",
        &repo,
        "--key",
        s.shares[1].to_str().unwrap(),
        "--key",
        s.shares[3].to_str().unwrap(),
        "--read-data",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("3-of-5"), "{e}");
    // A key and a share together are not folded: clap refuses the repeat.
    let o = s.w.run(&[
        "snapshots",
        "--repo",
        &repo,
        "--key",
        &s.w.key("restore"),
        "--key",
        s.shares[3].to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
}

/// One admin revokes a stolen client key through the vault: its next
/// request is refused, the log says so, and nothing it wrote is lost.
#[test]
fn a_revoked_client_is_refused_at_once_and_the_audit_shows_it() {
    let w = World::new();
    w.init();
    let vault = w.start_vault(&[]);
    let url = vault.url.clone();
    let src = w.path("mail");
    make_maildir(&src, 1, 6, 93);
    let snap = backup_via(&w, &url, &w.key("client"), &src);
    // A client key cannot revoke anybody, itself included.
    let o = w.run(&[
        "key",
        "revoke",
        "client",
        "client",
        "--repo",
        &url,
        "--key",
        &w.key("client"),
    ]);
    assert_eq!(o.status.code(), Some(1));
    w.ok(&[
        "key",
        "revoke",
        "client",
        "client",
        "--repo",
        &url,
        "--key",
        &w.key("admin-1"),
    ]);
    let o = w.run(&[
        "backup",
        "--repo",
        &url,
        "--key",
        &w.key("client"),
        src.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("revoked"), "{e}");
    // Revoking twice, or an admin this way, is refused.
    for who in ["client", "admin-2"] {
        let o = w.run(&[
            "key",
            "revoke",
            "client",
            who,
            "--repo",
            &url,
            "--key",
            &w.key("admin-1"),
        ]);
        assert_eq!(o.status.code(), Some(1), "{who}");
    }
    let audit = w.ok(&["audit", "--repo", &url, "--key", &w.key("auditor")]);
    assert!(audit.contains("revoked or removed: client"), "{audit}");
    // What it wrote before stays, and restores.
    let out = w.path("out");
    restore_via(&w, &url, &snap[..12], &out);
    assert_eq!(digest(&out.join("mail")), digest(&src));
}

/// A new restore key epoch through the vault: proposed by one admin,
/// approved by a second, run after the delay. Then clients seal to the new
/// key: the old key still reads what came before and nothing after; the new
/// key reads everything; an unchanged tree stores next to nothing new.
#[test]
fn a_rotated_restore_key_reads_everything_and_the_old_one_only_the_past() {
    let w = World::new();
    let keys = w.path("keys").display().to_string();
    w.ok(&["init", &w.repo(), "--keys", &keys, "--delay-secs", "1"]);
    let vault = w.start_vault(&["--reclaim-every-secs", "1"]);
    let url = vault.url.clone();
    let src = w.path("mail");
    make_maildir(&src, 2, 10, 95);
    let before = backup_via(&w, &url, &w.key("client"), &src);
    let d_before = digest(&src);
    let new_key = w.path("restore-2.key");
    w.ok(&[
        "key",
        "rotate",
        "restore",
        "--repo",
        &url,
        "--key",
        &w.key("admin-1"),
        "--restore-key",
        &w.key("restore"),
        "--out",
        new_key.to_str().unwrap(),
    ]);
    let props: Vec<serde_json::Value> = serde_json::from_str(&w.ok(&[
        "proposals",
        "--repo",
        &url,
        "--key",
        &w.key("auditor"),
        "--json",
    ]))
    .unwrap();
    let pid = props
        .iter()
        .find(|p| p["action"].as_str().unwrap_or("").contains("restore key"))
        .expect("the rotation is proposed")["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Until it runs, clients keep sealing to the old key.
    let pending = backup_via(&w, &url, &w.key("client"), &src);
    w.ok(&[
        "approve",
        "--repo",
        &url,
        "--key",
        &w.key("admin-2"),
        &pid[..12],
    ]);
    std::thread::sleep(std::time::Duration::from_secs(3));
    // The unchanged tree after the rotation: next to nothing stored.
    let j = backup_json(&w, &url, &w.key("client"), &src);
    let unchanged = j["snapshot"].as_str().unwrap().to_string();
    println!(
        "after the rotation, an unchanged tree stored {} new bytes ({} in packs)",
        j["new_bytes"], j["stored_bytes"]
    );
    assert!(
        j["new_bytes"].as_u64().unwrap() < 64 << 10,
        "an unchanged tree re-stored data after the rotation: {j}"
    );
    mail_day(&src, 3);
    let after = backup_via(&w, &url, &w.key("client"), &src);
    let d_after = digest(&src);

    let restore = |key: &str, snap: &str, out: &str| {
        let target = w.path(out);
        let o = w.run(&[
            "restore",
            "--repo",
            &url,
            "--key",
            key,
            &snap[..12],
            target.to_str().unwrap(),
        ]);
        (o, target)
    };
    let old = w.key("restore");
    let new = new_key.display().to_string();
    for (snap, d, n) in [(&before, &d_before, "a"), (&pending, &d_before, "b")] {
        let (o, t) = restore(&old, snap, &format!("old-{n}"));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(&digest(&t.join("mail")), d);
    }
    // Each snapshot names the epoch it was sealed to: the ones the old key
    // cannot open name the new one.
    let listed: Vec<serde_json::Value> = serde_json::from_str(&w.ok(&[
        "snapshots",
        "--repo",
        &url,
        "--key",
        &new_key.display().to_string(),
        "--json",
    ]))
    .unwrap();
    for (snap, epoch) in [(&before, 0), (&pending, 0), (&unchanged, 1), (&after, 1)] {
        let row = listed.iter().find(|s| s["id"] == snap.as_str()).unwrap();
        assert_eq!(row["restore_epoch"], epoch, "{row}");
    }
    for snap in [&unchanged, &after] {
        let (o, _) = restore(&old, snap, &format!("old-{}", &snap[..6]));
        assert_eq!(
            o.status.code(),
            Some(1),
            "the old key read a snapshot sealed after the rotation, or called it damage"
        );
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(e.contains("rotation"), "{e}");
    }
    for (snap, d, n) in [
        (&before, &d_before, "1"),
        (&unchanged, &d_before, "2"),
        (&after, &d_after, "3"),
    ] {
        let (o, t) = restore(&new, snap, &format!("new-{n}"));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(&digest(&t.join("mail")), d);
    }
    w.ok(&["verify", "--repo", &url, "--key", &new, "--read-data"]);
    // The old key cannot check what it cannot read: a usage error, not damage.
    let o = w.run(&["verify", "--repo", &url, "--key", &old, "--read-data"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // The new key splits and works from shares like any restore key.
    let shares = w.path("new-shares");
    w.ok(&[
        "key",
        "split",
        "--key",
        &new,
        "--threshold",
        "2",
        "--shares",
        "3",
        "--out",
        shares.to_str().unwrap(),
    ]);
    let sh = files(&shares);
    let t = w.path("from-shares");
    w.ok(&[
        "restore",
        "--repo",
        &url,
        "--key",
        sh[0].to_str().unwrap(),
        "--key",
        sh[2].to_str().unwrap(),
        &before[..12],
        t.to_str().unwrap(),
    ]);
    assert_eq!(digest(&t.join("mail")), d_before);
}
