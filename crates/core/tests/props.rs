//! Property tests: format round trips, and no decoder panics on random or
//! mutated input.

use holdfast_core::crypto::{IdKey, Identity, RepoSecret, seal_session};
use holdfast_core::format::*;
use holdfast_core::{BlobId, ObjectId, decode_any};
use proptest::prelude::*;

fn name() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(1u8..=255, 1..20).prop_filter("valid name", |n| {
        !n.contains(&b'/') && n != b"." && n != b".."
    })
}

fn node() -> impl Strategy<Value = Node> {
    let kind = prop_oneof![
        (
            any::<u64>(),
            proptest::collection::vec(any::<[u8; 32]>(), 0..4)
        )
            .prop_map(|(size, c)| {
                NodeKind::File {
                    size,
                    chunks: c.into_iter().map(BlobId).collect(),
                }
            }),
        any::<[u8; 32]>().prop_map(|s| NodeKind::Dir { subtree: BlobId(s) }),
        proptest::collection::vec(any::<u8>(), 0..50).prop_map(|t| NodeKind::Symlink { target: t }),
    ];
    (
        name(),
        0u32..=0o7777,
        any::<u32>(),
        any::<u32>(),
        any::<i64>(),
        0u32..1_000_000_000,
        kind,
    )
        .prop_map(|(name, mode, uid, gid, mtime_s, mtime_ns, kind)| Node {
            name,
            mode,
            uid,
            gid,
            mtime_s,
            mtime_ns,
            kind,
        })
}

proptest! {
    #[test]
    fn tree_round_trip(mut nodes in proptest::collection::vec(node(), 0..20)) {
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        nodes.dedup_by(|a, b| a.name == b.name);
        let t = Tree { nodes };
        prop_assert_eq!(Tree::decode(&t.encode()).unwrap(), t);
    }

    #[test]
    fn snapshot_round_trip(
        packs in proptest::collection::btree_set(any::<[u8; 32]>(), 0..10),
        host in "[a-z0-9.-]{0,20}",
        paths in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..30), 0..3),
        time in any::<i64>(),
    ) {
        let secret = RepoSecret::from_bytes([3; 32]);
        let client = Identity::from_bytes([4; 32]);
        let (epk, key) = seal_session(&secret.public()).unwrap();
        let header = SnapshotHeader {
            config_id: ObjectId([1; 32]),
            client: client.public(),
            time_ns: time,
            parent: None,
            packs: packs.into_iter().map(ObjectId).collect(),
            epk,
        };
        let body = SnapshotBody { hostname: host, paths, ..Default::default() };
        let (id, bytes) = Snapshot::create(header.clone(), &body, &key, &client).unwrap();
        prop_assert_eq!(id, ObjectId::of(&bytes));
        let s = Snapshot::decode(&bytes).unwrap();
        prop_assert_eq!(&s.header, &header);
        prop_assert_eq!(s.open_body(&secret).unwrap(), body);
    }

    #[test]
    fn pack_round_trip(blobs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..3000), 1..8)) {
        let secret = RepoSecret::from_bytes([3; 32]);
        let idk = IdKey::from_bytes([5; 32]);
        let (epk, key) = seal_session(&secret.public()).unwrap();
        let mut pb = PackBuilder::new(&epk, 0);
        for b in &blobs {
            let id = idk.blob_id(b);
            let (flags, sealed) = seal_blob(&key, &id, KIND_DATA, b, 3).unwrap();
            pb.add(id, KIND_DATA, flags, b.len() as u32, &sealed);
        }
        let (_, bytes, entries) = pb.finish();
        let (epk2, parsed) = parse_pack(&bytes).unwrap();
        prop_assert_eq!(&parsed, &entries);
        let k = secret.open_session(&epk2).unwrap();
        for (e, b) in parsed.iter().zip(&blobs) {
            let sealed = &bytes[e.offset as usize..(e.offset + e.stored_len) as usize];
            prop_assert_eq!(&open_blob(&k, &idk, e, sealed).unwrap(), b);
        }
    }

    #[test]
    fn decoders_never_panic_on_random_input(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
        decode_any(&data);
    }

    #[test]
    fn decoders_never_panic_on_mutated_records(
        which in 0usize..4,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cut in any::<usize>(),
    ) {
        let secret = RepoSecret::from_bytes([3; 32]);
        let client = Identity::from_bytes([4; 32]);
        let (epk, key) = seal_session(&secret.public()).unwrap();
        let mut rec = match which {
            0 => {
                let (_, b) = Snapshot::create(
                    SnapshotHeader { config_id: ObjectId([1; 32]), client: client.public(), time_ns: 0, parent: Some(ObjectId([2; 32])), packs: vec![ObjectId([3; 32])], epk },
                    &SnapshotBody::default(), &key, &client).unwrap();
                b
            }
            1 => {
                let mut pb = PackBuilder::new(&epk, 0);
                let (f, s) = seal_blob(&key, &BlobId([1; 32]), KIND_TREE, b"xyz", 3).unwrap();
                pb.add(BlobId([1; 32]), KIND_TREE, f, 3, &s);
                pb.finish().1
            }
            2 => Tree { nodes: vec![Node { name: b"a".to_vec(), mode: 0o644, uid: 0, gid: 0, mtime_s: 0, mtime_ns: 0, kind: NodeKind::File { size: 1, chunks: vec![BlobId([0; 32])] } }] }.encode(),
            _ => SnapshotBody { hostname: "h".into(), paths: vec![b"/x".to_vec()], ..Default::default() }.encode(),
        };
        for (pos, x) in flips {
            let n = rec.len();
            rec[pos % n] ^= x;
        }
        rec.truncate(cut % (rec.len() + 1));
        decode_any(&rec);
    }

    /// Well-formed log entries in any order, with any times and ids, from
    /// the fold's fixed members (1, 2 admins; 3 client; 4 vault) and from
    /// strangers: the fold answers with problems, never a panic.
    #[test]
    fn the_log_fold_never_panics_on_crafted_logs(
        events in proptest::collection::vec((any::<i64>(), 0u8..7, 0u8..6, 0u8..6), 0..40),
    ) {
        use holdfast_core::vaultlog::{Entry, Event, frame};
        let mut raw = Vec::new();
        for (t, kind, a, b) in events {
            let id = ObjectId([a; 32]);
            let key = [b; 32];
            let event = match kind {
                0 => Event::SnapshotAdded { snapshot: id, client: key, lock_until_ns: t / 2 },
                1 => Event::LockExtended { snapshot: id, until_ns: t, admin: key },
                2 => Event::Proposed { proposal: vec![a; 40] },
                3 => Event::Voted { vote: vec![b; 40] },
                4 => Event::Executed { proposal: id },
                5 => Event::Reclaimed { snapshots: vec![id], packs: vec![ObjectId([b; 32])] },
                _ => Event::IdentityAdded { record: id },
            };
            frame(&Entry { time_ns: t, event }.encode(), &mut raw);
        }
        holdfast_core::logstate::fold_any(&raw);
    }
}
