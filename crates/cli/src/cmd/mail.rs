//! `holdfast mail ls|restore|export`: Maildirs in a snapshot, given back
//! into live mailboxes (docs/mail.md).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use holdfast_core::ObjectId;
use holdfast_repo::Repository;
use holdfast_repo::keys::Key;
use holdfast_repo::mail::{self, MailProgress, MailReport, MailRestoreOptions, Opened};
use holdfast_repo::repo::Select;

use crate::util;

/// Which snapshot: SNAPSHOT is an id, a prefix, `latest`, or a time
/// (newest at or before it, by the vault's time).
#[derive(clap::Args, Clone)]
pub struct Pick {
    /// Only this client's snapshots (`latest` needs it when several
    /// clients have snapshots)
    #[arg(long, value_name = "NAME")]
    pub client: Option<String>,
    /// Only snapshots taken on this host (the name `backup` recorded)
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// Only snapshots carrying this tag (`backup --tag`); repeatable: each
    /// must be there
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
}

impl Pick {
    /// Resolves SNAPSHOT among the snapshots these filters and `paths`
    /// (which each chosen snapshot must hold) keep.
    pub fn resolve(
        &self,
        repo: &Repository,
        key: &Key,
        spec: &str,
        paths: &[String],
    ) -> Result<ObjectId> {
        let sel = Select {
            client: self.client.clone(),
            host: self.host.clone(),
            paths: paths.to_vec(),
            tags: self.tags.clone(),
        };
        let (id, _) = repo.resolve_select(spec, &sel, key.repo_secret())?;
        Ok(id)
    }
}

#[derive(clap::Subcommand)]
pub enum MailCommand {
    /// List the Maildirs (mailboxes) under PATH in a snapshot
    Ls(LsArgs),
    /// Give mail back into live Maildirs: nothing live changes, what is
    /// there is skipped, INBOX and newest mail first
    Restore(RestoreArgs),
    /// Write each folder as an mbox file (RFC 4155, mboxrd quoting)
    Export(ExportArgs),
}

