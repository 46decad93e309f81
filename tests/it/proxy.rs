//! Corporate networks: the token request, every API request and every object-storage request
//! go through the forward proxy named by `HTTP_PROXY`/`HTTPS_PROXY` (a real one: Debian's
//! `tinyproxy`, started by the test on 127.0.0.1 with its own log, stopped with it), `NO_PROXY`
//! bypasses it, and `api.ca_bundle` is checked at start and trusted beside the system's roots (as
//! is `SSL_CERT_FILE`). `.ci/run` installs tinyproxy and moto and sets
//! `AOS_TEST_REQUIRE_TINYPROXY=1` and `AOS_TEST_REQUIRE_MOTO=1`, so in CI these tests cannot
//! silently skip.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use crate::common::*;

fn tinyproxy_available() -> bool {
    std::process::Command::new("tinyproxy")
        .arg("-v")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A tinyproxy on 127.0.0.1, logging every request to `dir/tinyproxy.log`; killed on drop.
struct Tinyproxy {
    _child: tokio::process::Child,
    url: String,
    log: std::path::PathBuf,
}

impl Tinyproxy {
    async fn start(dir: &Path) -> Tinyproxy {
        let port = free_port();
        let log = dir.join("tinyproxy.log");
        let conf = dir.join("tinyproxy.conf");
        std::fs::write(
            &conf,
            format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 60\nLogFile \"{}\"\nLogLevel Info\nMaxClients 50\nAllow 127.0.0.1\n",
                log.display()
            ),
        )
        .unwrap();
        let child = tokio::process::Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("tinyproxy starts");
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Tinyproxy {
                    _child: child,
                    url: format!("http://127.0.0.1:{port}"),
                    log,
                };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("tinyproxy did not start: {}", std::fs::read_to_string(&log).unwrap_or_default());
    }

    /// The requests tinyproxy forwarded (`METHOD URL`), from its own log.
    fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                l.split_once("): ")
                    .filter(|_| l.contains("Request (file descriptor"))?
                    .1
                    .rsplit_once(' ')
            })
            .map(|(req, _version)| req.to_string())
            .collect()
    }
}

/// Runs the binary with exactly these proxy variables (any inherited ones removed).
async fn cli_with_proxy(s: &Setup, args: &[&str], proxy_env: &[(&str, &str)]) -> Output {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.arg("--config").arg(&s.config).args(args).env_remove("RUST_LOG");
    for k in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "no_proxy",
    ] {
        cmd.env_remove(k);
    }
    for (k, v) in proxy_env {
        cmd.env(k, v);
    }
    cmd.output().await.expect("binary runs")
}

#[tokio::test(flavor = "multi_thread")]
async fn token_and_api_requests_go_through_the_forward_proxy() {
    if !tinyproxy_available() {
        assert!(
            std::env::var("AOS_TEST_REQUIRE_TINYPROXY").is_err(),
            "tinyproxy is required here: apt-get install tinyproxy"
        );
        eprintln!("SKIPPED: tinyproxy not installed (apt-get install tinyproxy)");
        return;
    }
    let emu = start(emu_config(2, 300)).await;
    let s = setup(&emu, "");
    let proxy = Tinyproxy::start(s.dir.path()).await;
    let env = [("HTTP_PROXY", proxy.url.as_str()), ("HTTPS_PROXY", proxy.url.as_str())];
    let o = cli_with_proxy(&s, &["backfill", "--from", "2024-03-01", "--to", "2024-03-03"], &env).await;
    assert_ok(&o);
    let (from, to) = range(2);
    assert_same_multiset(&read_all(&s.out()), &emu.ground_truth(from, to));

    // The proxy's own log shows the token request and every API request.
    let seen = proxy.requests();
    let token = format!("POST {}", emu.token_url());
    let api = format!("GET {}/aos/audit?", emu.base_url());
    assert_eq!(seen.iter().filter(|r| **r == token).count(), 1, "{seen:#?}");
    let api_seen = seen.iter().filter(|r| r.starts_with(&api)).count() as u64;
    assert!(api_seen >= 6, "600 records in pages of 100: {seen:#?}");
    assert_eq!(api_seen, emu.audit_requests(), "every API request went through the proxy");
    assert!(
        !seen.join("\n").contains(aos_emulator::DEMO_CLIENT_SECRET),
        "the secret is in the body, not the URL"
    );

    // NO_PROXY bypasses it: a dead proxy does not matter for a listed host ...
    let dead = format!("http://127.0.0.1:{}", free_port());
    let env = [("HTTP_PROXY", dead.as_str()), ("NO_PROXY", "127.0.0.1")];
    let o = cli_with_proxy(&s, &["backfill", "--from", "2024-03-03", "--to", "2024-03-04"], &env).await;
    assert_ok(&o);
    // ... and matters for every other host: the proxy really is on the path.
    let env = [("HTTP_PROXY", dead.as_str())];
    let o = cli_with_proxy(
        &s,
        &["backfill", "--from", "2024-03-04", "--to", "2024-03-05"],
        &[env[0], ("AOS_EXPORT_API__MAX_RETRIES", "1")],
    )
    .await;
    assert_eq!(
        o.status.code(),
        Some(4),
        "an unreachable proxy is a transport failure: {}",
        stderr(&o)
    );
    // Attributed to the proxy, not to the token URL's host.
    assert!(
        stderr(&o).contains(&format!("through the proxy {dead} that HTTP_PROXY names")),
        "{}",
        stderr(&o)
    );
    assert_eq!(proxy.requests().len(), seen.len(), "nothing else went through the live proxy");
}

