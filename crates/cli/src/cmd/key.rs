use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};

use crate::util;

#[derive(clap::Subcommand)]
pub enum KeyCommand {
    /// Add an identity
    New(NewArgs),
    /// Split the restore key into N shares, any M of which rebuild it
    /// (Shamir's scheme over GF(256)). Each share file gets its own
    /// passphrase (asked per share; HOLDFAST_PASSPHRASE gives all the same
    /// one when scripted). Splitting again does not revoke old shares:
    /// they still rebuild the key; revoking a shareholder means rotating.
    Split(SplitArgs),
    /// Rebuild the restore key from M shares into a new key file
    Combine(CombineArgs),
    /// `restore`: start a new restore key epoch: write a new restore key
    /// (which also holds every earlier epoch's secret, so it reads
    /// everything) and propose it to the admins. Once a quorum approved it
    /// and the delay passed, clients seal new data to it; the old key (and
    /// its shares) reads nothing written after. Deduplication goes on
    /// across it. `client`: give a client a new key (--key: its current
    /// key; --admin-key: an admin, who signs with it): the new key is the
    /// same client (name, history, detection baseline, cache), the old one
    /// is revoked the moment the vault logs it.
    Rotate(RotateArgs),
    /// Revoke a client identity through the vault, at once and for good
    /// (one admin; logged and alerted). Issue the server a new identity
    /// with `key new client OTHER-NAME` (or, for a key that is still
    /// yours, `key rotate client`). Admins, replicas and auditors are
    /// removed by a quorum proposal instead (`propose remove`).
    Revoke(RevokeArgs),
    /// Change the passphrase of a restore or admin key file (replaced
    /// crash-safely: a crash leaves the old file or the new one). The old
    /// passphrase comes from the usual sources; the new one from
    /// --new-passphrase-file, else the terminal (asked twice)
    Passwd(PasswdArgs),
    /// Tie an admin key made before `init` (`key new admin`) to the
    /// repository whose config id `init` printed
    Bind(BindArgs),
}

