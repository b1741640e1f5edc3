//! `holdfast init`: a new repository and one key file per role.

use std::path::Path;

use holdfast_core::ObjectId;
use holdfast_core::crypto::{IdKey, Identity, KdfParams, RepoSecret, random_bytes};
use holdfast_core::format::{Chunking, Config, IdentityRecord, Member, Retention, Role};
use holdfast_core::keyfile::{KeyFile, Secret};
use holdfast_store::{Backend, Kind, StoreError};

use crate::keys::{Key, write_key_file};
use crate::{Error, Result, io_err, now_ns};

pub struct InitOptions {
    pub admins: u32,
    pub quorum: u32,
    pub clients: Vec<String>,
    pub retention: Retention,
    pub delay_secs: u64,
    pub grace_secs: u64,
    pub kdf: KdfParams,
    /// Admins who made their own keys (`key new admin`): name and public
    /// key. When given, they are the admins (`admins` must match) and no
    /// admin key file is written: no admin secret passes through `init`.
    pub admin_publics: Vec<(String, [u8; 32])>,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            admins: 3,
            quorum: 2,
            clients: vec!["client".into()],
            retention: Retention::DEFAULT,
            delay_secs: 72 * 3600,
            grace_secs: 86_400,
            kdf: KdfParams::DEFAULT,
            admin_publics: Vec::new(),
        }
    }
}

/// File name of a client key: `client.key` for the first, `client-NAME.key`.
fn client_file(i: usize, name: &str) -> String {
    if i == 0 {
        "client.key".into()
    } else {
        format!("client-{name}.key")
    }
}

