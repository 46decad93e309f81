//! Issue 17: the bad-input catalogue. Each case breaks one thing — configuration, credentials,
//! certificates, state files, output URLs, the command line or what the API answers — and must
//! give exactly one `error:` line naming the culprit, the documented exit code, no panic, no
//! committed window, and no visible file (data or staging) in the output.

use std::path::Path;

use aos_emulator::{ClientRegistration, EmulatorConfig};

use crate::common::*;

/// Which emulator a case talks to.
#[derive(Clone, Copy, PartialEq)]
enum Emu {
    /// Two days of ordinary records.
    Plain,
    /// Every audit page is valid JSON but no page (no `data`).
    Malformed,
    /// The audit API answers 503 to everything.
    Outage,
    /// `nextLink`s point at another host.
    ForeignLink,
    /// A record far outside the window asked for (a server that ignores startTime/endTime).
    Misplaced,
    /// A record holding a lone surrogate escape.
    Invalid,
    /// The demo client lacks the `audit.read.all` scope.
    NoScope,
}

struct Case {
    name: &'static str,
    emu: Emu,
    /// Applied to the fresh setup (config text, files next to it).
    edit: fn(&Setup),
    args: &'static [&'static str],
    code: i32,
    /// What the one error line must name.
    needle: &'static str,
}

fn append(s: &Setup, text: &str) {
    let t = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(&s.config, format!("{t}\n{text}\n")).unwrap();
}

/// Adds `line` to the `[export]` section.
fn export(s: &Setup, line: &str) {
    replace(s, "[export]\n", &format!("[export]\n{line}\n"));
}

/// Adds `line` to the `[api]` section.
fn api(s: &Setup, line: &str) {
    replace(s, "[api]\n", &format!("[api]\n{line}\n"));
}

fn replace(s: &Setup, from: &str, to: &str) {
    let t = std::fs::read_to_string(&s.config).unwrap();
    assert!(t.contains(from), "{from:?} in the config");
    std::fs::write(&s.config, t.replacen(from, to, 1)).unwrap();
}

