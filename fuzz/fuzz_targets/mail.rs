//! The parsers of what a mail folder holds (untrusted: from a snapshot or
//! a live Maildir): file names, dovecot-uidlist, dovecot-keywords,
//! Message-ID, mbox. Each must return an error, never panic; the mboxrd
//! writer and reader must round-trip any message ending in a newline.
//! Run: `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run mail`.
#![no_main]

// The parsers are plain std code: compiled in from their source, so the
// fuzz crate needs none of holdfast-repo's dependencies.
#[path = "../../crates/repo/src/mail/maildir.rs"]
#[allow(dead_code)]
mod maildir;
#[path = "../../crates/repo/src/mail/mbox.rs"]
#[allow(dead_code)]
mod mbox;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let n = maildir::MaildirName::parse(data);
    let _ = (n.field(b'S'), n.field(b'W'));
    let _ = maildir::parse_uidlist(data);
    if let Ok(k) = maildir::parse_keywords(data) {
        assert!(k.len() <= 26);
        let _ = maildir::letter_of(&k, "Junk");
    }
    let _ = maildir::message_id(data);
    let _ = mbox::parse(data);
    if data.ends_with(b"\n") {
        let mut out = Vec::new();
        mbox::write_message(&mut out, data, 1_700_000_000);
        assert_eq!(mbox::parse(&out), vec![data.to_vec()]);
    }
});
