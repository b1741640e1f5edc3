//! Loading key files. The passphrase comes from the caller (the CLI reads
//! `HOLDFAST_PASSPHRASE` or the terminal); it is never logged.

use std::path::Path;

use holdfast_core::ObjectId;
use holdfast_core::codec::DecodeError;
use holdfast_core::crypto::{IdKey, Identity, RepoSecret};
use holdfast_core::format::Config;
use holdfast_core::format::Role;
use holdfast_core::keyfile::{
    KeyFile, MAX_KDF_LANES, MAX_KDF_MEMORY_KIB, MAX_KDF_PASSES, MAX_KDF_WORK_KIB, Secret,
};
use holdfast_core::shares::{self, ShareFile};
use zeroize::Zeroizing;

use crate::{Error, Result, io_err};

/// An opened key: its role, name, the config it pins, and the secret.
pub struct Key {
    pub role: Role,
    pub name: String,
    pub config_id: ObjectId,
    pub secret: Secret,
}

impl Key {
    /// Reads and opens a key file; `passphrase` is called only if needed.
    pub fn load(
        path: &Path,
        passphrase: impl FnOnce() -> Result<Zeroizing<String>>,
    ) -> Result<Key> {
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| io_err(path, e))?);
        if ShareFile::is_share(&bytes) {
            let what = ShareFile::decode(&bytes)
                .map(|f| format!(" ({} of a {}-of-{} split)", f.index, f.threshold, f.count))
                .unwrap_or_default();
            return Err(Error::Usage(format!(
                "{}: this is one share of a split restore key{what}: give --key once per share, \
                 or rebuild the key with `holdfast key combine`",
                path.display()
            )));
        }
        let kf = KeyFile::decode(&bytes).map_err(|e| match e {
            DecodeError::TooLarge(what) if what.starts_with("Argon2") => Error::Usage(format!(
                "{}: refused: the key file asks for more Argon2 work than holdfast allows \
                 (at most {} MiB, {} passes, {} lanes, memory × passes {} MiB); \
                 a key file made by `holdfast init` never does",
                path.display(),
                MAX_KDF_MEMORY_KIB >> 10,
                MAX_KDF_PASSES,
                MAX_KDF_LANES,
                MAX_KDF_WORK_KIB >> 10
            )),
            e => Error::Usage(format!("{}: not a holdfast key ({e})", path.display())),
        })?;
        let secret = if kf.needs_passphrase() {
            let pw = passphrase()?;
            kf.open(Some(pw.as_bytes()))
                .map_err(|e| Error::Usage(format!("{}: {e}", path.display())))?
        } else {
            kf.open(None)?
        };
        Ok(Key {
            role: kf.role,
            name: kf.name,
            config_id: kf.config_id,
            secret,
        })
    }

    pub fn id_key(&self) -> Option<&IdKey> {
        match &self.secret {
            Secret::Client { id_key, .. } | Secret::Restore { id_key, .. } => Some(id_key),
            Secret::Signer(_) => None,
        }
    }

    pub fn repo_secret(&self) -> Option<&RepoSecret> {
        match &self.secret {
            Secret::Restore { secret, .. } => Some(secret),
            _ => None,
        }
    }

    pub fn identity(&self) -> Option<&Identity> {
        match &self.secret {
            Secret::Client { identity, .. } | Secret::Restore { identity, .. } => Some(identity),
            Secret::Signer(i) => Some(i),
        }
    }

    /// When `config` (the bytes of the config found at `location`, which
    /// are not the config this key pins) is plainly another repository's,
    /// the error saying so: a well-formed config that does not list this
    /// key's identity. None when it lists this key (a config altered under
    /// it: tampering) or does not decode (damage): the caller reports those.
    pub fn wrong_repository(&self, location: &str, config: &[u8]) -> Option<Error> {
        let found = ObjectId::of(config);
        if found == self.config_id {
            return None;
        }
        let public = self.identity()?.public();
        let c = Config::decode(config).ok()?;
        if c.members.iter().any(|m| m.public == public) {
            return None;
        }
        Some(Error::WrongRepository {
            location: location.to_string(),
            expected: self.config_id.short(),
            found: format!("the repository of config id {}", found.short()),
        })
    }

    /// The restore key, or a clear refusal naming what is needed.
    pub fn require_restore(&self, what: &str) -> Result<(&IdKey, &RepoSecret)> {
        match &self.secret {
            Secret::Restore { id_key, secret, .. } => Ok((id_key, secret)),
            _ => Err(Error::Usage(format!(
                "{what} needs the restore key (restore.key); a {} key cannot decrypt",
                self.role.name()
            ))),
        }
    }
}