/// Swaps the client secret for a certificate file holding `data`.
fn certificate(s: &Setup, data: &[u8], extra: &str) {
    let path = s.dir.path().join("app.pfx");
    std::fs::write(&path, data).unwrap();
    let t = std::fs::read_to_string(&s.config).unwrap();
    let t: String = t
        .lines()
        .filter(|l| !l.starts_with("client_secret_file"))
        .map(|l| {
            if l == "[auth]" {
                format!("[auth]\ncertificate_path = \"{}\"\n{extra}", path.display())
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&s.config, t).unwrap();
}

fn pfx_bytes() -> Vec<u8> {
    crate::certs::pfx(
        crate::certs::rsa_cert(),
        p12_keystore::EncryptionAlgorithm::PbeWithHmacSha256AndAes256,
        p12_keystore::MacAlgorithm::HmacSha256,
    )
}

const RUN: &[&str] = &["--now", "2024-03-03T00:00:00Z", "run"];

fn cases() -> Vec<Case> {
    let c = |name, emu, edit: fn(&Setup), args, code, needle| Case {
        name,
        emu,
        edit,
        args,
        code,
        needle,
    };
    use Emu::*;
    vec![
        // Configuration (2).
        c("unknown key", Plain, |s| export(s, "colour = \"blue\""), RUN, 2, "colour"),
        c(
            "compact of a folder lake",
            Plain,
            |_| {},
            &["compact", "--from", "2024-03-01"],
            2,
            "export.format",
        ),
        c(
            "window over 7 days",
            Plain,
            |s| export(s, "window = \"8d\""),
            RUN,
            2,
            "export.window",
        ),
        c(
            "start not an instant",
            Plain,
            |s| replace(s, "start = \"2024-03-01T00:00:00+00:00\"", "start = \"yesterday\""),
            RUN,
            2,
            "export.start",
        ),
        c("format unknown", Plain, |s| export(s, "format = \"csv\""), RUN, 2, "export.format"),
        c(
            "compression unknown",
            Plain,
            |s| export(s, "compression = \"brotli\""),
            RUN,
            2,
            "export.compression",
        ),
        c(
            "concurrency zero",
            Plain,
            |s| export(s, "concurrency = 0"),
            RUN,
            2,
            "export.concurrency",
        ),
        c(
            "size unit unknown",
            Plain,
            |s| export(s, "file_max_bytes = \"12XB\""),
            RUN,
            2,
            "export.file_max_bytes",
        ),
        c(
            "lag below a second",
            Plain,
            |s| replace(s, "lag = \"0s\"", "lag = \"1500ms\""),
            RUN,
            2,
            "export.lag",
        ),
        c(
            "lookback not a duration",
            Plain,
            |s| export(s, "lookback = \"2 fortnights\""),
            RUN,
            2,
            "export.lookback",
        ),
        c(
            "on_invalid_record unknown",
            Plain,
            |s| export(s, "on_invalid_record = \"skip\""),
            RUN,
            2,
            "export.on_invalid_record",
        ),
        c(
            "file_mode executable",
            Plain,
            |s| export(s, "file_mode = \"0755\""),
            RUN,
            2,
            "export.file_mode",
        ),
        c(
            "zstd level out of range",
            Plain,
            |s| export(s, "zstd_level = 99"),
            RUN,
            2,
            "export.zstd_level",
        ),
        c(
            "max_page_bytes tiny",
            Plain,
            |s| api(s, "max_page_bytes = \"10\""),
            RUN,
            2,
            "api.max_page_bytes",
        ),
        c(
            "region unknown",
            Plain,
            |s| replace(s, "base_url = ", "region = \"mars\"\n#"),
            RUN,
            2,
            "api.region",
        ),
        c(
            "base_url not a URL",
            Plain,
            |s| replace(s, "base_url = \"", "base_url = \"not a url "),
            RUN,
            2,
            "api.base_url",
        ),
        c(
            "negative rate",
            Plain,
            |s| replace(s, "requests_per_second = 0", "requests_per_second = -1"),
            RUN,
            2,
            "api.requests_per_second",
        ),
        c(
            "bad cron",
            Plain,
            |s| append(s, "[schedule]\ncron = \"every tuesday\""),
            &["daemon"],
            2,
            "schedule.cron",
        ),
        c("TOML syntax", Plain, |s| append(s, "[export"), RUN, 2, "config.toml"),
        c(
            "log format unknown",
            Plain,
            |s| append(s, "[log]\nformat = \"xml\""),
            RUN,
            2,
            "log.format",
        ),
        c(
            "log level unknown",
            Plain,
            |s| append(s, "[log]\nlevel = \"loud\""),
            RUN,
            2,
            "log.level",
        ),
        c(
            "config file missing",
            Plain,
            |s| std::fs::remove_file(&s.config).unwrap(),
            RUN,
            2,
            "config.toml",
        ),
        // Command line (2).
        c(
            "backfill --from garbage",
            Plain,
            |_| {},
            &["backfill", "--from", "last week"],
            2,
            "--from",
        ),
        c(
            "backfill --to before --from",
            Plain,
            |_| {},
            &["backfill", "--from", "2024-03-02", "--to", "2024-03-01"],
            2,
            "--to",
        ),
        c(
            "lag of millennia (found by fuzzing)",
            Plain,
            |s| replace(s, "lag = \"0s\"", "lag = \"11555555511555m\""),
            RUN,
            2,
            "export.lag",
        ),
        c(
            "backfill --from millennia ago (found by fuzzing)",
            Plain,
            |_| {},
            &["backfill", "--from", "11555555511555m"],
            2,
            "--from",
        ),
        c(
            "backfill --from the future",
            Plain,
            |_| {},
            &["--now", "2024-03-03T00:00:00Z", "backfill", "--from", "2024-04-01"],
            2,
            "--from: 2024-04-01 00:00:00 UTC is in the future",
        ),
        c("--now garbage", Plain, |_| {}, &["--now", "soon", "run"], 2, "--now"),
        // Credentials (2: unusable; 3: rejected).
        c(
            "secret file missing",
            Plain,
            |s| replace(s, "/secret\"", "/no-such-secret\""),
            RUN,
            2,
            "no-such-secret",
        ),
        c(
            "secret file empty",
            Plain,
            |s| std::fs::write(s.dir.path().join("secret"), "\n").unwrap(),
            RUN,
            2,
            "secret",
        ),
        c(
            "no client id",
            Plain,
            |s| replace(s, "client_id = ", "# client_id = "),
            RUN,
            2,
            "auth.client_id",
        ),
        c(
            "secret rejected",
            Plain,
            |s| std::fs::write(s.dir.path().join("secret"), "wrong\n").unwrap(),
            RUN,
            3,
            "401",
        ),
        c(
            "client unknown",
            Plain,
            |s| replace(s, "client_id = \"", "client_id = \"nobody-"),
            RUN,
            3,
            "401",
        ),
        // Certificates (3).
        c(
            "certificate missing",
            Plain,
            |s| {
                certificate(s, b"", "");
                std::fs::remove_file(s.dir.path().join("app.pfx")).unwrap();
            },
            RUN,
            3,
            "app.pfx",
        ),
        c(
            "certificate garbage",
            Plain,
            |s| certificate(s, b"\x30\x82garbage", ""),
            RUN,
            3,
            "app.pfx",
        ),
        c(
            "pfx without its password",
            Plain,
            |s| certificate(s, &pfx_bytes(), ""),
            RUN,
            3,
            "app.pfx",
        ),
        c(
            "pfx wrong password",
            Plain,
            |s| {
                std::fs::write(s.dir.path().join("pw"), "not it").unwrap();
                let line = format!("certificate_password_file = \"{}\"\n", s.dir.path().join("pw").display());
                certificate(s, &pfx_bytes(), &line);
            },
            RUN,
            3,
            "app.pfx",
        ),
        c(
            "PEM certificate without a key",
            Plain,
            |s| certificate(s, crate::certs::rsa_cert().cert_pem.as_bytes(), ""),
            RUN,
            3,
            "app.pfx",
        ),
        // State (6).
        c(
            "state is not SQLite",
            Plain,
            |s| {
                std::fs::create_dir_all(s.state().parent().unwrap()).unwrap();
                std::fs::write(s.state(), vec![b'x'; 8192]).unwrap();
            },
            RUN,
            6,
            "state.db",
        ),
        c(
            "state path is a folder",
            Plain,
            |s| std::fs::create_dir_all(s.state()).unwrap(),
            RUN,
            6,
            "state.db",
        ),
        c(
            "state folder is a file",
            Plain,
            |s| std::fs::write(s.state().parent().unwrap(), "x").unwrap(),
            RUN,
            6,
            "state",
        ),
        // Output URLs (2: refused at start; 5: cannot write).
        c(
            "output scheme unknown",
            Plain,
            |s| replace(s, "output = \"", "output = \"ftp://host/"),
            RUN,
            2,
            "export.output",
        ),
        c(
            "s3 without a bucket",
            Plain,
            |s| replace(s, "output = \"", "output = \"s3://#"),
            RUN,
            2,
            "export.output",
        ),
        c(
            "azure without a container",
            Plain,
            |s| replace(s, "output = \"", "output = \"az://#"),
            RUN,
            2,
            "export.output",
        ),
        c(
            "output is a file",
            Plain,
            |s| std::fs::write(s.out(), "not a folder").unwrap(),
            RUN,
            5,
            "out",
        ),
        // API answers (4).
        c("pages without data", Malformed, |s| api(s, "max_retries = 1"), RUN, 4, "data"),
        c("API outage", Outage, |s| api(s, "max_retries = 1"), RUN, 4, "503"),
        c("foreign nextLink", ForeignLink, |_| {}, RUN, 4, "nextLink"),
        c(
            "server ignores the window",
            Misplaced,
            |_| {},
            RUN,
            4,
            "does not honour startTime/endTime",
        ),
        c(
            "invalid record with fail",
            Invalid,
            |s| export(s, "on_invalid_record = \"fail\""),
            RUN,
            4,
            "export.on_invalid_record",
        ),
        c(
            "page over max_page_bytes",
            Plain,
            |s| api(s, "max_page_bytes = \"2KiB\""),
            RUN,
            4,
            "api.max_page_bytes",
        ),
        c("scope not granted", NoScope, |_| {}, RUN, 3, "auth.scope"),
    ]
}

async fn emulator(kind: Emu) -> aos_emulator::EmulatorHandle {
    let mut cfg: EmulatorConfig = emu_config(2, 300);
    match kind {
        Emu::Plain => {}
        Emu::Malformed => cfg.faults.rate_malformed = 1.0,
        Emu::Outage => {}
        Emu::ForeignLink => cfg.next_link_base = Some("http://127.0.0.2:9".into()),
        Emu::Misplaced => {
            cfg.extra_records = vec![(
                day0() + chrono::Duration::hours(3),
                serde_json::json!({"actionTime": "2020-01-01T00:00:00Z"}),
            )]
        }
        Emu::Invalid => {
            cfg.extra_records = vec![(
                day0() + chrono::Duration::hours(3),
                serde_json::json!({ aos_emulator::RAW_EXTRA: r#"{"actionTime":"2024-03-01T03:00:00Z","comment":"\udc00"}"# }),
            )]
        }
        Emu::NoScope => {
            cfg.clients = vec![ClientRegistration {
                client_id: aos_emulator::DEMO_CLIENT_ID.into(),
                secret: Some(aos_emulator::DEMO_CLIENT_SECRET.into()),
                certificate_der: None,
                scopes: vec!["audit.read.other".into()],
            }]
        }
    }
    let emu = start(cfg).await;
    if kind == Emu::Outage {
        emu.set_audit_outage(true);
    }
    emu
}

/// Windows the state committed (0 when there is no readable state).
fn committed_windows(state: &Path) -> i64 {
    let Ok(c) = rusqlite::Connection::open_with_flags(state, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY) else {
        return 0;
    };
    c.query_row("SELECT COUNT(*) FROM windows", [], |r| r.get(0)).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_bad_input_gets_one_line_naming_it() {
    let cases = cases();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut failures = Vec::new();
    let mut emus: Vec<(Emu, aos_emulator::EmulatorHandle)> = Vec::new();
    for case in &cases {
        if !emus.iter().any(|(k, _)| *k == case.emu) {
            emus.push((case.emu, emulator(case.emu).await));
        }
        let emu = &emus.iter().find(|(k, _)| *k == case.emu).unwrap().1;
        let s = setup(emu, "");
        replace(&s, "retry_max_backoff = \"200ms\"", "retry_max_backoff = \"20ms\"");
        (case.edit)(&s);
        let o = cli(&s, case.args, &[]).await;
        let err = stderr(&o);
        let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error")).collect();
        let mut problems = Vec::new();
        if o.status.code() != Some(case.code) {
            problems.push(format!("exit {:?}, expected {}", o.status.code(), case.code));
        }
        if errors.len() != 1 || err.trim_end().lines().last() != errors.first().copied() {
            problems.push("not exactly one error line, last".to_string());
        }
        if !errors.first().is_some_and(|e| e.contains(case.needle)) {
            problems.push(format!("does not name {:?}", case.needle));
        }
        if err.contains("panicked") || err.contains("RUST_BACKTRACE") {
            problems.push("panicked".into());
        }
        if s.state().is_file() && committed_windows(&s.state()) != 0 {
            problems.push("a window was committed".into());
        }
        if s.out().is_dir() && (!data_files(&s.out()).is_empty() || !staging_files(&s.out()).is_empty()) {
            problems.push("a file is visible in the output".into());
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{}: {}\n  stderr: {}",
                case.name,
                problems.join("; "),
                err.trim_end().replace('\n', "\n          ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
