#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report
//! Black-box tests: the real binary (or the library, where a test needs to reach inside a run)
//! against the emulator on 127.0.0.1:0. One module per topic, a fresh temp dir per test.

#[path = "../common/mod.rs"]
mod common;

mod architecture;
mod azure;
mod bad_input;
mod boundaries;
mod certs;
mod config_errors;
mod convert;
mod crash;
mod daemon;
mod delta;
mod export;
mod fuzz_seeds;
mod gcs;
mod identity;
mod lake_truth;
mod late_twins;
mod lifecycle;
mod model;
mod object_store;
mod operability;
mod page_reader;
mod privacy;
mod proxy;
mod repair;
mod resilience;
mod robustness;
mod rules;
mod s3;