/// Writes a key file with mode 0600, crash-safely, refusing to overwrite.
pub fn write_key_file(path: &Path, kf: &KeyFile) -> Result<()> {
    write_secret_file(path, &kf.encode())
}

/// Writes secret bytes (a key file, a key share) with mode 0600,
/// crash-safely, refusing to overwrite.
pub fn write_secret_file(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("key.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| io_err(&tmp, e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| io_err(&tmp, e))?;
    let r = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    r.map_err(|e| io_err(path, e))?;
    if let Some(dir) = path.parent() {
        let _ = holdfast_store::fsync_dir(dir);
    }
    Ok(())
}

/// Puts a key file in place of the one at `path` (a new passphrase, a
/// binding): written beside it with mode 0600 and fsynced, checked to open
/// with `check`, renamed over the old file, then the directory fsynced. A
/// crash leaves the old file or the new one, never half of either.
pub fn replace_key_file(
    path: &Path,
    kf: &KeyFile,
    check: impl FnOnce(&KeyFile) -> Result<()>,
) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let name = path
        .file_name()
        .ok_or_else(|| Error::Usage(format!("{}: not a file name", path.display())))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".replacing");
    let tmp = path.with_file_name(tmp_name);
    // A leftover of a crashed run is ours (never a key in use): remove it.
    let _ = std::fs::remove_file(&tmp);
    let bytes = kf.encode();
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io_err(&tmp, e))?;
        f.write_all(&bytes)
            .and_then(|_| f.sync_all())
            .map_err(|e| io_err(&tmp, e))?;
        let back = Zeroizing::new(std::fs::read(&tmp).map_err(|e| io_err(&tmp, e))?);
        let again =
            KeyFile::decode(&back).map_err(|e| Error::Usage(format!("{}: {e}", tmp.display())))?;
        check(&again)?;
        std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        holdfast_store::fsync_dir(dir).map_err(|e| io_err(dir, e))?;
    }
    Ok(())
}

/// Reads key shares and rebuilds the restore key from them. `passphrase`
/// is called with the share's path, only for shares that need one.
pub fn load_shares(
    paths: &[std::path::PathBuf],
    mut passphrase: impl FnMut(&Path) -> Result<Zeroizing<String>>,
) -> Result<Key> {
    let mut opened = Vec::with_capacity(paths.len());
    for p in paths {
        let bytes = Zeroizing::new(std::fs::read(p).map_err(|e| io_err(p, e))?);
        let f =
            ShareFile::decode(&bytes).map_err(|e| Error::Usage(format!("{}: {e}", p.display())))?;
        let b = if f.needs_passphrase() {
            let pw = passphrase(p)?;
            f.open(Some(pw.as_bytes()))
        } else {
            f.open(None)
        }
        .map_err(|e| Error::Usage(format!("{}: {e}", p.display())))?;
        opened.push((f, b));
    }
    let secret = shares::combine(&opened).map_err(|e| Error::Usage(e.to_string()))?;
    let f = &opened[0].0;
    Ok(Key {
        role: Role::Restore,
        name: f.name.clone(),
        config_id: f.config_id,
        secret,
    })
}

/// True when the file at `path` is a key share rather than a key file.
pub fn is_share_file(path: &Path) -> bool {
    use std::io::Read;
    // A regular file only: a FIFO given as a key would block here.
    if !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
        return false;
    }
    let mut head = [0u8; 8];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|_| ShareFile::is_share(&head))
}
