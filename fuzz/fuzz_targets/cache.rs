//! The client cache file (version 3, `HFCACHE3`) on arbitrary content:
//! loading it, walking its files section, and looking blobs up in its
//! table must return an error or stop, never panic or allocate without
//! bound. The cache's BLAKE3 is no secret (whoever can write the file can
//! compute it), so the target computes a matching footer for most inputs:
//! the parsers behind the hash are what it reaches.
//! Run: `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run cache`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    holdfast_repo::cache::fuzz(data);
});