#[derive(clap::Args)]
pub struct PasswdArgs {
    /// The key file whose passphrase changes
    #[arg(long)]
    pub key: PathBuf,
    /// Read the new passphrase from the first line of FILE
    #[arg(long, value_name = "FILE")]
    pub new_passphrase_file: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct RotateArgs {
    /// What to rotate: `restore` or `client`
    pub what: String,
    /// The vault (https://…), or for `client` also a directory
    #[arg(long)]
    pub repo: String,
    /// `restore`: an admin key (signs the proposal). `client`: the
    /// client's current key (signs its successor)
    #[arg(long)]
    pub key: PathBuf,
    /// `restore`: the current restore key (or repeat --restore-key with M
    /// shares)
    #[arg(long = "restore-key")]
    pub restore_key: Vec<PathBuf>,
    /// `client`: an admin key, which signs the new key's record
    #[arg(long)]
    pub admin_key: Option<PathBuf>,
    /// Where to write the new key (a restore key asks for its passphrase)
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(clap::Args)]
pub struct RevokeArgs {
    /// Role of the identity (only `client`)
    pub role: String,
    /// Its name
    pub name: String,
    /// The vault (https://…)
    #[arg(long)]
    pub repo: String,
    /// An admin key
    #[arg(long)]
    pub key: PathBuf,
}

#[derive(clap::Args)]
pub struct SplitArgs {
    /// The restore key to split (it is left in place: delete it yourself
    /// once the shares are handed out and tested)
    #[arg(long)]
    pub key: PathBuf,
    /// How many shares rebuild the key (M, at least 2)
    #[arg(long)]
    pub threshold: u8,
    /// How many shares to write (N, at most 255)
    #[arg(long)]
    pub shares: u8,
    /// Directory for the share files (created; files are never overwritten)
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct CombineArgs {
    /// Where to write the rebuilt restore key (asks for its passphrase)
    #[arg(long)]
    pub out: PathBuf,
    /// The share files (at least M of one split)
    #[arg(required = true)]
    pub shares: Vec<PathBuf>,
}

#[derive(clap::Args)]
pub struct NewArgs {
    /// `client`: a new client identity in an existing repository (--repo,
    /// --key, --admin-key). `admin`: an admin key made on its holder's own
    /// machine before `init`: writes the key (passphrase-protected) to
    /// --out and its public half beside it (NAME.pub), for `init
    /// --admin-pub`; then `key bind` ties it to the repository. `vault`:
    /// the next vault key, for a rotation (--key: the current vault key
    /// or any key of the repository): writes it to --out like init's
    /// vault.key, and its public half with a proof of possession beside
    /// it (FILE.pub), for `propose vault-key`
    pub role: String,
    /// Its name (not for `vault`)
    #[arg(default_value = "")]
    pub name: String,
    #[arg(long)]
    pub repo: Option<String>,
    /// An existing client key or the restore key (the new key copies its id key)
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// An admin key, which signs the new identity
    #[arg(long)]
    pub admin_key: Option<PathBuf>,
    /// Where to write the new key file
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(clap::Args)]
pub struct BindArgs {
    /// The admin key made by `key new admin`
    #[arg(long)]
    pub key: PathBuf,
    /// The repository's full config id, as `init` printed it: get it from
    /// whoever ran init over a channel you trust
    #[arg(long, value_name = "ID")]
    pub config: String,
    /// Also check that the repository there is that config and lists this
    /// key as an admin (a directory, s3:// or bundle:)
    #[arg(long)]
    pub repo: Option<String>,
}

pub fn run(k: KeyCommand) -> Result<ExitCode> {
    match k {
        KeyCommand::Split(a) => split(a),
        KeyCommand::Combine(a) => combine(a),
        KeyCommand::Revoke(a) => revoke(a),
        KeyCommand::Rotate(a) => rotate(a),
        KeyCommand::Passwd(a) => passwd(a),
        KeyCommand::New(a) if a.role == "admin" => new_admin(a),
        KeyCommand::New(a) if a.role == "vault" => new_vault(a),
        KeyCommand::New(a) => {
            if a.role != "client" {
                bail!(
                    "a new identity is a client or an admin made before init (got {:?})",
                    a.role
                );
            }
            let (Some(repo), Some(key), Some(admin_key)) = (&a.repo, &a.key, &a.admin_key) else {
                bail!("key new client needs --repo, --key and --admin-key");
            };
            if a.name.is_empty() {
                bail!("key new client needs a NAME");
            }
            // Through a vault, the admin signs the request that adds the
            // identity; on a directory, the record is simply written.
            let (repo, from, admin) = if repo.starts_with("https://") {
                let (_, repo, admin) = util::open_vault(repo, admin_key)?;
                (repo, util::load_key(key)?, admin)
            } else {
                let (repo, from) = util::open(repo, key)?;
                (repo, from, util::load_key(admin_key)?)
            };
            holdfast_repo::init::new_client(&repo, &from, &admin, &a.name, &a.out)?;
            util::out(format!(
                "client {} added; key in {}",
                a.name,
                a.out.display()
            ));
            Ok(ExitCode::SUCCESS)
        }
        KeyCommand::Bind(a) => bind(a),
    }
}

/// The tag of a new vault key's public file (`key new vault`).
pub const VAULT_PUB_TAG: &str = "holdfast-vault-public";

/// `key new vault`: the next vault key of a repository, for a rotation.
fn new_vault(a: NewArgs) -> Result<ExitCode> {
    use holdfast_core::crypto::Identity;
    use holdfast_core::format::Role;
    use holdfast_core::keyfile::{KeyFile, Secret};
    let Some(key) = &a.key else {
        bail!("key new vault needs --key (the current vault key, or any key of the repository)");
    };
    if !a.name.is_empty() && a.name != "vault" {
        bail!("a vault key has no name of its own (got {:?})", a.name);
    }
    let config_id = util::load_key(key)?.config_id;
    let pub_path = {
        let mut p = a.out.as_os_str().to_os_string();
        p.push(".pub");
        PathBuf::from(p)
    };
    if a.out.exists() || pub_path.exists() {
        bail!(
            "{} or {} exists; a key is never written over a file",
            a.out.display(),
            pub_path.display()
        );
    }
    let id = Identity::generate().map_err(|e| anyhow::anyhow!("{e}"))?;
    let public = id.public();
    let pop = holdfast_core::governance::vault_key_pop(&config_id, &id);
    // Like init's vault.key: no passphrase, the service starts unattended.
    let kf = KeyFile::seal(Role::Vault, "vault", config_id, &Secret::Signer(id), None)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    holdfast_repo::keys::write_key_file(&a.out, &kf)?;
    let line = format!(
        "{VAULT_PUB_TAG} {} {} {}\n",
        config_id.to_hex(),
        holdfast_core::id::hex(&public),
        holdfast_core::id::hex(&pop)
    );
    holdfast_repo::keys::write_secret_file(&pub_path, line.as_bytes())?;
    util::out(format!(
        "new vault key {} written to {} (keep it on the vault host only); an admin proposes it \
         with `holdfast propose vault-key {}`; start the vault with `--next-key {}` so that it \
         can switch when the rotation runs",
        holdfast_core::id::hex(&public),
        a.out.display(),
        pub_path.display(),
        a.out.display()
    ));
    Ok(ExitCode::SUCCESS)
}

/// Reads a new vault key for a rotation from its public file (`key new
/// vault`), never from the secret key file. Returns (config id, key, proof
/// of possession).
pub fn read_vault_pub(
    path: &std::path::Path,
) -> Result<(holdfast_core::ObjectId, [u8; 32], [u8; 64])> {
    let text = holdfast_store::read_regular(path, 64 << 10)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if text.starts_with(VAULT_PUB_TAG.as_bytes()) {
        let text = String::from_utf8_lossy(&text);
        let bad = || anyhow::anyhow!("{}: not a vault public key file", path.display());
        let parts: Vec<&str> = text.split_whitespace().collect();
        let [VAULT_PUB_TAG, cid, key, pop] = parts[..] else {
            return Err(bad());
        };
        let cid = holdfast_core::ObjectId::from_hex(cid).map_err(|_| bad())?;
        let key = holdfast_core::id::parse_hex32(key).map_err(|_| bad())?;
        let pop: [u8; 64] = holdfast_core::id::parse_hex(pop)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(bad)?;
        return Ok((cid, key, pop));
    }
    // Never the secret key file: only the public file is handled by the
    // admins who propose.
    bail!(
        "{}: not a vault public key file: give the .pub file `holdfast key new vault` wrote \
         (never the vault's secret key file)",
        path.display()
    )
}

/// The first line of an admin's public key file (`key new admin`).
const PUB_TAG: &str = "holdfast-admin-public";

/// Reads an admin's public key file: (name, public key).
pub fn read_admin_pub(path: &std::path::Path) -> Result<(String, [u8; 32])> {
    let text = holdfast_store::read_regular(path, 4096)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&text);
    let mut parts = text.split_whitespace();
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(PUB_TAG), Some(name), Some(hex), None) => {
            let public = holdfast_core::ObjectId::from_hex(hex)
                .map_err(|_| anyhow::anyhow!("{}: not an admin public key", path.display()))?
                .0;
            Ok((name.to_string(), public))
        }
        _ => bail!(
            "{}: not an admin public key (made by `holdfast key new admin NAME --out FILE`)",
            path.display()
        ),
    }
}

