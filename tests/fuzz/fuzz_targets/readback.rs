#![no_main]
//! `cargo fuzz run --fuzz-dir tests/fuzz readback`: see `aos_audit_export::fuzzing::readback`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| aos_audit_export::fuzzing::readback(data));
