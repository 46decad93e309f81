#![no_main]
//! `cargo fuzz run --fuzz-dir tests/fuzz config`: see `aos_audit_export::fuzzing::config`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| aos_audit_export::fuzzing::config(data));
