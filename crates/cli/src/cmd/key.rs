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
    /// Role of the new identity (only `client` for now)
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
            let (repo, from) = util::open(&a.repo, &a.key)?;
            let admin = util::load_key(&a.admin_key)?;
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
