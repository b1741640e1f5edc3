//! Loading key files. The passphrase comes from the caller (the CLI reads
//! `HOLDFAST_PASSPHRASE` or the terminal); it is never logged.

use std::path::Path;

use holdfast_core::ObjectId;
use holdfast_core::crypto::{IdKey, Identity, RepoSecret};
use holdfast_core::format::Role;
use holdfast_core::keyfile::{KeyFile, Secret};
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
        let kf = KeyFile::decode(&bytes)
            .map_err(|e| Error::Usage(format!("{}: not a holdfast key ({e})", path.display())))?;
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
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let bytes = kf.encode();
    let tmp = path.with_extension("key.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| io_err(&tmp, e))?;
    f.write_all(&bytes)
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
