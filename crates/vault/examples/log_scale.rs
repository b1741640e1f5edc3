//! Start-up cost of the vault's log at scale (bench/vault_scale.py runs it).
//!
//! `log_scale gen DIR N` writes a log of N `SnapshotAdded` entries and its
//! signed checkpoint (as the vault would have, without N fsyncs);
//! `log_scale open DIR` opens it as the vault does at start (read, verify
//! against the checkpoint, build the Merkle tree) and prints the time, the
//! process's peak RSS (measured before the proofs are checked against the
//! O(n) reference, which reads every leaf), and the cost of a consistency
//! and an inclusion proof.

use std::time::Instant;

use holdfast_core::ObjectId;
use holdfast_core::crypto::Identity;
use holdfast_core::merkle::{self, Checkpoint};
use holdfast_core::vaultlog::{Entry, Event, frame};
use holdfast_vault::logstore::LogStore;

fn peak_rss_mib() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<f64>().ok())
        .map_or(0.0, |k| k / 1024.0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let id = Identity::from_bytes([7; 32]);
    let cfg = [3u8; 32];
    let dir = std::path::PathBuf::from(&args[2]);
    match args[1].as_str() {
        "gen" => {
            let n: u64 = args[3].parse().expect("N");
            std::fs::create_dir_all(&dir).unwrap();
            let mut raw = Vec::new();
            let mut f = Vec::new();
            let mut frontier: Vec<(u32, merkle::Hash)> = Vec::new();
            for i in 0..n {
                let mut s = [0u8; 32];
                s[..8].copy_from_slice(&i.to_le_bytes());
                let e = Entry {
                    time_ns: 1_700_000_000_000_000_000 + i as i64,
                    event: Event::SnapshotAdded {
                        snapshot: ObjectId(*blake3::hash(&s).as_bytes()),
                        client: [(i % 251) as u8; 32],
                        lock_until_ns: 1_800_000_000_000_000_000,
                    },
                }
                .encode();
                frontier.push((0, merkle::leaf_hash(&e)));
                while frontier.len() >= 2
                    && frontier[frontier.len() - 1].0 == frontier[frontier.len() - 2].0
                {
                    let (l, r) = frontier.pop().unwrap();
                    let (_, left) = frontier.pop().unwrap();
                    frontier.push((l + 1, merkle::node_hash(&left, &r)));
                }
                frame(&e, &mut raw);
                if raw.len() > 8 << 20 {
                    f.push(std::mem::take(&mut raw));
                }
            }
            f.push(raw);
            std::fs::write(dir.join("log"), f.concat()).unwrap();
            let mut it = frontier.iter().rev();
            let root = match it.next() {
                None => merkle::empty_root(),
                Some((_, last)) => it.fold(*last, |acc, (_, h)| merkle::node_hash(h, &acc)),
            };
            let cp = Checkpoint::sign(cfg, n, root, 1_700_000_000_000_000_000 + n as i64, &id);
            std::fs::write(dir.join("checkpoint"), cp.encode()).unwrap();
        }
        "open" => {
            let t = Instant::now();
            let log = LogStore::open(&dir, cfg, Some(&id), 1_800_000_000_000_000_000).unwrap();
            let open_s = t.elapsed().as_secs_f64();
            let n = log.checkpoint.size;
            let t = Instant::now();
            let p = log.consistency(n / 2 + 1).unwrap();
            let cons_ms = t.elapsed().as_secs_f64() * 1e3;
            let t = Instant::now();
            let q = log.inclusion(n / 3).unwrap();
            let incl_ms = t.elapsed().as_secs_f64() * 1e3;
            let rss = peak_rss_mib();
            // Checked against the reference (every leaf, O(n)) once.
            let raw = std::fs::read(dir.join("log")).unwrap();
            let leaves: Vec<merkle::Hash> = holdfast_core::vaultlog::split_log(&raw)
                .0
                .iter()
                .map(|e| merkle::leaf_hash(e))
                .collect();
            drop(raw);
            assert_eq!(
                Some(p.clone()),
                merkle::consistency_proof(&leaves, (n / 2 + 1) as usize)
            );
            assert_eq!(
                Some(q.clone()),
                merkle::inclusion_proof(&leaves, (n / 3) as usize)
            );
            println!(
                "{{\"entries\": {n}, \"open_s\": {open_s:.3}, \"peak_rss_mib\": {:.1}, \
                 \"consistency_ms\": {cons_ms:.3}, \"consistency_len\": {}, \
                 \"inclusion_ms\": {incl_ms:.3}, \"inclusion_len\": {}}}",
                rss,
                p.len(),
                q.len()
            );
        }
        _ => panic!("gen DIR N | open DIR"),
    }
}
