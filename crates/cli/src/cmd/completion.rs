//! `holdfast completion SHELL`: a completion script, generated from the same
//! clap definitions the command parses with.

use std::process::ExitCode;

use anyhow::Result;
use clap_complete::Shell;

#[derive(clap::Args)]
pub struct Args {
    /// bash, zsh, fish, elvish or powershell
    pub shell: Shell,
}

/// Writes the script for `a.shell` to stdout, e.g.
/// `holdfast completion bash > /etc/bash_completion.d/holdfast`.
pub fn run(a: Args, mut cmd: clap::Command) -> Result<ExitCode> {
    let mut out = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "holdfast", &mut out);
    crate::util::out(String::from_utf8_lossy(&out).trim_end());
    Ok(ExitCode::SUCCESS)
}
