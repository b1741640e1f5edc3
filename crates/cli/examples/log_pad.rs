//! Makes a vault's log long, for measuring clients against it
//! (bench/results/vault-scale.md, "The client and a long log").
//!
//! `log_pad REPO_DIR VAULT_KEY N` (vault stopped; passphrase in
//! HOLDFAST_PASSPHRASE) appends N `LockExtended` entries by the vault key
//! for snapshots that are not live (about 100 bytes each, and no problem to
//! any reader), each 1 ns after the one before, to `REPO_DIR/vault/log`, drops `log.nodes` (the vault rebuilds it on open)
//! and signs a checkpoint over the whole log with the vault key, as the
//! vault would have.

use std::io::Write;
use std::path::Path;

use holdfast_core::merkle::{self, Checkpoint, Frontier};
use holdfast_core::vaultlog::{Entry, Event, frame, split_log};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let (dir, key, n): (&Path, &Path, u64) =
        (Path::new(&a[1]), Path::new(&a[2]), a[3].parse().expect("N"));
    let pass = std::env::var("HOLDFAST_PASSPHRASE").expect("HOLDFAST_PASSPHRASE");
    let vk = holdfast_repo::keys::Key::load(key, || Ok(zeroize::Zeroizing::new(pass.clone())))
        .expect("vault key");
    let log = dir.join("vault/log");
    let raw = std::fs::read(&log).expect("vault/log");
    let (entries, torn) = split_log(&raw);
    assert_eq!(torn, 0);
    let mut tree = Frontier::new();
    let mut last = 0;
    for e in &entries {
        tree.push(merkle::leaf_hash(e));
        last = Entry::decode(e).expect("entry").time_ns;
    }
    drop(raw);
    let mut f =
        std::io::BufWriter::new(std::fs::OpenOptions::new().append(true).open(&log).unwrap());
    let mut buf = Vec::new();
    for i in 0..n {
        let e = Entry {
            time_ns: last + 1 + i as i64,
            event: Event::LockExtended {
                snapshot: holdfast_core::ObjectId(*blake3::hash(&i.to_le_bytes()).as_bytes()),
                until_ns: last + 86_400_000_000_000,
                admin: vk.identity().expect("a vault key").public(),
            },
        }
        .encode();
        tree.push(merkle::leaf_hash(&e));
        buf.clear();
        frame(&e, &mut buf);
        f.write_all(&buf).unwrap();
    }
    f.into_inner().unwrap().sync_all().unwrap();
    let _ = std::fs::remove_file(dir.join("vault/log.nodes"));
    let _ = std::fs::remove_file(dir.join("vault/checkpoint.next"));
    let cp = Checkpoint::sign(
        vk.config_id.0,
        tree.size(),
        tree.root(),
        holdfast_repo::now_ns(),
        vk.identity().expect("a vault key"),
    );
    std::fs::write(dir.join("vault/checkpoint"), cp.encode()).unwrap();
    println!("{} entries", tree.size());
}
