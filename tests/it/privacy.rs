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
    let mut cfg = emu_config(2, 200);
    // One record a strict reader refuses, so the quarantine is written too.
    cfg.extra_records = vec![(
        day0() + chrono::Duration::hours(2),
        serde_json::json!({ aos_emulator::RAW_EXTRA: r#"{"actionTime":"2024-03-01T02:00:00Z","comment":"\ud800"}"# }),
    )];
    let emu = start(cfg).await;
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
        assert!(out.iter().any(|(p, _, _)| p.contains("_quarantine/dt=2024-03-01/")), "{out:?}");
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

/// The secrets a sweep looks for, and where it looked.
struct Sweep {
    secrets: Vec<(String, &'static str)>,
    seen: String,
    places: Vec<String>,
}

impl Sweep {
    fn add(&mut self, place: impl Into<String>, text: &str) {
        self.places.push(place.into());
        self.seen.push_str(text);
        self.seen.push('\n');
    }
    fn add_output(&mut self, place: &str, o: &std::process::Output) {
        self.add(format!("{place} stdout"), &String::from_utf8_lossy(&o.stdout));
        self.add(format!("{place} stderr"), &String::from_utf8_lossy(&o.stderr));
    }
    /// Every file under `root` (data, markers, the SQLite database and its journal) as bytes.
    fn add_files(&mut self, root: &Path) {
        for (path, is_dir, _) in modes(root) {
            if !is_dir {
                let bytes = std::fs::read(&path).unwrap();
                self.add(path, &String::from_utf8_lossy(&bytes));
            }
        }
    }
}

/// Every subcommand, at TRACE, in text and JSON log formats, succeeding and failing, with a
/// client secret and with a password-protected .pfx: no known secret value (client secret,
/// certificate password, a line of the private key, any access token the identity service
/// issued, a client assertion) appears in stdout, stderr, `status`, `config`, `verify`,
/// the daemon's metrics and health answers, the output files or the SQLite state.
#[tokio::test(flavor = "multi_thread")]
async fn secrets_sweep_finds_nothing() {
    use crate::certs::*;
    let c = rsa_cert();
    let emu = cert_emulator(&c.der).await;
    let mut sweep = Sweep {
        secrets: vec![
            (aos_emulator::DEMO_CLIENT_SECRET.to_string(), "client secret"),
            ("wrong-secret-value-42".to_string(), "a rejected client secret"),
            (PASSWORD.to_string(), "certificate password"),
            (c.key_pkcs8_pem.lines().nth(2).unwrap().to_string(), "private key"),
            ("client_assertion=".to_string(), "client assertion"),
            (
                "pushgw-pass-77".to_string(),
                "the Pushgateway's basic-auth password in metrics.push_url",
            ),
            ("eyJ".to_string(), "a JWT"),
        ],
        seen: String::new(),
        places: Vec::new(),
    };
    let trace = [("RUST_LOG", "trace")];
    let now = ["--now", "2024-03-03T00:00:00Z"];
    let every = |extra: &'static [&'static str]| -> Vec<Vec<&'static str>> {
        let base: [&[&str]; 9] = [
            &["run"],
            &["backfill", "--from", "2024-03-01", "--to", "2024-03-02"],
            &["reconcile", "--from", "2024-03-01"],
            &["status"],
            &["status", "--json"],
            &["verify"],
            &["verify", "--json"],
            &["token"],
            &["config"],
        ];
        base.iter().map(|a| [&now[..], a, extra].concat()).collect()
    };
    // A client secret, text then JSON logs; a certificate with a password. The client-secret
    // setup also pushes its metrics to a Pushgateway URL carrying credentials (nothing listens:
    // every push fails and is logged).
    let secret = setup(&emu, "");
    let push = "\n[metrics]\npush_url = \"http://ops:pushgw-pass-77@127.0.0.1:9/\"\n";
    std::fs::write(&secret.config, std::fs::read_to_string(&secret.config).unwrap() + push).unwrap();
    let json = setup(&emu, "");
    std::fs::write(
        &json.config,
        std::fs::read_to_string(&json.config).unwrap() + "\n[log]\nformat = \"json\"\n",
    )
    .unwrap();
    let cert = setup(&emu, "");
    let f = write(
        &cert,
        "app.pfx",
        pfx(
            c,
            p12_keystore::EncryptionAlgorithm::PbeWithHmacSha256AndAes256,
            p12_keystore::MacAlgorithm::HmacSha256,
        ),
    );
    use_cert(&cert, &f, Some(PASSWORD), None);
    for (name, s) in [("secret", &secret), ("json", &json), ("cert", &cert)] {
        for args in every(&[]) {
            let o = cli(s, &args, &trace).await;
            assert!(o.status.success(), "{name} {args:?}: {}", stderr(&o));
            sweep.add_output(&format!("{name} {args:?}"), &o);
        }
    }
    // Failing: the identity service refuses a wrong secret (exit 3), at TRACE, both formats.
    for s in [&secret, &json] {
        std::fs::write(s.dir.path().join("secret"), "wrong-secret-value-42\n").unwrap();
        for args in [&["run"][..], &["token"], &["reconcile", "--from", "2024-03-01"], &["config"]] {
            let o = cli(s, &[&now[..], args].concat(), &trace).await;
            let want = if args == ["config"] { 0 } else { 3 };
            assert_eq!(o.status.code(), Some(want), "{args:?}: {}", stderr(&o));
            sweep.add_output(&format!("failing {args:?}"), &o);
        }
    }
    // The daemon: its log, metrics and health answers.
    let port = free_port();
    std::fs::write(
        &cert.config,
        std::fs::read_to_string(&cert.config).unwrap()
            + &format!("\n[daemon]\nlisten = \"127.0.0.1:{port}\"\n[schedule]\ncron = \"* * * * * *\"\n"),
    )
    .unwrap();
    let log = cert.dir.path().join("daemon.log");
    let mut child = tokio::process::Command::new(BIN)
        .args(["--config", &cert.config.display().to_string(), "--log-level", "trace", "daemon"])
        .stdout(std::fs::File::create(cert.dir.path().join("daemon.out")).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let mut metrics = String::new();
    for _ in 0..500 {
        if let Ok(r) = http.get(format!("http://127.0.0.1:{port}/metrics")).send().await {
            metrics = r.text().await.unwrap_or_default();
            if metrics.contains("aos_export_runs_ok_total 1") || metrics.contains("aos_export_runs_ok_total 2") {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(metrics.contains("aos_export_runs_ok_total"), "{metrics}");
    sweep.add("daemon /metrics", &metrics);
    for path in ["healthz", "readyz"] {
        let r = http.get(format!("http://127.0.0.1:{port}/{path}")).send().await.unwrap();
        sweep.add(format!("daemon /{path}"), &r.text().await.unwrap());
    }
    sigterm(&child);
    let _ = child.wait().await;
    sweep.add("daemon log", &std::fs::read_to_string(&log).unwrap());
    // Every file each setup left: output, markers, state database and journal, config.
    for s in [&secret, &json, &cert] {
        sweep.add_files(&s.out());
        sweep.add_files(s.state().parent().unwrap());
    }
    let mut tokens = emu.issued_tokens();
    assert!(tokens.len() >= 6, "tokens were issued ({})", tokens.len());
    sweep.secrets.extend(tokens.drain(..).map(|t| (t, "an access token")));
    assert!(
        sweep.seen.lines().count() > 1000,
        "trace logging was on ({} lines)",
        sweep.seen.lines().count()
    );
    assert!(sweep.places.len() > 80, "{} places", sweep.places.len());
    let found: Vec<&str> = sweep
        .secrets
        .iter()
        .filter(|(v, _)| sweep.seen.contains(v.as_str()))
        .map(|(_, what)| *what)
        .collect();
    assert!(found.is_empty(), "secrets found: {found:?}");
}
