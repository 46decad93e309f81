#![no_main]
//! `cargo fuzz run --fuzz-dir tests/fuzz page_reader`: see `aos_audit_export::fuzzing::page_reader`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| aos_audit_export::fuzzing::page_reader(data));
