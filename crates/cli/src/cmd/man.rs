//! `holdfast man`: manual pages, generated from the same clap definitions
//! the command parses with (clap_mangen).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

#[derive(clap::Args)]
pub struct Args {
    /// Write holdfast.1 and one page per subcommand (holdfast-backup.1, …)
    /// into DIR instead of printing holdfast(1)
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

pub fn run(a: Args, cmd: clap::Command) -> Result<ExitCode> {
    match a.dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
            clap_mangen::generate_to(cmd, &dir).with_context(|| dir.display().to_string())?;
            crate::util::out(format!("manual pages written to {}", dir.display()));
        }
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut out)?;
            crate::util::out(String::from_utf8_lossy(&out).trim_end());
        }
    }
    Ok(ExitCode::SUCCESS)
}
