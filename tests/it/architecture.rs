//! The layout rules of `../shared/design.md`, checked on the source: adapters never import each
//! other or the orchestration above them; leaf modules import nothing of the crate; no file in
//! `src/` is over 500 lines.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out
}

/// The crate modules a module (file or folder) names as `crate::<module>`.
fn imports(module: &str) -> BTreeSet<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = vec![src.join(format!("{module}.rs"))];
    if src.join(module).is_dir() {
        paths.extend(files(&src.join(module)));
    }
    let mut out = BTreeSet::new();
    for p in paths.iter().filter(|p| p.exists()) {
        let text = std::fs::read_to_string(p).unwrap();
        for (i, _) in text.match_indices("crate::") {
            let name: String = text[i + 7..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
            if !name.is_empty() && name != module {
                out.insert(name);
            }
        }
    }
    out
}

#[test]
fn modules_import_only_what_their_stage_may() {
    // Shared vocabulary and signals any stage may use.
    let leaves = ["model", "retry", "metrics", "crashpoint"];
    // Each adapter, with the earlier stages it may read (auth's token for the API client).
    let adapters: &[(&str, &[&str])] = &[
        ("auth", &["config"]),
        ("api", &["config", "auth"]),
        ("planner", &[]),
        ("dedup", &[]),
        ("sink", &[]),
        ("store", &[]),
        ("checkpoint", &[]),
    ];
    for leaf in leaves {
        assert!(imports(leaf).is_empty(), "{leaf} is a leaf but imports {:?}", imports(leaf));
    }
    for (module, allowed) in adapters {
        for import in imports(module) {
            assert!(
                leaves.contains(&import.as_str()) || allowed.contains(&import.as_str()),
                "{module} imports crate::{import}: adapters never reach into other adapters or the orchestration"
            );
        }
    }
    // Orchestration never reaches up to the command line.
    for module in ["window", "exporter", "daemon"] {
        for import in imports(module) {
            assert!(!["commands", "cli"].contains(&import.as_str()), "{module} imports crate::{import}");
        }
    }
}

#[test]
fn no_source_file_is_over_500_lines() {
    for f in files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src")) {
        let n = std::fs::read_to_string(&f).unwrap().lines().count();
        assert!(n <= 500, "{} has {n} lines", f.display());
    }
}
