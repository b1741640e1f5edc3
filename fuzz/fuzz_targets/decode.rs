//! Every decoder of repository bytes (config, identity records, trees,
//! snapshot headers and bodies, pack headers and tables, key files) on
//! arbitrary input: each must return an error, never panic.
//! Run: `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run decode`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    holdfast_core::decode_any(data);
});
