//! Issue 17: private by default (every file the exporter creates is owner-only unless
//! `export.file_mode` says otherwise), and secrets never leave the process.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::common::*;

/// Every file and folder under `root`, with its permission bits.
fn modes(root: &Path) -> Vec<(String, bool, u32)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap().flatten() {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            }
            out.push((e.path().display().to_string(), m.is_dir(), m.permissions().mode() & 0o777));
        }
    }
    out
}

/// Output files and folders, the state database (and its journal), markers and quarantine are
/// created 0600 / 0700 by default, whatever the umask the process inherits; `export.file_mode =
/// "0640"` gives 0640 / 0750. (Before: 0644 / 0755 under the usual umask.)
#[tokio::test]
async fn files_are_owner_only_unless_configured() {
    let emu = start(emu_config(2, 200)).await;
    for (extra, file, dir) in [("", 0o600, 0o700), ("file_mode = \"0640\"", 0o640, 0o750)] {
        let s = setup(&emu, extra);
        let o = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "umask 000 && exec {BIN} --config {} --now 2024-03-03T00:00:00Z run",
                s.config.display()
            ))
            .output()
            .await
            .unwrap();
        assert_ok(&o);
        let out = modes(&s.out());
        let state = modes(s.state().parent().unwrap());
        assert!(out.iter().any(|(p, _, _)| p.ends_with(".parquet")), "{out:?}");
        assert!(out.iter().any(|(p, _, _)| p.contains("_aos-audit-export/commits/")));
        assert!(state.iter().any(|(p, _, _)| p.ends_with("state.db")));
        for (path, is_dir, mode) in out.iter().chain(&state) {
            let want = if *is_dir { dir } else { file };
            assert_eq!(*mode, want, "{path}: {mode:o}, expected {want:o}");
        }
        let top = std::fs::metadata(s.out()).unwrap().permissions().mode() & 0o777;
        assert_eq!(top, dir, "the output folder itself");
    }
    for bad in ["0644x", "0400", "0755", "rw-------"] {
        let s = setup(&emu, &format!("file_mode = \"{bad}\""));
        let o = cli(&s, &["--now", "2024-03-03T00:00:00Z", "run"], &[]).await;
        assert_eq!(o.status.code(), Some(2), "{bad}");
        assert!(stderr(&o).contains("export.file_mode"), "{}", stderr(&o));
        assert_eq!(stderr(&o).trim().lines().count(), 1, "{}", stderr(&o));
        assert!(!s.out().exists(), "nothing created");
    }
}