/// `api.ca_bundle` set to `bundle` in the config of a fresh setup; the run is refused with exit
/// 2 naming the key, before any request.
async fn ca_bundle_refused(bundle: &[u8], expect: &str) {
    let emu = start(emu_config(1, 10)).await;
    let s = setup(&emu, "");
    let path = s.dir.path().join("ca.pem");
    std::fs::write(&path, bundle).unwrap();
    let text = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(
        &s.config,
        text.replace("[api]\n", &format!("[api]\nca_bundle = \"{}\"\n", path.display())),
    )
    .unwrap();
    let o = cli(&s, &["run"], &[]).await;
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("api.ca_bundle") && err.contains(expect), "{expect:?} in {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert_eq!(emu.counters().token_requests.load(std::sync::atomic::Ordering::Relaxed), 0);
    assert!(!s.out().exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unusable_ca_bundle_is_a_configuration_error() {
    ca_bundle_refused(b"not a certificate\n", "holds no PEM certificate").await;
    ca_bundle_refused(
        b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
        "certificate 1 is not a valid X.509 certificate",
    )
    .await;
    // Unreadable: a folder where the file should be.
    let emu = start(emu_config(1, 10)).await;
    let s = setup(&emu, "");
    let o = cli(&s, &["run"], &[("AOS_EXPORT_API__CA_BUNDLE", s.dir.path().to_str().unwrap())]).await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("api.ca_bundle: cannot read"), "{}", stderr(&o));
}

/// A TLS front for the emulator, as a TLS-inspecting proxy would present it: Python's
/// `http.server` with a certificate for `localhost` issued by a private CA, forwarding to the
/// emulator over plain HTTP. Killed on drop.
const TLS_FRONT: &str = r#"
import http.server, ssl, sys, urllib.error, urllib.request
port, upstream, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
class Front(http.server.BaseHTTPRequestHandler):
    def forward(self):
        n = int(self.headers.get('Content-Length') or 0)
        req = urllib.request.Request(upstream + self.path, data=self.rfile.read(n) if n else None, method=self.command)
        for h in ('Authorization', 'Content-Type'):
            if self.headers.get(h):
                req.add_header(h, self.headers[h])
        try:
            r = opener.open(req)
            code, data, ctype = r.status, r.read(), r.headers.get('Content-Type')
        except urllib.error.HTTPError as e:
            code, data, ctype = e.code, e.read(), e.headers.get('Content-Type')
        self.send_response(code)
        if ctype:
            self.send_header('Content-Type', ctype)
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    do_GET = do_POST = forward
    def log_message(self, *args):
        pass
srv = http.server.ThreadingHTTPServer(('127.0.0.1', port), Front)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_private_ca_is_trusted_through_api_ca_bundle_or_ssl_cert_file() {
    let work = tempfile::tempdir().unwrap();
    // A private CA and a certificate for localhost it issued.
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Corporate Inspection CA");
    ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap()).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let (ca_pem, cert, key) = (
        work.path().join("ca.pem"),
        work.path().join("cert.pem"),
        work.path().join("key.pem"),
    );
    std::fs::write(&ca_pem, ca.pem()).unwrap();
    std::fs::write(&cert, leaf.pem()).unwrap();
    std::fs::write(&key, leaf_key.serialize_pem()).unwrap();

    let port = free_port();
    let front = format!("https://localhost:{port}");
    let mut cfg = emu_config(2, 200);
    cfg.next_link_base = Some(front.clone());
    let emu = start(cfg).await;
    let _front = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(TLS_FRONT)
        .args([&port.to_string(), &emu.base_url()])
        .arg(&cert)
        .arg(&key)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs");
    let mut up = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "the TLS front started");
    let s = setup(&emu, "");
    let text = std::fs::read_to_string(&s.config).unwrap();
    let text = text
        .replace(&emu.token_url(), &format!("{front}/connect/token"))
        .replace(&format!("\"{}\"", emu.base_url()), &format!("\"{front}\""));
    std::fs::write(&s.config, text).unwrap();

    // Without the CA: the handshake fails, a transport failure (exit 4), not a credential one;
    // and not retried (a refused certificate does not heal), with the setting that fixes it.
    let o = cli(&s, &["backfill", "--from", "2024-03-01", "--to", "2024-03-02"], &[]).await;
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).to_lowercase().contains("certificate"), "{}", stderr(&o));
    assert!(stderr(&o).contains("api.ca_bundle"), "{}", stderr(&o));
    assert!(
        !stderr(&o).contains("retrying"),
        "a refused certificate is not retried: {}",
        stderr(&o)
    );
    assert_eq!(emu.counters().token_requests.load(std::sync::atomic::Ordering::Relaxed), 0);
    // The same for the API (the token from the emulator directly): exit 4 at once.
    let api_only = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace(&format!("{front}/connect/token"), &emu.token_url());
    let t = setup(&emu, "");
    let (from_dir, to_dir) = (s.dir.path().display().to_string(), t.dir.path().display().to_string());
    std::fs::write(&t.config, api_only.replace(&from_dir, &to_dir)).unwrap();
    let o = cli(&t, &["backfill", "--from", "2024-03-01", "--to", "2024-03-02"], &[]).await;
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("the API request failed") && stderr(&o).contains("api.ca_bundle"),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("retrying"), "{}", stderr(&o));

    // api.ca_bundle adds it to the system's roots.
    let ca_env = ca_pem.to_str().unwrap();
    let o = cli(
        &s,
        &["backfill", "--from", "2024-03-01", "--to", "2024-03-02"],
        &[("AOS_EXPORT_API__CA_BUNDLE", ca_env)],
    )
    .await;
    assert_ok(&o);
    // SSL_CERT_FILE (the system roots replaced by that file) works as well.
    let o = cli(
        &s,
        &["backfill", "--from", "2024-03-02", "--to", "2024-03-03"],
        &[("SSL_CERT_FILE", ca_env)],
    )
    .await;
    assert_ok(&o);
    assert!(emu.audit_requests() >= 4, "pages fetched over TLS");
    let (from, to) = range(2);
    assert_same_multiset(&read_all(&s.out()), &emu.ground_truth(from, to));
}

