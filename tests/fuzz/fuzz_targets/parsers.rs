#![no_main]
//! `cargo fuzz run --fuzz-dir tests/fuzz parsers`: see `aos_audit_export::fuzzing::parsers`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| aos_audit_export::fuzzing::parsers(data));