/// Creates the repository config in `backend` and writes key files into
/// `keydir`. Returns the config id.
pub fn init(
    backend: &dyn Backend,
    keydir: &Path,
    opts: &InitOptions,
    passphrase: &[u8],
) -> Result<ObjectId> {
    if opts.admins == 0 || opts.quorum == 0 || opts.quorum > opts.admins {
        return Err(Error::Usage(format!(
            "quorum {} of {} admins is impossible",
            opts.quorum, opts.admins
        )));
    }
    if opts.clients.is_empty() {
        return Err(Error::Usage("at least one client is needed".into()));
    }
    let own_admins = !opts.admin_publics.is_empty();
    if own_admins && opts.admin_publics.len() != opts.admins as usize {
        return Err(Error::Usage(format!(
            "{} admin public keys for {} admins",
            opts.admin_publics.len(),
            opts.admins
        )));
    }
    for (i, (n, p)) in opts.admin_publics.iter().enumerate() {
        if opts.admin_publics[..i]
            .iter()
            .any(|(m, q)| m == n || q == p)
        {
            return Err(Error::Usage(format!(
                "admin {n:?} given twice (same name or same key)"
            )));
        }
    }
    std::fs::create_dir_all(keydir).map_err(|e| io_err(keydir, e))?;
    let admin_files = if own_admins { 0 } else { opts.admins };
    let planned: Vec<String> = std::iter::once("restore.key".to_string())
        .chain((1..=admin_files).map(|i| format!("admin-{i}.key")))
        .chain(
            opts.clients
                .iter()
                .enumerate()
                .map(|(i, n)| client_file(i, n)),
        )
        .chain([
            "replica.key".into(),
            "auditor.key".into(),
            "vault.key".into(),
        ])
        .collect();
    for f in &planned {
        if keydir.join(f).exists() {
            return Err(Error::Usage(format!(
                "{} already exists; refusing to overwrite a key",
                keydir.join(f).display()
            )));
        }
    }

    let secret = RepoSecret::generate()?;
    let id_key = IdKey::generate()?;
    let admins: Vec<Identity> = (0..admin_files)
        .map(|_| Identity::generate())
        .collect::<std::result::Result<_, _>>()?;
    let clients: Vec<Identity> = opts
        .clients
        .iter()
        .map(|_| Identity::generate())
        .collect::<std::result::Result<_, _>>()?;
    let replica = Identity::generate()?;
    let auditor = Identity::generate()?;
    let vault = Identity::generate()?;
    let restore = Identity::generate()?;

    let mut members: Vec<Member> = admins
        .iter()
        .enumerate()
        .map(|(i, a)| Member {
            role: Role::Admin,
            name: format!("admin-{}", i + 1),
            public: a.public(),
        })
        .chain(opts.admin_publics.iter().map(|(name, public)| Member {
            role: Role::Admin,
            name: name.clone(),
            public: *public,
        }))
        .collect();
    for (c, name) in clients.iter().zip(&opts.clients) {
        members.push(Member {
            role: Role::Client,
            name: name.clone(),
            public: c.public(),
        });
    }
    members.push(Member {
        role: Role::Replica,
        name: "replica".into(),
        public: replica.public(),
    });
    members.push(Member {
        role: Role::Auditor,
        name: "auditor".into(),
        public: auditor.public(),
    });
    members.push(Member {
        role: Role::Restore,
        name: "restore".into(),
        public: restore.public(),
    });
    // The vault's key: signs checkpoints and is its TLS identity, pinned by
    // every client through this config.
    members.push(Member {
        role: Role::Vault,
        name: "vault".into(),
        public: vault.public(),
    });
    let config = Config {
        repo_id: random_bytes()?,
        repo_public: secret.public(),
        chunking: Chunking::DEFAULT,
        // 8 MiB: few objects to lock on S3, and at most two packs in
        // memory (one filling, one being written) keeps a backup small.
        pack_target: 8 << 20,
        zstd_level: 3,
        members,
        quorum: opts.quorum,
        retention: opts.retention.clone(),
        delay_secs: opts.delay_secs,
        grace_secs: opts.grace_secs,
    };
    let bytes = config.encode();
    let config_id = ObjectId::of(&bytes);

    // Keys first: a repository without its restore key would be useless.
    let pw = Some((passphrase, opts.kdf));
    let write = |file: &str, role: Role, name: &str, s: Secret, pw| -> Result<()> {
        let kf = KeyFile::seal(role, name, config_id, &s, pw)?;
        write_key_file(&keydir.join(file), &kf)
    };
    write(
        "restore.key",
        Role::Restore,
        "restore",
        Secret::Restore {
            id_key: id_key.clone(),
            secret: secret.clone(),
            identity: restore,
        },
        pw,
    )?;
    for (i, a) in admins.into_iter().enumerate() {
        let name = format!("admin-{}", i + 1);
        write(
            &format!("{name}.key"),
            Role::Admin,
            &name,
            Secret::Signer(a),
            pw,
        )?;
    }
    for (i, (c, name)) in clients.into_iter().zip(&opts.clients).enumerate() {
        write(
            &client_file(i, name),
            Role::Client,
            name,
            Secret::Client {
                id_key: id_key.clone(),
                repo_public: config.repo_public,
                identity: c,
            },
            None,
        )?;
    }
    write(
        "replica.key",
        Role::Replica,
        "replica",
        Secret::Signer(replica),
        None,
    )?;
    write(
        "auditor.key",
        Role::Auditor,
        "auditor",
        Secret::Signer(auditor),
        None,
    )?;
    // The vault key lives on the vault host only; it is not passphrase
    // protected so the service can start unattended.
    write(
        "vault.key",
        Role::Vault,
        "vault",
        Secret::Signer(vault),
        None,
    )?;
    backend.put(Kind::Config, "config", &bytes)?;
    Ok(config_id)
}

