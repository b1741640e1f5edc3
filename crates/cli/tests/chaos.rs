//! The short chaos run (issue "Chaos and soak"): every fault kind of
//! `bench/chaos.py` for a few rounds and a one-minute soak, against the
//! binary under test. After each round verify --read-data, audit and a
//! replica pull must be clean; at the end every snapshot must restore.
//! The full run (`python3 bench/chaos.py`, release build) writes
//! bench/results/chaos.md.

mod common;

use std::process::Command;

#[test]
fn chaos_quick() {
    if Command::new("python3").arg("--version").output().is_err() {
        panic!("python3 is needed for the chaos run");
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench/chaos.py");
    let out = Command::new("python3")
        .args([
            script,
            "--quick",
            "--bin",
            common::bin().to_str().unwrap(),
            "--soak-secs",
            "60",
            "--soak-clients",
            "6",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    println!("{text}\n{err}");
    let _ = std::fs::create_dir_all(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/tmp"));
    let _ = std::fs::write(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../target/tmp/chaos-report.md"
        ),
        text.as_bytes(),
    );
    assert!(out.status.success(), "chaos run failed:\n{text}\n{err}");
    assert!(text.contains("| soak |"), "{text}");
}
