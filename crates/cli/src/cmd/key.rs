use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};

use crate::util;

#[derive(clap::Subcommand)]
pub enum KeyCommand {
    /// Add an identity
    New(NewArgs),
}

#[derive(clap::Args)]
pub struct NewArgs {
    /// Role of the new identity (only `client` for now; admins are never
    /// added by one admin's signature)
    pub role: String,
    /// Its name
    pub name: String,
    #[arg(long)]
    pub repo: String,
    /// An existing client key or the restore key (the new key copies its id key)
    #[arg(long)]
    pub key: PathBuf,
    /// An admin key, which signs the new identity
    #[arg(long)]
    pub admin_key: PathBuf,
    /// Where to write the new key file
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(k: KeyCommand) -> Result<ExitCode> {
    match k {
        KeyCommand::New(a) => {
            if a.role != "client" {
                bail!("only client identities can be added (got {:?})", a.role);
            }
            // Through a vault, the admin signs the request that adds the
            // identity; on a directory, the record is simply written.
            let (repo, from, admin) = if a.repo.starts_with("https://") {
                let (_, repo, admin) = util::open_vault(&a.repo, &a.admin_key)?;
                (repo, util::load_key(&a.key)?, admin)
            } else {
                let (repo, from) = util::open(&a.repo, &a.key)?;
                (repo, from, util::load_key(&a.admin_key)?)
            };
            holdfast_repo::init::new_client(&repo, &from, &admin, &a.name, &a.out)?;
            util::out(format!(
                "client {} added; key in {}",
                a.name,
                a.out.display()
            ));
            Ok(ExitCode::SUCCESS)
        }
    }
}
