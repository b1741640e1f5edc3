//! The pack index cache file (`HFPIDX01`) on arbitrary content: opening it,
//! looking blobs up and walking its records must return an error, never
//! panic. Its checksum is no secret, so the target appends a matching one
//! for most inputs and the record checks behind it are reached.
//! Run: `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run packindex`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    holdfast_repo::packindex::fuzz(data);
});
