#![no_main]
//! `cargo fuzz run --fuzz-dir tests/fuzz identity`: see `aos_audit_export::fuzzing::identity`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| aos_audit_export::fuzzing::identity(data));