/// `holdfast key new client NAME`: a new client identity, signed by an admin,
/// taking the id key and repository public key from an existing client or
/// restore key.
pub fn new_client(
    repo: &crate::Repository,
    from: &Key,
    admin: &Key,
    name: &str,
    out: &Path,
) -> Result<()> {
    let id_key = from
        .id_key()
        .ok_or_else(|| Error::Usage("--key must be a client or restore key".into()))?;
    if from.config_id != repo.config_id || admin.config_id != repo.config_id {
        return Err(Error::Usage(
            "--key and --admin-key must belong to this repository".into(),
        ));
    }
    let admin_id = match (admin.role, admin.identity()) {
        (Role::Admin, Some(i)) => i,
        _ => return Err(Error::Usage("--admin-key must be an admin key".into())),
    };
    if repo.members.values().any(|m| m.name == name) {
        return Err(Error::Usage(format!("an identity named {name:?} exists")));
    }
    let client = Identity::generate()?;
    let rec = IdentityRecord::new(
        repo.config_id,
        Member {
            role: Role::Client,
            name: name.into(),
            public: client.public(),
        },
        admin_id,
        now_ns(),
    );
    let kf = KeyFile::seal(
        Role::Client,
        name,
        repo.config_id,
        &Secret::Client {
            id_key: id_key.clone(),
            repo_public: repo.config.repo_public,
            identity: client,
        },
        None,
    )?;
    write_key_file(out, &kf)?;
    let bytes = rec.encode();
    repo.backend
        .put(Kind::Identity, &ObjectId::of(&bytes).to_hex(), &bytes)?;
    Ok(())
}

/// `holdfast key rotate client`: a new key for the client whose key is
/// `old`, as a successor record (format.md §4.3) signed by `old` and by the
/// admin `admin`. The new key file (same name, same id key, so
/// deduplication goes on) is written to `out` first, then the record is
/// stored (through a vault: the vault checks it and logs it, which revokes
/// `old` at once). Returns the new key's public half.
pub fn rotate_client(
    repo: &crate::Repository,
    old: &Key,
    admin: &Key,
    out: &Path,
) -> Result<[u8; 32]> {
    let Secret::Client {
        id_key,
        repo_public,
        identity: old_id,
    } = &old.secret
    else {
        return Err(Error::Usage(
            "--key must be the client key to replace".into(),
        ));
    };
    if old.config_id != repo.config_id || admin.config_id != repo.config_id {
        return Err(Error::Usage(
            "--key and --admin-key must belong to this repository".into(),
        ));
    }
    let admin_id = match (admin.role, admin.identity()) {
        (Role::Admin, Some(i)) => i,
        _ => return Err(Error::Usage("--admin-key must be an admin key".into())),
    };
    let pred = old_id.public();
    let name = match repo.members.get(&pred) {
        Some(m) if m.role == Role::Client => m.name.clone(),
        _ => {
            return Err(Error::Usage(
                "--key is not a client identity of this repository".into(),
            ));
        }
    };
    if let Some(l) = &repo.log
        && !l.state.is_client(&pred)
    {
        return Err(Error::Usage(format!(
            "client {name:?}: this key was revoked or already replaced (see `holdfast audit`)"
        )));
    }
    if out.exists() {
        return Err(Error::Usage(format!(
            "{} exists; a key is never written over a file",
            out.display()
        )));
    }
    let new = Identity::generate()?;
    let public = new.public();
    let rec = IdentityRecord::successor(repo.config_id, &name, public, old_id, admin_id, now_ns());
    let kf = KeyFile::seal(
        Role::Client,
        &name,
        repo.config_id,
        &Secret::Client {
            id_key: id_key.clone(),
            repo_public: *repo_public,
            identity: new,
        },
        None,
    )?;
    // The key first: once the record joins, the old key is revoked, and
    // this file is the client's only key.
    write_key_file(out, &kf)?;
    let bytes = rec.encode();
    match repo
        .backend
        .put(Kind::Identity, &ObjectId::of(&bytes).to_hex(), &bytes)
    {
        Ok(()) => Ok(public),
        // Refused for certain: the new key never joined and is removed
        // (it was never used), and the error says so.
        Err(StoreError::Refused(why)) => {
            let gone = std::fs::remove_file(out).is_ok();
            Err(StoreError::Refused(format!(
                "{why}; {}",
                if gone {
                    format!("{} removed (the new key never joined)", out.display())
                } else {
                    format!("{} holds a key that never joined: delete it", out.display())
                }
            ))
            .into())
        }
        // Any other failure may have joined it at the vault: the file
        // stays (it may be the client's only key now).
        Err(e) => Err(e.into()),
    }
}