/// `key` as object_store writes it into an S3 request path: every byte but ASCII letters,
/// digits, `-`, `_`, `.`, `~` and `/` percent-encoded (so `dt=` becomes `dt%3D`).
fn s3_path_encoded(key: &str) -> String {
    key.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn object_storage_requests_go_through_the_forward_proxy() {
    if !tinyproxy_available() || !crate::s3::moto_available() {
        assert!(
            std::env::var("AOS_TEST_REQUIRE_TINYPROXY").is_err() || std::env::var("AOS_TEST_REQUIRE_MOTO").is_err(),
            "tinyproxy and moto_server are required here: apt-get install tinyproxy; pip install 'moto[server]'"
        );
        eprintln!("SKIPPED: needs tinyproxy and moto_server (apt-get install tinyproxy; pip install 'moto[server]')");
        return;
    }
    let moto = crate::s3::Moto::start("bucket").await;
    let emu = start(emu_config(3, 300)).await;
    let s = setup(&emu, "");
    let proxy = Tinyproxy::start(s.dir.path()).await;
    // Both proxy variables, NO_PROXY unset: the identity service, the API and S3 are all on
    // 127.0.0.1 over http://, so every request must go through the proxy.
    let mut env = vec![("HTTP_PROXY", proxy.url.as_str()), ("HTTPS_PROXY", proxy.url.as_str())];
    env.extend(moto.env());
    let output = "s3://bucket/prefix";
    let o = cli_with_proxy(
        &s,
        &["--output", output, "backfill", "--from", "2024-03-01", "--to", "2024-03-03"],
        &env,
    )
    .await;
    assert_ok(&o);
    assert!(!s.out().exists(), "nothing written locally");

    // The lake read back straight from moto equals the ground truth.
    let mirror = s.dir.path().join("mirror");
    let all = moto.download("bucket", "prefix", &mirror).await;
    let (markers, keys): (Vec<String>, Vec<String>) = all.iter().cloned().partition(|k| k.starts_with("prefix/_aos-audit-export/"));
    assert_eq!(markers.len(), 2, "a commit marker per window: {markers:?}");
    assert!(
        keys.len() >= 2 && keys.iter().all(|k| k.starts_with("prefix/dt=2024-03-0") && k.ends_with(".parquet")),
        "{keys:?}"
    );
    let (from, to) = range(2);
    assert_same_multiset(&read_all(&mirror), &emu.ground_truth(from, to));

    // The proxy's own log shows the token request, every API request, and one S3 PUT for each
    // published file (single-request uploads: the files are far below the multipart size).
    let seen = proxy.requests();
    let token = format!("POST {}", emu.token_url());
    assert_eq!(seen.iter().filter(|r| **r == token).count(), 1, "{seen:#?}");
    let api = format!("GET {}/aos/audit?", emu.base_url());
    let api_seen = seen.iter().filter(|r| r.starts_with(&api)).count() as u64;
    assert_eq!(api_seen, emu.audit_requests(), "every API request went through the proxy");
    assert!(api_seen >= 6, "600 records in pages of 100: {seen:#?}");
    let mut puts: Vec<&str> = seen
        .iter()
        .filter_map(|r| r.strip_prefix(&format!("PUT {}/bucket/", moto.url)))
        .collect();
    puts.sort_unstable();
    // A marker is put twice: when its attempt begins, and when it commits.
    let mut expected: Vec<String> = all.iter().chain(markers.iter()).map(|k| s3_path_encoded(k)).collect();
    expected.sort_unstable();
    assert_eq!(
        puts, expected,
        "one PUT per published file, two per marker (begin, commit), through the proxy: {seen:#?}"
    );

    // `verify` reads every file back through the proxy too.
    let v = cli_with_proxy(&s, &["--output", output, "verify"], &env).await;
    assert_ok(&v);
    assert!(stdout(&v).contains(&format!("verified {} files", keys.len())), "{}", stdout(&v));
    let seen = proxy.requests();
    for key in keys.iter().map(|k| s3_path_encoded(k)) {
        let get = format!("GET {}/bucket/{key}", moto.url);
        assert!(seen.contains(&get), "{get} in {seen:#?}");
    }

    // The lower-case `no_proxy` bypasses it for object storage as well: a dead `http_proxy`
    // does not matter when every host is listed, and the new day lands in the bucket.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let mut env = vec![("http_proxy", dead.as_str()), ("no_proxy", "127.0.0.1")];
    env.extend(moto.env());
    let o = cli_with_proxy(
        &s,
        &["--output", output, "backfill", "--from", "2024-03-03", "--to", "2024-03-04"],
        &env,
    )
    .await;
    assert_ok(&o);
    let mirror = s.dir.path().join("mirror2");
    let keys = moto.download("bucket", "prefix", &mirror).await;
    assert!(keys.iter().any(|k| k.starts_with("prefix/dt=2024-03-03/")), "{keys:?}");
    let (from, to) = range(3);
    assert_same_multiset(&read_all(&mirror), &emu.ground_truth(from, to));
    assert_eq!(proxy.requests().len(), seen.len(), "nothing else went through the live proxy");
}
