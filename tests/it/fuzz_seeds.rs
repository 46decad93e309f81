//! The fuzz targets' bodies on stable (issue 17): every seed of `tests/fuzz/seeds/<target>/`,
//! and mutations of them (bytes deleted, inserted, replaced, spans repeated), through the same
//! functions `cargo fuzz` runs on nightly (`aos_audit_export::fuzzing`). A fuzzer's finding
//! saved as a seed stays a regression test here.

use std::path::PathBuf;

use aos_audit_export::fuzzing;
use proptest::prelude::*;

type Target = fn(&[u8]);

const TARGETS: [(&str, Target, u32); 5] = [
    ("page_reader", fuzzing::page_reader, 3000),
    ("identity", fuzzing::identity, 600),
    ("readback", fuzzing::readback, 150),
    ("parsers", fuzzing::parsers, 3000),
    ("config", fuzzing::config, 600),
];

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/seeds").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()).collect();
    files.sort();
    files.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

#[test]
fn every_seed_passes_every_target() {
    for (name, target, _) in TARGETS {
        let seeds = seeds(name);
        assert!(!seeds.is_empty(), "{name} has seeds");
        for s in &seeds {
            target(s);
        }
    }
}

/// Bytes that tend to matter to JSON, TOML and the parsers.
const ALPHABET: &[u8] = b"{}[]\":,\\/u0123456789abcdefABCDEF.eE+- \n\tnulltruefalse=#'TZ:smhdMiBK\x00\x01\x7f\xc3\xa9\xf0\x9f\x98\x80";

fn mutate(mut bytes: Vec<u8>, edits: &[(prop::sample::Index, u8, u8, usize)]) -> Vec<u8> {
    for (at, op, c, n) in edits {
        let i = at.index(bytes.len() + 1);
        match op % 4 {
            0 if i < bytes.len() => {
                bytes.remove(i);
            }
            1 => bytes.insert(i, *c),
            2 if i < bytes.len() => bytes[i] = *c,
            _ => {
                let end = (i + n).min(bytes.len());
                let span = bytes[i..end].to_vec();
                bytes.splice(i..i, span);
            }
        }
    }
    bytes
}

fn run(target_index: usize, cases: u32) {
    let (name, target, _) = TARGETS[target_index];
    let seeds = seeds(name);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(cases));
    let strategy = (
        0..seeds.len(),
        prop::collection::vec(
            (any::<prop::sample::Index>(), 0..4u8, prop::sample::select(ALPHABET), 1..16usize),
            1..5,
        ),
    );
    runner
        .run(&strategy, |(seed, edits)| {
            target(&mutate(seeds[seed].clone(), &edits));
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
}

#[test]
fn page_reader_on_mutated_seeds() {
    run(0, TARGETS[0].2);
}

#[test]
fn identity_on_mutated_seeds() {
    run(1, TARGETS[1].2);
}

#[test]
fn readback_on_mutated_seeds() {
    run(2, TARGETS[2].2);
}

#[test]
fn parsers_on_mutated_seeds() {
    run(3, TARGETS[3].2);
}

#[test]
fn config_on_mutated_seeds() {
    run(4, TARGETS[4].2);
}
