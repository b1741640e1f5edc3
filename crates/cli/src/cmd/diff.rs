use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use holdfast_repo::snapshots::Change;

use crate::util;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    pub repo: String,
    /// The restore key
    #[arg(long)]
    pub key: PathBuf,
    /// Choose `latest` (or a prefix) among this client's snapshots only;
    /// `latest` needs it when several clients have snapshots
    #[arg(long, value_name = "NAME")]
    pub client: Option<String>,
    pub snapshot_a: String,
    pub snapshot_b: String,
    /// Print one JSON array of objects
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let (repo, key) = util::open(&a.repo, &a.key)?;
    key.require_restore("diff")?;
    let (x, _) = repo.resolve_for(&a.snapshot_a, a.client.as_deref())?;
    let (y, _) = repo.resolve_for(&a.snapshot_b, a.client.as_deref())?;
    // Changes come interleaved in path order; they are printed grouped by
    // kind, so each kind is spilled to its own scratch file first (memory
    // does not grow with the number of changes).
    let mut spill: Vec<Spill> = (0..4).map(|_| Spill::new()).collect::<Result<_>>()?;
    let mut failed: Option<std::io::Error> = None;
    holdfast_repo::snapshots::diff_stream(&repo, &key, &x, &y, &mut |c, p| {
        let i = match c {
            Change::Added => 0,
            Change::Removed => 1,
            Change::Modified => 2,
            Change::Metadata => 3,
        };
        if let Err(e) = spill[i].push(p) {
            failed.get_or_insert(e);
        }
        Ok(())
    })?;
    if let Some(e) = failed {
        return Err(anyhow::anyhow!("diff scratch file: {e}"));
    }
    let rows = [
        ("+", "added"),
        ("-", "removed"),
        ("M", "modified"),
        ("U", "metadata"),
    ];
    let counts: Vec<u64> = spill.iter().map(|s| s.count).collect();
    let mut first = true;
    if a.json {
        for ((_, what), s) in rows.iter().zip(spill) {
            s.each(|p| {
                let v = serde_json::json!({"change": what, "path": util::lossy(p)});
                let text = serde_json::to_string_pretty(&v).expect("JSON value serialises");
                let body: Vec<String> = text.lines().map(|l| format!("  {l}")).collect();
                util::out(
                    format!("{}{}", if first { "[\n" } else { ",\n" }, body.join("\n"))
                        .trim_end_matches('\n'),
                );
                first = false;
            })?;
        }
        util::out(if first { "[]" } else { "]" });
    } else {
        for ((mark, _), s) in rows.iter().zip(spill) {
            s.each(|p| util::out(format!("{mark} {}", util::lossy(p))))?;
        }
        util::out(format!(
            "{} added, {} removed, {} modified, {} metadata only",
            counts[0], counts[1], counts[2], counts[3]
        ));
    }
    Ok(ExitCode::SUCCESS)
}

/// Paths of one kind of change, in a scratch file (length-prefixed).
struct Spill {
    w: std::io::BufWriter<std::fs::File>,
    count: u64,
}

impl Spill {
    fn new() -> Result<Spill> {
        Ok(Spill {
            w: std::io::BufWriter::with_capacity(
                64 << 10,
                holdfast_repo::packindex::scratch_file()?,
            ),
            count: 0,
        })
    }

    fn push(&mut self, p: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        self.w.write_all(&(p.len() as u32).to_le_bytes())?;
        self.w.write_all(p)?;
        self.count += 1;
        Ok(())
    }

    fn each(self, mut f: impl FnMut(&[u8])) -> Result<()> {
        use std::io::{Read, Seek};
        let mut file = self.w.into_inner().map_err(|e| e.into_error())?;
        file.seek(std::io::SeekFrom::Start(0))?;
        let mut r = std::io::BufReader::with_capacity(64 << 10, file);
        let mut p = Vec::new();
        for _ in 0..self.count {
            let mut n = [0u8; 4];
            r.read_exact(&mut n)?;
            p.resize(u32::from_le_bytes(n) as usize, 0);
            r.read_exact(&mut p)?;
            f(&p);
        }
        Ok(())
    }
}