#[derive(clap::Args)]
pub struct LsArgs {
    #[arg(long)]
    pub repo: String,
    /// The restore key
    #[arg(long)]
    pub key: PathBuf,
    #[command(flatten)]
    pub pick: Pick,
    /// An id, a prefix, `latest`, or a time (2026-11-20T12:00:00Z, 2026-11-20)
    pub snapshot: String,
    /// Where to look in the snapshot, as `ls` prints it or as backed up
    /// (/var/mail); the whole snapshot by default
    pub path: Option<String>,
    /// Print one JSON array of objects
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct RestoreArgs {
    #[arg(long)]
    pub repo: String,
    /// The restore key
    #[arg(long)]
    pub key: PathBuf,
    #[command(flatten)]
    pub pick: Pick,
    pub snapshot: String,
    /// A Maildir in the snapshot, or a directory holding many (a spool)
    pub path: String,
    /// The live Maildir (or spool root) to restore into
    pub target: PathBuf,
    /// Only this folder (INBOX, Sent, ...); repeatable
    #[arg(long, value_name = "F")]
    pub folder: Vec<String>,
    /// Put everything into this folder (INBOX as NAME, others under it)
    #[arg(long, value_name = "NAME")]
    pub into_folder: Option<String>,
    /// Count what would be written; write nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Mailboxes restored at once
    #[arg(long, default_value_t = 8)]
    pub parallel: usize,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct ExportArgs {
    #[arg(long)]
    pub repo: String,
    /// The restore key
    #[arg(long)]
    pub key: PathBuf,
    #[command(flatten)]
    pub pick: Pick,
    pub snapshot: String,
    /// A Maildir in the snapshot, or a directory holding many
    pub path: String,
    /// Directory for the mbox files (OUT/<mailbox>/<folder>.mbox)
    #[arg(long, value_name = "OUT_DIR")]
    pub mbox: PathBuf,
}

pub fn run(c: MailCommand) -> Result<ExitCode> {
    match c {
        MailCommand::Ls(a) => ls(a),
        MailCommand::Restore(a) => restore(a),
        MailCommand::Export(a) => export(a),
    }
}

fn ls(a: LsArgs) -> Result<ExitCode> {
    let (repo, key) = util::open(&a.repo, &a.key)?;
    key.require_restore("mail ls")?;
    let path = a.path.clone().unwrap_or_default();
    let paths: Vec<String> = a.path.iter().cloned().collect();
    let id = a.pick.resolve(&repo, &key, &a.snapshot, &paths)?;
    let snap = Opened::open(&repo, &key, &id)?;
    let reader = snap.reader(&key)?;
    let newest = |ns: Option<i64>| ns.map(util::time);
    let hex = id.to_hex();
    // Streamed: one mailbox read and printed at a time (a JSON array
    // written element by element).
    let mut errors = Vec::new();
    let mut held: Option<String> = None;
    let mut print = |m: &mail::Mailbox| {
        if a.json {
            let folders: Vec<_> = m
                .folders
                .iter()
                .map(|f| {
                    serde_json::json!({
                        "name": f.name, "messages": f.msgs.len(), "bytes": f.bytes(),
                        "newest": newest(f.newest_ns()),
                    })
                })
                .collect();
            let v = serde_json::json!({
                "snapshot": hex,
                "path": m.path, "layout": m.layout.name(), "folders": folders,
                "messages": m.messages(), "bytes": m.bytes(), "newest": newest(m.newest_ns()),
            });
            let text = serde_json::to_string_pretty(&v).expect("JSON value serialises");
            // Printed once the next one (or the end) says whether a comma
            // follows.
            match held.replace(text.replace('\n', "\n  ")) {
                Some(t) => util::out(format!("  {t},")),
                None => util::out("["),
            }
        } else {
            let names: Vec<&str> = m.folders.iter().map(|f| f.name.as_str()).collect();
            util::out(format!(
                "{}  {} messages, {}, newest {}, folders: {}",
                m.path,
                m.messages(),
                util::bytes(m.bytes()),
                newest(m.newest_ns()).unwrap_or_else(|| "-".into()),
                names.join(" ")
            ));
        }
    };
    snap.walk_mailboxes(&reader, &path, &mut |b| match b {
        Ok(b) => match b.load(&reader) {
            Ok(m) => print(&m),
            Err(e) => errors.push((b.path, e)),
        },
        Err(pe) => errors.push(pe),
    })?;
    if a.json {
        match held {
            Some(t) => util::out(format!("  {t}\n]")),
            None => util::out("[]"),
        }
    }
    let mut damage = !snap.pack_errors.is_empty();
    for e in &snap.pack_errors {
        eprintln!("damaged: {e}");
    }
    for (p, e) in &errors {
        eprintln!("damaged: {p}: {e}");
        damage |= mail::is_damage(e);
    }
    if damage {
        snap.distrust_index();
        eprintln!("holdfast: DAMAGE DETECTED: some of the snapshot's trees could not be read");
        return Ok(ExitCode::from(util::EXIT_DAMAGE));
    }
    if !errors.is_empty() {
        return Ok(ExitCode::from(util::EXIT_PARTIAL));
    }
    Ok(ExitCode::SUCCESS)
}

/// Draws mailboxes done, messages and an ETA on a terminal while `f` runs.
fn with_mail_progress<T>(f: impl FnOnce(&MailProgress) -> T) -> T {
    let p = Arc::new(MailProgress::default());
    if !std::io::stderr().is_terminal() {
        return f(&p);
    }
    let done = Arc::new(AtomicBool::new(false));
    let t = {
        let (p, done) = (p.clone(), done.clone());
        std::thread::spawn(move || {
            let start = Instant::now();
            while !done.load(Ordering::Relaxed) {
                let (m, mt) = (
                    p.messages_done.load(Ordering::Relaxed),
                    p.messages_total.load(Ordering::Relaxed),
                );
                let (bd, bt) = (
                    p.mailboxes_done.load(Ordering::Relaxed),
                    p.mailboxes_total.load(Ordering::Relaxed),
                );
                let el = start.elapsed().as_secs_f64();
                // Mailboxes are found while the first ones are restored:
                // until all are found, the messages known so far.
                let eta = if p.found_all.load(Ordering::Relaxed) && bd > 0 && bt > bd {
                    format!("{:.0} s", el / bd as f64 * (bt - bd) as f64)
                } else if m > 0 && mt > m {
                    format!("{:.0} s+", el / m as f64 * (mt - m) as f64)
                } else {
                    "-".into()
                };
                eprint!(
                    "\rmail restore: {}/{} mailboxes, {m}/{mt} messages, {}, ETA {eta}   ",
                    bd,
                    bt,
                    util::bytes(p.bytes_done.load(Ordering::Relaxed)),
                );
                std::thread::sleep(Duration::from_millis(200));
            }
            eprint!("\r\x1b[K");
        })
    };
    let r = f(&p);
    done.store(true, Ordering::Relaxed);
    let _ = t.join();
    r
}

pub fn report_json(r: &MailReport) -> serde_json::Value {
    serde_json::json!({
        "mailboxes": r.mailboxes, "folders": r.folders, "messages": r.messages,
        "written": r.written, "bytes_written": r.bytes_written,
        "skipped_same_name": r.skipped_same_name, "skipped_same_content": r.skipped_same_content,
        "skipped": r.skipped_same_name + r.skipped_same_content,
        "same_message_id_different_bytes": r.same_message_id,
        "control_files": r.control_files, "folders_uids_kept": r.folders_uids_kept,
        "keywords_dropped": r.keywords_dropped,
        "damaged": r.damaged, "errors": r.errors, "bytes_read": r.bytes_read,
        "first_inbox_seconds": r.first_inbox_s, "all_inboxes_seconds": r.all_inboxes_s,
        "inbox_newest_done_secs": r.inbox_newest_s,
        "seconds": r.seconds, "syncs": r.syncs,
    })
}

fn restore(a: RestoreArgs) -> Result<ExitCode> {
    let (repo, key) = util::open(&a.repo, &a.key)?;
    key.require_restore("mail restore")?;
    let id = a
        .pick
        .resolve(&repo, &key, &a.snapshot, std::slice::from_ref(&a.path))?;
    let snap = Opened::open(&repo, &key, &id)?;
    let opts = MailRestoreOptions {
        target: a.target.clone(),
        folders: a.folder.clone(),
        into_folder: a.into_folder.clone(),
        dry_run: a.dry_run,
        parallel: a.parallel,
    };
    let r = with_mail_progress(|p| mail::restore(&snap, &key, &a.path, &opts, p))?;
    let mut j = report_json(&r);
    // "snapshot" as `backup --json` names it, "id" as every listing does.
    j["snapshot"] = id.to_hex().into();
    j["id"] = id.to_hex().into();
    j["dry_run"] = a.dry_run.into();
    if a.json {
        util::json(&j);
    } else {
        util::out(format!(
            "{} snapshot {} into {}: {} mailboxes, {} folders, {} messages {}written ({}), {} skipped ({} same name, {} same content), {} control files, {} read",
            if a.dry_run {
                "dry run of"
            } else {
                "restored mail of"
            },
            id.short(),
            a.target.display(),
            r.mailboxes,
            r.folders,
            r.written,
            if a.dry_run { "would be " } else { "" },
            util::bytes(r.bytes_written),
            r.skipped_same_name + r.skipped_same_content,
            r.skipped_same_name,
            r.skipped_same_content,
            r.control_files,
            util::bytes(r.bytes_read),
        ));
        for m in &r.same_message_id {
            util::out(format!("same Message-ID, other bytes (restored too): {m}"));
        }
        for (k, n) in &r.keywords_dropped {
            util::out(format!(
                "keyword {k:?} dropped from {n} message(s): the live folder's dovecot-keywords lacks it"
            ));
        }
        if let Some(t) = r.inbox_newest_s {
            util::out(format!(
                "every mailbox had its newest {} INBOX messages after {t:.1} s (all done after {:.1} s)",
                mail::FIRST_PASS,
                r.seconds
            ));
        }
    }
    finish(&r.damaged, &r.errors, &id)
}

fn finish(damaged: &[String], errors: &[String], id: &ObjectId) -> Result<ExitCode> {
    if let [e] = errors
        && damaged.is_empty()
    {
        // One failure (a full disk stops the restore at once): one line.
        eprintln!("holdfast: incomplete (not repository damage): {e}");
        return Ok(ExitCode::from(util::EXIT_PARTIAL));
    }
    for e in damaged {
        eprintln!("damaged: {e}");
    }
    for e in errors {
        eprintln!("failed: {e}");
    }
    if !damaged.is_empty() {
        eprintln!(
            "holdfast: DAMAGE DETECTED: {} item(s) of snapshot {} could not be restored because the repository is damaged or was tampered with",
            damaged.len(),
            id.short()
        );
        return Ok(ExitCode::from(util::EXIT_DAMAGE));
    }
    if !errors.is_empty() {
        eprintln!(
            "holdfast: incomplete: {} item(s) could not be written (not repository damage)",
            errors.len()
        );
        return Ok(ExitCode::from(util::EXIT_PARTIAL));
    }
    Ok(ExitCode::SUCCESS)
}

fn export(a: ExportArgs) -> Result<ExitCode> {
    let (repo, key) = util::open(&a.repo, &a.key)?;
    key.require_restore("mail export")?;
    let id = a
        .pick
        .resolve(&repo, &key, &a.snapshot, std::slice::from_ref(&a.path))?;
    let snap = Opened::open(&repo, &key, &id)?;
    let r = mail::export(&snap, &key, &a.path, &a.mbox)?;
    util::out(format!(
        "exported {} messages of snapshot {} into {} mbox file(s) under {} ({}, {} read)",
        r.messages,
        id.short(),
        r.files.len(),
        a.mbox.display(),
        util::bytes(r.bytes),
        util::bytes(r.bytes_read)
    ));
    finish(&r.damaged, &r.errors, &id)
}