/// No repository yet: a zero config id marks a key `key bind` must tie.
pub const UNBOUND: holdfast_core::ObjectId = holdfast_core::ObjectId([0; 32]);

fn new_admin(a: NewArgs) -> Result<ExitCode> {
    use holdfast_core::crypto::{Identity, KdfParams};
    use holdfast_core::format::Role;
    use holdfast_core::keyfile::{KeyFile, Secret};
    // --repo and --key are ignored (HOLDFAST_REPO and HOLDFAST_KEY may set
    // them): the key is made before any repository exists.
    if a.admin_key.is_some() {
        bail!(
            "key new admin makes a key before init, signed by nobody: admins are never added \
             to a repository by one admin's signature"
        );
    }
    crate::cmd::init::check_names(std::slice::from_ref(&a.name), "admin")?;
    let pub_path = a.out.with_extension("pub");
    if a.out.exists() || pub_path.exists() {
        bail!(
            "{} or {} exists; a key is never written over a file",
            a.out.display(),
            pub_path.display()
        );
    }
    let pw = util::passphrase_for(&format!("the new admin key {}", a.name), true)?;
    if pw.chars().count() < 8 {
        bail!("a passphrase must be at least 8 characters");
    }
    let id = Identity::generate().map_err(|e| anyhow::anyhow!("{e}"))?;
    let public = id.public();
    let kf = KeyFile::seal(
        Role::Admin,
        &a.name,
        UNBOUND,
        &Secret::Signer(id),
        Some((pw.as_bytes(), KdfParams::DEFAULT)),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    holdfast_repo::keys::write_key_file(&a.out, &kf)?;
    let line = format!("{PUB_TAG} {} {}\n", a.name, holdfast_core::id::hex(&public));
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&pub_path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", pub_path.display()))?;
        f.write_all(line.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| anyhow::anyhow!("{}: {e}", pub_path.display()))?;
    }
    util::out(format!(
        "admin key {} written to {} (keep it: no one else has it); send {} to whoever runs \
         `holdfast init ... --admin-pub {}`, then tie the key to the repository with \
         `holdfast key bind --key {} --config ID` (the id init prints)",
        a.name,
        a.out.display(),
        pub_path.display(),
        pub_path.display(),
        a.out.display()
    ));
    Ok(ExitCode::SUCCESS)
}

