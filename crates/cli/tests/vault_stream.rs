//! The vault streams pack bodies to storage (issue 10, goal 2): after the
//! signature headers authenticate, the body is written to a staging file
//! as it arrives (hashed as it goes) and becomes a visible object only once
//! checked (signed hash, id, structure). A body cut short, a body that is
//! not the one signed, a vault killed mid-upload: nothing visible, no
//! staging left (a crash's staging is removed at start). The real binary, a
//! real directory store, raw TLS on 127.0.0.0/8 where a request must be
//! cut or forged.

mod common;

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;

use common::*;
use holdfast_core::format::PackBuilder;
use holdfast_core::id::BlobId;
use holdfast_core::request::Auth;
use holdfast_store::{Backend, Kind};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A well-formed pack of about `mib` MiB of random blobs (the vault checks
/// the structure, not the sealing).
fn pack(mib: usize, seed: u64) -> (String, Vec<u8>) {
    let mut rng = Rng(seed | 1);
    let mut b = PackBuilder::new(&[7u8; 32], (mib << 20) + 4096);
    for _ in 0..mib.div_ceil(4) {
        let blob = rng.bytes(4 << 20);
        let id: [u8; 32] = rng.bytes(32).try_into().unwrap();
        b.add(BlobId(id), 0, 0, blob.len() as u32, &blob);
    }
    let (id, bytes, _) = b.finish();
    (id.to_hex(), bytes)
}

/// The staging files in the directory store's `tmp/`.
fn staged(repo: &str) -> Vec<std::path::PathBuf> {
    files(&Path::new(repo).join("tmp"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".stage"))
        .collect()
}

fn visible(repo: &str, name: &str) -> bool {
    Path::new(repo)
        .join("packs")
        .join(&name[..2])
        .join(name)
        .exists()
}

/// Sends a signed PUT head for `body` (its hash in the signature) with
/// `len` as the content-length.
fn put_head(s: &mut RawTls, w: &World, path: &str, signed: &[u8], len: usize) {
    let client = load_key(&w.key("client")).identity().unwrap().clone();
    let auth = Auth::sign(&client, "PUT", path, holdfast_repo::now_ns(), signed).unwrap();
    let mut head =
        format!("PUT {path} HTTP/1.1\r\nhost: holdfast-vault\r\ncontent-length: {len}\r\n");
    for (k, v) in auth.headers() {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.flush().unwrap();
}

/// A body cut short mid-stream (the connection closed after 12 of 32 MiB):
/// no visible object, and no staging file once the request has ended.
#[test]
fn a_body_cut_short_leaves_nothing() {
    let w = World::new();
    w.init();
    let vault = w.start_vault(&[]);
    let addr = vault_addr(&vault.url);
    let (name, body) = pack(32, 1);
    let path = format!("/v1/objects/packs/{name}");
    let mut s = tls_from(ip("127.0.3.1"), addr).unwrap();
    put_head(&mut s, &w, &path, &body, body.len());
    for c in body[..12 << 20].chunks(1 << 20) {
        s.write_all(c).unwrap();
    }
    s.flush().unwrap();
    // The staging exists while the body arrives...
    wait_for("a staging file", || !staged(&w.repo()).is_empty());
    drop(s);
    // ...and is gone once the vault has seen the connection end.
    wait_for("no staging file", || staged(&w.repo()).is_empty());
    assert!(!visible(&w.repo(), &name));
    // The same pack, whole, goes through afterwards.
    raw(&w, &vault.url, &w.key("client"))
        .put(Kind::Pack, &name, &body)
        .unwrap();
    assert!(visible(&w.repo(), &name));
    assert!(staged(&w.repo()).is_empty());
}

/// A body that is not the one signed (same length, another pack), and a
/// body that is the one signed but not the named pack: 400, nothing
/// visible, no staging.
#[test]
fn a_body_that_does_not_match_its_signed_hash_leaves_nothing() {
    let w = World::new();
    w.init();
    let vault = w.start_vault(&[]);
    let addr = vault_addr(&vault.url);
    let (name, body) = pack(8, 2);
    let mut other = body.clone();
    let n = other.len();
    other[n / 2] ^= 1;
    let path = format!("/v1/objects/packs/{name}");

    let mut s = tls_from(ip("127.0.3.2"), addr).unwrap();
    put_head(&mut s, &w, &path, &body, other.len());
    s.write_all(&other).unwrap();
    s.flush().unwrap();
    let (status, msg) = read_response(&mut s).unwrap();
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&msg));
    assert!(String::from_utf8_lossy(&msg).contains("signed hash"));

    // Signed as sent, but not the pack its name says.
    let mut s = tls_from(ip("127.0.3.3"), addr).unwrap();
    put_head(&mut s, &w, &path, &other, other.len());
    s.write_all(&other).unwrap();
    s.flush().unwrap();
    let (status, msg) = read_response(&mut s).unwrap();
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&msg));
    assert!(String::from_utf8_lossy(&msg).contains("does not match its id"));

    // Named and signed right, but not a pack (its trailer broken).
    let mut junk = vec![0u8; 1 << 20];
    junk[..8].copy_from_slice(b"HFPACK01");
    let jname = holdfast_core::ObjectId::of(&junk).to_hex();
    let jpath = format!("/v1/objects/packs/{jname}");
    let mut s = tls_from(ip("127.0.3.4"), addr).unwrap();
    put_head(&mut s, &w, &jpath, &junk, junk.len());
    s.write_all(&junk).unwrap();
    s.flush().unwrap();
    let (status, msg) = read_response(&mut s).unwrap();
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&msg));
    assert!(String::from_utf8_lossy(&msg).contains("not a pack"));

    wait_for("no staging file", || staged(&w.repo()).is_empty());
    assert!(!visible(&w.repo(), &name) && !visible(&w.repo(), &jname));
    assert!(files(&Path::new(&w.repo()).join("packs")).is_empty());
}

