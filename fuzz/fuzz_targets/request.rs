//! The vault's request parsers (signature headers, Range, query, object
//! names) and body decoders on arbitrary input: errors, never panics.
//! Run: `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    holdfast_vault::server::fuzz_request(data);
});