fn bind(a: BindArgs) -> Result<ExitCode> {
    use holdfast_core::format::{Config, Role};
    use holdfast_core::keyfile::KeyFile;
    let config_id = holdfast_core::ObjectId::from_hex(a.config.trim()).map_err(|_| {
        anyhow::anyhow!("--config: give the full config id (64 hex digits) init printed")
    })?;
    let mut pw: Option<zeroize::Zeroizing<String>> = None;
    let key = holdfast_repo::keys::Key::load(&a.key, || {
        let p = util::passphrase_for(&a.key.display().to_string(), false)?;
        pw = Some(p.clone());
        Ok(p)
    })?;
    if key.config_id != UNBOUND {
        bail!(
            "{}: already tied to the repository of config {}",
            a.key.display(),
            key.config_id.to_hex()
        );
    }
    let (Role::Admin, Some(id), Some(pw)) = (key.role, key.identity(), pw) else {
        bail!(
            "{}: not an admin key made by `key new admin`",
            a.key.display()
        );
    };
    let public = id.public();
    if let Some(repo) = &a.repo {
        if repo.starts_with("https://") {
            bail!("--repo: give the directory, s3:// or bundle: (a vault is reached once bound)");
        }
        let backend = util::backend(repo, &key)?;
        let bytes = backend.get(holdfast_store::Kind::Config, "config")?;
        if holdfast_core::ObjectId::of(&bytes) != config_id {
            bail!(
                "{repo} holds config {}, not {}: do not bind to it",
                holdfast_core::ObjectId::of(&bytes).to_hex(),
                config_id.to_hex()
            );
        }
        let c = Config::decode(&bytes).map_err(|e| anyhow::anyhow!("{repo}: config: {e}"))?;
        if !c
            .members
            .iter()
            .any(|m| m.role == Role::Admin && m.public == public)
        {
            bail!("{repo}: its config does not list this key as an admin");
        }
    }
    let kf = KeyFile::seal(
        key.role,
        &key.name,
        config_id,
        &key.secret,
        Some((pw.as_bytes(), holdfast_core::crypto::KdfParams::DEFAULT)),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    holdfast_repo::keys::replace_key_file(&a.key, &kf, |written| {
        written.open(Some(pw.as_bytes())).map(|_| ()).map_err(|e| {
            holdfast_repo::Error::Usage(format!("the new key file does not open: {e}"))
        })
    })?;
    util::out(format!(
        "{} (admin {}) is tied to the repository of config {}",
        a.key.display(),
        key.name,
        config_id.short()
    ));
    Ok(ExitCode::SUCCESS)
}

fn split(a: SplitArgs) -> Result<ExitCode> {
    use holdfast_core::crypto::KdfParams;
    use holdfast_core::format::Role;
    use zeroize::Zeroizing;
    if a.threshold < 2 || a.threshold > a.shares {
        bail!(
            "--threshold must be at least 2 and at most --shares (got {} of {})",
            a.threshold,
            a.shares
        );
    }
    let key = util::load_key(&a.key)?;
    if key.role != Role::Restore {
        bail!(
            "{}: only the restore key is split (this is a {} key)",
            a.key.display(),
            key.role.name()
        );
    }
    std::fs::create_dir_all(&a.out).map_err(|e| anyhow::anyhow!("{}: {e}", a.out.display()))?;
    let mut failed = None;
    let files = holdfast_core::shares::split(
        &key.secret,
        &key.name,
        key.config_id,
        a.threshold,
        a.shares,
        |i| match util::passphrase_for(&format!("share {i} of {}", a.shares), true) {
            Ok(p) => Some((Zeroizing::new(p.as_bytes().to_vec()), KdfParams::DEFAULT)),
            Err(e) => {
                failed.get_or_insert(e);
                None
            }
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    let mut written = Vec::new();
    for f in &files {
        let path = a.out.join(format!(
            "{}-share-{}-of-{}.hfshare",
            key.name, f.index, f.count
        ));
        holdfast_repo::keys::write_secret_file(&path, &f.encode())?;
        written.push(path);
    }
    if a.json {
        util::json(&serde_json::json!({
            "threshold": a.threshold,
            "shares": written.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "split": holdfast_core::id::hex(&files[0].split_id),
        }));
    } else {
        for p in &written {
            util::out(p.display().to_string());
        }
        util::out(format!(
            "{} shares written; any {} rebuild the restore key. Test a combine before deleting {}.",
            a.shares,
            a.threshold,
            a.key.display()
        ));
    }
    Ok(ExitCode::SUCCESS)
}

fn combine(a: CombineArgs) -> Result<ExitCode> {
    use holdfast_core::crypto::KdfParams;
    use holdfast_core::keyfile::KeyFile;
    let key = holdfast_repo::keys::load_shares(&a.shares, |p| {
        util::passphrase_for(&p.display().to_string(), false)
    })?;
    let pw = util::passphrase_for("the rebuilt restore key", true)?;
    let kf = KeyFile::seal(
        key.role,
        &key.name,
        key.config_id,
        &key.secret,
        Some((pw.as_bytes(), KdfParams::DEFAULT)),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    holdfast_repo::keys::write_key_file(&a.out, &kf)?;
    util::out(format!("restore key rebuilt into {}", a.out.display()));
    Ok(ExitCode::SUCCESS)
}

fn passwd(a: PasswdArgs) -> Result<ExitCode> {
    use holdfast_core::crypto::KdfParams;
    use holdfast_core::keyfile::KeyFile;
    let bytes = zeroize::Zeroizing::new(
        std::fs::read(&a.key).map_err(|e| anyhow::anyhow!("{}: {e}", a.key.display()))?,
    );
    if let Ok(kf) = KeyFile::decode(&bytes)
        && !kf.needs_passphrase()
    {
        bail!(
            "{}: a {} key has no passphrase (it runs unattended); only restore and admin keys have one",
            a.key.display(),
            kf.role.name()
        );
    }
    let mut old: Option<zeroize::Zeroizing<String>> = None;
    let key = holdfast_repo::keys::Key::load(&a.key, || {
        let p = util::passphrase_for(&format!("{} (current)", a.key.display()), false)?;
        old = Some(p.clone());
        Ok(p)
    })?;
    let new = util::new_passphrase(a.new_passphrase_file.as_deref(), &a.key)?;
    if old.as_ref().is_some_and(|o| **o == *new) {
        bail!("the new passphrase is the current one: nothing changed");
    }
    let kf = KeyFile::seal(
        key.role,
        &key.name,
        key.config_id,
        &key.secret,
        Some((new.as_bytes(), KdfParams::DEFAULT)),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    holdfast_repo::keys::replace_key_file(&a.key, &kf, |written| {
        written.open(Some(new.as_bytes())).map(|_| ()).map_err(|e| {
            holdfast_repo::Error::Usage(format!("the new key file does not open: {e}"))
        })
    })?;
    util::out(format!(
        "passphrase of {} ({} key {}) changed",
        a.key.display(),
        key.role.name(),
        key.name
    ));
    Ok(ExitCode::SUCCESS)
}

fn revoke(a: RevokeArgs) -> Result<ExitCode> {
    use holdfast_core::format::Role;
    if a.role != "client" {
        bail!(
            "only a client is revoked at once (got {:?}); remove other identities with a quorum proposal",
            a.role
        );
    }
    let (vault, repo, admin) = admin_through_vault(
        &a.repo,
        &a.key,
        "revocation goes through the vault (--repo https://…): a directory has nobody to refuse the key",
        "revoking",
    )?;
    // A client that changed keys (`key rotate client`) has its old keys
    // under the same name, revoked: the active one is meant.
    let active = |k: &[u8; 32]| repo.log.as_ref().is_none_or(|l| l.state.is_client(k));
    let Some((public, _)) = repo
        .members
        .iter()
        .filter(|(_, m)| m.role == Role::Client && m.name == a.name)
        .min_by_key(|(k, _)| !active(k))
    else {
        bail!("no client named {:?} in this repository", a.name);
    };
    // Signed by this admin, so that every reader of the log can check that
    // an admin asked for it (the vault host cannot write one itself).
    let time_ns = holdfast_repo::now_ns();
    let identity = admin
        .identity()
        .ok_or_else(|| anyhow::anyhow!("this needs an admin key"))?;
    let signature =
        holdfast_core::governance::sign_revocation(&repo.config_id, public, time_ns, identity);
    let body = serde_json::to_vec(&serde_json::json!({
        "client": holdfast_core::id::hex(public),
        "time_ns": time_ns,
        "signature": holdfast_core::id::hex(&signature),
    }))?;
    let before = repo.log.as_ref().map_or(0, |l| l.entries.len());
    vault.request("POST", "/v1/revocations", &body, None)?;
    // Logged, with this signature, in a checkpoint that extends the one
    // held: otherwise the vault host said yes and did nothing.
    let cp = vault.sync_checkpoint()?;
    let logged = vault
        .log_entries(before, cp.size)?
        .iter()
        .filter_map(|e| holdfast_core::vaultlog::Entry::decode(e).ok())
        .any(|e| {
            matches!(e.event, holdfast_core::vaultlog::Event::ClientRevoked {
                client, signed: Some((t, sig)), ..
            } if client == *public && t == time_ns && sig == signature)
        });
    if !logged {
        bail!(
            "the vault answered, but its signed log does not hold this revocation: treat the \
             vault as compromised and revoke again through another path"
        );
    }
    util::out(format!(
        "client {} revoked: the vault refuses its requests from now on (logged at entry {})",
        a.name, cp.size
    ));
    Ok(ExitCode::SUCCESS)
}

fn rotate(a: RotateArgs) -> Result<ExitCode> {
    use holdfast_core::crypto::{KdfParams, RepoSecret};
    use holdfast_core::format::Role;
    use holdfast_core::governance::{Action, Proposal};
    use holdfast_core::keyfile::{KeyFile, Secret};
    if a.what == "client" {
        return rotate_client(a);
    }
    if a.what != "restore" {
        bail!("rotate what: `restore` or `client` (got {:?})", a.what);
    }
    if a.restore_key.is_empty() {
        bail!("key rotate restore needs --restore-key (the current restore key, or M shares)");
    }
    let (vault, repo, admin) = admin_through_vault(
        &a.repo,
        &a.key,
        "a rotation goes through the vault (--repo https://…): the admins approve it there",
        "rotating",
    )?;
    let old = match &a.restore_key[..] {
        [one] => util::load_key(one)?,
        shares => holdfast_repo::keys::load_shares(shares, |p| {
            util::passphrase_for(&p.display().to_string(), false)
        })?,
    };
    if old.config_id != repo.config_id {
        bail!("the restore key belongs to another repository");
    }
    let (id_key, secret) = old.require_restore("a rotation")?;
    let identity = old
        .identity()
        .expect("a restore key has an identity")
        .clone();
    if let Some(t) = repo.stale_restore_key(secret) {
        bail!(
            "this restore key predates the rotation of {}: rotate from the newest restore key",
            util::time(t)
        );
    }
    if a.out.exists() {
        bail!(
            "{} exists; the new key is never written over a file",
            a.out.display()
        );
    }
    if secret.older().len() + 1 > holdfast_core::keyfile::MAX_EPOCHS {
        bail!(
            "this restore key already holds {} epochs, the most a key file carries",
            secret.older().len() + 1
        );
    }
    // The new epoch's secret first, then every earlier one, newest first.
    let mut older = zeroize::Zeroizing::new(Vec::with_capacity(secret.older().len() + 1));
    older.push(*secret.as_bytes());
    older.extend_from_slice(secret.older());
    let fresh = RepoSecret::generate().map_err(|e| anyhow::anyhow!("{e}"))?;
    let ring = RepoSecret::with_older(*fresh.as_bytes(), older.to_vec());
    let public = ring.public();
    let new = Secret::Restore {
        id_key: id_key.clone(),
        secret: ring,
        identity,
    };
    let pw = util::passphrase_for("the new restore key", true)?;
    let kf = KeyFile::seal(
        Role::Restore,
        &old.name,
        old.config_id,
        &new,
        Some((pw.as_bytes(), KdfParams::DEFAULT)),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    holdfast_repo::keys::write_key_file(&a.out, &kf)?;
    let signer = admin.identity().expect("an admin key signs");
    let p = Proposal::new(
        repo.config_id,
        Action::RotateRestoreKey(public),
        signer,
        holdfast_repo::now_ns(),
    )?;
    let r = vault.request("POST", "/v1/proposals", &p.encode(), None)?;
    let j: serde_json::Value = serde_json::from_slice(&r)?;
    util::out(format!(
        "new restore key written to {}; rotation proposed as {}: it needs {} admin approvals, \
         then {} s without a veto. Until it runs, clients seal to the old key. Split the new key \
         (`key split`) and destroy the old key and its shares once it has run.",
        a.out.display(),
        j["id"].as_str().unwrap_or("?"),
        repo.config.quorum,
        repo.config.delay_secs
    ));
    Ok(ExitCode::SUCCESS)
}

/// `key rotate client`: a successor key for a client (format.md §4.3).
fn rotate_client(a: RotateArgs) -> Result<ExitCode> {
    let Some(admin_key) = &a.admin_key else {
        bail!("key rotate client needs --admin-key (an admin signs the new key's record)");
    };
    if !a.restore_key.is_empty() {
        bail!("key rotate client takes no --restore-key");
    }
    let old = util::load_key(&a.key)?;
    // Through a vault, the admin signs the request that adds the record;
    // on a directory, the record is simply written.
    let (repo, admin) = if a.repo.starts_with("https://") {
        let (_, repo, admin) = util::open_vault(&a.repo, admin_key)?;
        (repo, admin)
    } else {
        let (repo, _) = util::open(&a.repo, &a.key)?;
        (repo, util::load_key(admin_key)?)
    };
    let old_public = old
        .identity()
        .map(|i| i.public())
        .ok_or_else(|| anyhow::anyhow!("{}: not a client key", a.key.display()))?;
    let public = holdfast_repo::init::rotate_client(&repo, &old, &admin, &a.out)?;
    // The new key carries on the checkpoint the old one held (and its
    // chain of vault keys): no first contact, no rollback window.
    let dir = util::checkpoint_dir();
    let from = holdfast_store::VaultBackend::checkpoint_path(&dir, &repo.config_id, &old_public);
    let to = holdfast_store::VaultBackend::checkpoint_path(&dir, &repo.config_id, &public);
    // The chain first: it is written before the checkpoint it explains.
    for (f, t) in [
        (
            holdfast_store::VaultBackend::keys_path(&from),
            holdfast_store::VaultBackend::keys_path(&to),
        ),
        (from, to),
    ] {
        if t.exists() {
            continue;
        }
        if let Ok(b) = holdfast_store::read_regular(&f, 1 << 20) {
            holdfast_repo::keys::write_secret_file(&t, &b)?;
        }
    }
    util::out(format!(
        "client {} has a new key {} in {}; the old key {} is revoked from now on: put the new \
         key on the server in its place (its cache and history carry over)",
        old.name,
        holdfast_core::id::hex(&public[..8]),
        a.out.display(),
        holdfast_core::id::hex(&old_public[..8]),
    ));
    Ok(ExitCode::SUCCESS)
}

/// Opens a vault with an admin key, for the governance a vault alone can
/// carry out; `no_vault` says why a directory will not do.
fn admin_through_vault(
    repo: &str,
    key: &std::path::Path,
    no_vault: &str,
    doing: &str,
) -> Result<(
    std::sync::Arc<holdfast_store::VaultBackend>,
    holdfast_repo::Repository,
    holdfast_repo::keys::Key,
)> {
    if !repo.starts_with("https://") {
        bail!("{no_vault}");
    }
    let (vault, repo, k) = util::open_vault(repo, key)?;
    if k.role != holdfast_core::format::Role::Admin {
        bail!("{}: {doing} needs an admin key", key.display());
    }
    Ok((vault, repo, k))
}