/// The vault killed (SIGKILL) mid-upload: only a staging file is left (no
/// visible object); the next start removes it, and the client's retry
/// succeeds.
#[test]
fn a_vault_killed_mid_upload_leaves_only_a_staging_file_removed_at_start() {
    let w = World::new();
    w.init();
    let mut vault = w.start_vault(&[]);
    let addr = vault_addr(&vault.url);
    let (name, body) = pack(32, 3);
    let path = format!("/v1/objects/packs/{name}");
    let mut s = tls_from(ip("127.0.3.5"), addr).unwrap();
    put_head(&mut s, &w, &path, &body, body.len());
    for c in body[..20 << 20].chunks(1 << 20) {
        s.write_all(c).unwrap();
    }
    s.flush().unwrap();
    wait_for("8 MiB staged", || {
        staged(&w.repo())
            .iter()
            .any(|p| std::fs::metadata(p).is_ok_and(|m| m.len() >= 8 << 20))
    });
    vault.child.kill().unwrap();
    vault.child.wait().unwrap();
    drop(s);
    assert_eq!(
        staged(&w.repo()).len(),
        1,
        "one staging file after the kill"
    );
    assert!(!visible(&w.repo(), &name));
    assert!(files(&Path::new(&w.repo()).join("packs")).is_empty());

    let vault = w.start_vault(&[]);
    assert!(
        staged(&w.repo()).is_empty(),
        "the start removes stale staging"
    );
    assert!(vault.stderr().contains("removed 1 staged upload"));
    // The client retries: it goes through, whole.
    let c = raw(&w, &vault.url, &w.key("client"));
    c.put(Kind::Pack, &name, &body).unwrap();
    assert!(visible(&w.repo(), &name));
    assert_eq!(c.get(Kind::Pack, &name).unwrap(), body);
    // Again: idempotent.
    c.put(Kind::Pack, &name, &body).unwrap();
    assert!(staged(&w.repo()).is_empty());
}

/// Eight clients, each with its own key, upload a 32 MiB pack at once:
/// every upload succeeds and the vault's peak RSS (VmHWM of the child)
/// stays under 64 MiB (measured: 26 MiB), where reading bodies whole needed 8 x 32 MiB for
/// the bodies alone. A streamed upload holds two 1 MiB pieces.
#[test]
fn eight_clients_uploading_32_mib_packs_keep_the_vault_small() {
    const BOUND_MIB: u64 = 64;
    let w = World::new();
    let names: Vec<String> = (0..8).map(|i| format!("s{i}")).collect();
    w.init_with(&["--client", &names.join(",")]);
    let vault = w.start_vault(&[]);
    let pid = vault.child.id();
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let key = if i == 0 {
                w.key("client")
            } else {
                w.key(&format!("client-s{i}"))
            };
            let c = raw(&w, &vault.url, &key);
            std::thread::spawn(move || {
                let (name, body) = pack(32, 100 + i as u64);
                c.put(Kind::Pack, &name, &body).map(|()| name)
            })
        })
        .collect();
    let names: Vec<String> = threads
        .into_iter()
        .map(|t| t.join().unwrap().unwrap())
        .collect();
    let peak = peak_rss_kib(pid);
    eprintln!(
        "vault peak RSS with 8 clients uploading 32 MiB packs at once: {} MiB",
        peak / 1024
    );
    for n in &names {
        assert!(visible(&w.repo(), n));
    }
    assert!(staged(&w.repo()).is_empty());
    assert!(
        peak < BOUND_MIB * 1024,
        "vault peak RSS {} MiB (bound {BOUND_MIB} MiB)",
        peak / 1024
    );
}
