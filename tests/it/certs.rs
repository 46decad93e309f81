//! Certificate authentication (RFC 7523) and the token lifecycle, against the emulator's
//! IdentityServer-style validation. Certificates are generated at test time (rcgen); PKCS#12
//! files are written with p12-keystore in both the modern (AES-256 + SHA-256 MAC) and the
//! legacy (3DES + SHA-1 MAC) encryption, and with the openssl CLI when it is installed.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::Ordering;

use aos_emulator::{ClientRegistration, EmulatorHandle};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p12_keystore::{EncryptionAlgorithm, KeyStore, KeyStoreEntry, MacAlgorithm, PrivateKeyChain};
use serde_json::Value;
use sha1::Digest;

use crate::common::*;

pub(crate) const CLIENT: &str = "cert-client";
pub(crate) const PASSWORD: &str = "pfx-päss word";

pub(crate) struct TestCert {
    pub(crate) der: Vec<u8>,
    pub(crate) cert_pem: String,
    key_pkcs8_der: Vec<u8>,
    pub(crate) key_pkcs8_pem: String,
}

fn make_cert(alg: &'static rcgen::SignatureAlgorithm, not_before_days: i64, not_after_days: i64) -> TestCert {
    let key = rcgen::KeyPair::generate_for(alg).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["aos-audit-export-test".into()]).unwrap();
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now + time::Duration::days(not_before_days);
    params.not_after = now + time::Duration::days(not_after_days);
    let cert = params.self_signed(&key).unwrap();
    TestCert {
        der: cert.der().to_vec(),
        cert_pem: cert.pem(),
        key_pkcs8_der: key.serialize_der(),
        key_pkcs8_pem: key.serialize_pem(),
    }
}

/// One RSA certificate shared by the tests (key generation is the slow part).
pub(crate) fn rsa_cert() -> &'static TestCert {
    static C: OnceLock<TestCert> = OnceLock::new();
    C.get_or_init(|| make_cert(&rcgen::PKCS_RSA_SHA256, -1, 365))
}

fn thumbprint(der: &[u8]) -> String {
    hex::encode_upper(sha1::Sha1::digest(der))
}

pub(crate) fn pfx(c: &TestCert, alg: EncryptionAlgorithm, mac: MacAlgorithm) -> Vec<u8> {
    let mut ks = KeyStore::new();
    let cert = p12_keystore::Certificate::from_der(&c.der).unwrap();
    let key = p12_keystore::PrivateKey::from_der(&c.key_pkcs8_der).unwrap();
    ks.add_entry(
        "app",
        KeyStoreEntry::PrivateKeyChain(PrivateKeyChain::new(vec![1u8, 2, 3, 4], key, [cert])),
    );
    ks.writer(PASSWORD).encryption_algorithm(alg).mac_algorithm(mac).write().unwrap()
}

fn pkcs1_pem(c: &TestCert) -> String {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::pkcs8::DecodePrivateKey;
    rsa::RsaPrivateKey::from_pkcs8_der(&c.key_pkcs8_der)
        .unwrap()
        .to_pkcs1_pem(rsa::pkcs1::LineEnding::LF)
        .unwrap()
        .to_string()
}

pub(crate) async fn cert_emulator(cert_der: &[u8]) -> EmulatorHandle {
    let mut cfg = emu_config(2, 100);
    cfg.clients.push(ClientRegistration {
        client_id: CLIENT.into(),
        secret: None,
        certificate_der: Some(cert_der.to_vec()),
        scopes: vec!["audit.read.all".into()],
    });
    start(cfg).await
}

/// Rewrites the setup's [auth] section for the certificate client.
pub(crate) fn use_cert(s: &Setup, cert: &Path, password: Option<&str>, key: Option<&Path>) {
    let text = std::fs::read_to_string(&s.config).unwrap();
    let mut auth = format!("client_id = \"{CLIENT}\"\ncertificate_path = \"{}\"\n", cert.display());
    if let Some(p) = password {
        std::fs::write(s.dir.path().join("pfx-password"), p).unwrap();
        auth.push_str(&format!(
            "certificate_password_file = \"{}\"\n",
            s.dir.path().join("pfx-password").display()
        ));
    }
    if let Some(k) = key {
        auth.push_str(&format!("private_key_path = \"{}\"\n", k.display()));
    }
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("client_id") && !l.starts_with("client_secret_file"))
        .map(|l| if l == "[auth]" { format!("[auth]\n{auth}") } else { l.to_string() })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&s.config, text).unwrap();
}

pub(crate) fn write(s: &Setup, name: &str, data: impl AsRef<[u8]>) -> PathBuf {
    let p = s.dir.path().join(name);
    std::fs::write(&p, data).unwrap();
    p
}

async fn token_ok(s: &Setup, c: &TestCert) {
    let o = cli(s, &["token"], &[]).await;
    assert_ok(&o);
    let out = stdout(&o);
    assert!(out.contains(&thumbprint(&c.der)), "prints the thumbprint: {out}");
    assert!(out.contains("scope:      audit.read.all") && out.contains("expires:"), "{out}");
    assert!(!out.contains("emu."), "never prints the token: {out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn pfx_modern_and_legacy_encryption() {
    let c = rsa_cert();
    let emu = cert_emulator(&c.der).await;
    for (alg, mac, name) in [
        (
            EncryptionAlgorithm::PbeWithHmacSha256AndAes256,
            MacAlgorithm::HmacSha256,
            "modern.pfx",
        ),
        (
            EncryptionAlgorithm::PbeWithShaAnd3KeyTripleDesCbc,
            MacAlgorithm::HmacSha1,
            "legacy.p12",
        ),
    ] {
        let s = setup(&emu, "");
        let f = write(&s, name, pfx(c, alg, mac));
        use_cert(&s, &f, Some(PASSWORD), None);
        token_ok(&s, c).await;
    }
    // A full run with the certificate exports the data.
    let s = setup(&emu, "");
    let f = write(
        &s,
        "app.pfx",
        pfx(c, EncryptionAlgorithm::PbeWithHmacSha256AndAes256, MacAlgorithm::HmacSha256),
    );
    use_cert(&s, &f, Some(PASSWORD), None);
    assert_ok(&cli(&s, &["backfill", "--from", "2024-03-01", "--to", "2024-03-03"], &[]).await);
    let (from, to) = range(2);
    assert_same_multiset(&read_all(&s.out()), &emu.ground_truth(from, to));
}

#[tokio::test(flavor = "multi_thread")]
async fn pfx_made_by_openssl_when_available() {
    let Ok(v) = std::process::Command::new("openssl").arg("version").output() else {
        eprintln!("openssl not installed; covered by the p12-keystore files");
        return;
    };
    assert!(v.status.success());
    let c = rsa_cert();
    let emu = cert_emulator(&c.der).await;
    let s = setup(&emu, "");
    let cert = write(&s, "c.pem", &c.cert_pem);
    let key = write(&s, "k.pem", &c.key_pkcs8_pem);
    let pass = format!("pass:{PASSWORD}");
    // OpenSSL 3 defaults (AES-256-CBC, SHA-256 MAC), and the 3DES/SHA-1 form Windows exports.
    let runs: [(&str, &[&str]); 2] = [
        ("ossl-modern.pfx", &[]),
        (
            "ossl-legacy.pfx",
            &["-keypbe", "PBE-SHA1-3DES", "-certpbe", "PBE-SHA1-3DES", "-macalg", "sha1"],
        ),
    ];
    for (name, extra) in runs {
        let out = s.dir.path().join(name);
        let st = std::process::Command::new("openssl")
            .args(["pkcs12", "-export", "-in"])
            .arg(&cert)
            .arg("-inkey")
            .arg(&key)
            .arg("-out")
            .arg(&out)
            .args(["-passout", &pass])
            .args(extra)
            .status()
            .unwrap();
        assert!(st.success(), "openssl pkcs12 {name}");
        use_cert(&s, &out, Some(PASSWORD), None);
        token_ok(&s, c).await;
        // Reset the auth section for the next file.
        let fresh = setup(&emu, "");
        std::fs::copy(&fresh.config, &s.config).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pem_with_pkcs8_and_pkcs1_keys() {
    let c = rsa_cert();
    let emu = cert_emulator(&c.der).await;
    // Certificate and PKCS#8 key in one file.
    let s = setup(&emu, "");
    let f = write(&s, "app.pem", format!("{}{}", c.cert_pem, c.key_pkcs8_pem));
    use_cert(&s, &f, None, None);
    token_ok(&s, c).await;
    // Certificate alone, PKCS#1 key in private_key_path.
    let s = setup(&emu, "");
    let cert = write(&s, "cert.pem", &c.cert_pem);
    let key = write(&s, "key.pem", pkcs1_pem(c));
    assert!(std::fs::read_to_string(&key).unwrap().contains("BEGIN RSA PRIVATE KEY"));
    use_cert(&s, &cert, None, Some(&key));
    token_ok(&s, c).await;
}

async fn refused(s: &Setup, expect: &[&str]) {
    let o = cli(s, &["token"], &[]).await;
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "auth errors exit 3: {err}");
    let line = err.trim_end().lines().last().unwrap();
    for e in expect {
        assert!(line.contains(e), "{e:?} in {line}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_certificates_are_refused_clearly() {
    let c = rsa_cert();
    let emu = cert_emulator(&c.der).await;
    // Wrong password.
    let s = setup(&emu, "");
    let f = write(
        &s,
        "app.pfx",
        pfx(c, EncryptionAlgorithm::PbeWithHmacSha256AndAes256, MacAlgorithm::HmacSha256),
    );
    use_cert(&s, &f, Some("not the password"), None);
    refused(&s, &["app.pfx", "certificate_password"]).await;
    // Corrupt file.
    let s = setup(&emu, "");
    let mut bytes = pfx(c, EncryptionAlgorithm::PbeWithHmacSha256AndAes256, MacAlgorithm::HmacSha256);
    bytes.truncate(bytes.len() / 2);
    let f = write(&s, "corrupt.pfx", bytes);
    use_cert(&s, &f, Some(PASSWORD), None);
    refused(&s, &["corrupt.pfx"]).await;
    // Expired.
    let old = make_cert(&rcgen::PKCS_RSA_SHA256, -30, -1);
    let s = setup(&emu, "");
    let f = write(&s, "old.pem", format!("{}{}", old.cert_pem, old.key_pkcs8_pem));
    use_cert(&s, &f, None, None);
    refused(&s, &["old.pem", "expired"]).await;
    // Not yet valid.
    let future = make_cert(&rcgen::PKCS_RSA_SHA256, 2, 30);
    let s = setup(&emu, "");
    let f = write(&s, "future.pem", format!("{}{}", future.cert_pem, future.key_pkcs8_pem));
    use_cert(&s, &f, None, None);
    refused(&s, &["future.pem", "not valid before"]).await;
    // Not RSA.
    let ec = make_cert(&rcgen::PKCS_ECDSA_P256_SHA256, -1, 30);
    let s = setup(&emu, "");
    let f = write(&s, "ec.pem", format!("{}{}", ec.cert_pem, ec.key_pkcs8_pem));
    use_cert(&s, &f, None, None);
    refused(&s, &["ec.pem", "not RSA"]).await;
    // A key that is not the certificate's.
    let other = make_cert(&rcgen::PKCS_RSA_SHA256, -1, 30);
    let s = setup(&emu, "");
    let f = write(&s, "mixed.pem", format!("{}{}", c.cert_pem, other.key_pkcs8_pem));
    use_cert(&s, &f, None, None);
    refused(&s, &["mixed.pem", "does not match"]).await;
    // A certificate the identity service does not know (valid, but not registered).
    let s = setup(&emu, "");
    let f = write(&s, "unregistered.pem", format!("{}{}", other.cert_pem, other.key_pkcs8_pem));
    use_cert(&s, &f, None, None);
    refused(&s, &["invalid_client"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn expiring_certificate_warns() {
    let soon = make_cert(&rcgen::PKCS_RSA_SHA256, -1, 10);
    let emu = cert_emulator(&soon.der).await;
    let s = setup(&emu, "");
    let f = write(&s, "soon.pem", format!("{}{}", soon.cert_pem, soon.key_pkcs8_pem));
    use_cert(&s, &f, None, None);
    let o = cli(&s, &["token"], &[]).await;
    assert_ok(&o);
    assert!(stderr(&o).contains("certificate expires in"), "{}", stderr(&o));
}

/// The shared certificate as one PEM file in `dir`, settings pointing at `emu`, and a token
/// provider built from them (in process, for tests that reach inside the auth module).
fn cert_provider(
    emu: &EmulatorHandle,
    c: &TestCert,
    dir: &Path,
) -> (
    PathBuf,
    aos_audit_export::config::Settings,
    std::sync::Arc<aos_audit_export::auth::TokenProvider>,
) {
    let pem = dir.join("app.pem");
    std::fs::write(&pem, format!("{}{}", c.cert_pem, c.key_pkcs8_pem)).unwrap();
    let mut raw = aos_audit_export::config::RawConfig::local(emu.token_url(), emu.base_url(), CLIENT, "unused");
    raw.auth.client_secret = None;
    raw.auth.certificate_path = Some(pem.clone());
    let settings = raw.validate(chrono::Utc::now()).unwrap();
    let tp = aos_audit_export::auth::TokenProvider::new(settings.auth.clone(), reqwest::Client::new()).unwrap();
    (pem, settings, std::sync::Arc::new(tp))
}

#[tokio::test(flavor = "multi_thread")]
async fn assertion_verifies_with_an_independent_implementation() {
    use rsa::pkcs1::DecodeRsaPublicKey;
    use rsa::signature::Verifier;
    let c = rsa_cert();
    let emu = cert_emulator(&c.der).await;
    let dir = tempfile::tempdir().unwrap();
    let (pem, _, tp) = cert_provider(&emu, c, dir.path());
    let cert = aos_audit_export::auth::certificate::load(&pem, None, None, chrono::Utc::now()).unwrap();
    let now = chrono::Utc::now().timestamp();
    let jwt = tp.client_assertion(&cert, now).unwrap();
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    let sha1 = sha1::Sha1::digest(&c.der);
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["typ"], "JWT");
    assert_eq!(header["kid"], hex::encode_upper(sha1));
    assert_eq!(header["x5t"], URL_SAFE_NO_PAD.encode(sha1));
    assert_eq!(claims["iss"], CLIENT);
    assert_eq!(claims["sub"], CLIENT);
    assert_eq!(claims["aud"], emu.token_url());
    assert_eq!(claims["nbf"], now);
    assert_eq!(claims["iat"], now);
    assert_eq!(claims["exp"], now + 600);
    let jti = uuid::Uuid::parse_str(claims["jti"].as_str().unwrap()).unwrap();
    assert_eq!(jti.get_version_num(), 4);
    // The signature, checked with the `rsa` crate against the certificate's public key.
    let (_, x509) = x509_parser::parse_x509_certificate(&c.der).unwrap();
    let key = rsa::RsaPublicKey::from_pkcs1_der(&x509.public_key().subject_public_key.data).unwrap();
    let sig = rsa::pkcs1v15::Signature::try_from(URL_SAFE_NO_PAD.decode(parts[2]).unwrap().as_slice()).unwrap();
    rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(key)
        .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
        .expect("signature verifies");
    // A second assertion gets a fresh jti.
    let again: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(tp.client_assertion(&cert, now).unwrap().split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_ne!(again["jti"], claims["jti"]);

    // The emulator accepts it once and rejects the replay.
    let http = reqwest::Client::new();
    let post = |a: String| {
        let form = [
            ("grant_type", "client_credentials".to_string()),
            ("client_id", CLIENT.to_string()),
            ("scope", "audit.read.all".to_string()),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_string(),
            ),
            ("client_assertion", a),
        ];
        http.post(emu.token_url()).form(&form).send()
    };
    assert_eq!(post(jwt.clone()).await.unwrap().status(), 200);
    let replay = post(jwt).await.unwrap();
    assert_eq!(replay.status(), 401);
    let body: Value = replay.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");
    assert!(body["error_description"].as_str().unwrap().contains("jti"));
}

#[tokio::test(flavor = "multi_thread")]
async fn unauthorized_refreshes_once_then_succeeds() {
    let c = rsa_cert();
    let emu = cert_emulator(&c.der).await;
    let dir = tempfile::tempdir().unwrap();
    let (_, settings, tp) = cert_provider(&emu, c, dir.path());
    let api = aos_audit_export::api::ApiClient::new(settings.api.clone(), reqwest::Client::new(), tp.clone(), Default::default());
    let (from, _) = range(1);
    let url = api.first_url(&settings.api.streams[0], from, from + chrono::Duration::hours(1));
    let cancel = tokio_util::sync::CancellationToken::new();
    api.fetch_page(&url, &cancel).await.unwrap();
    assert_eq!(tp.token_requests(), 1, "token cached");
    api.fetch_page(&url, &cancel).await.unwrap();
    assert_eq!(tp.token_requests(), 1, "token reused");
    emu.revoke_all_tokens();
    api.fetch_page(&url, &cancel).await.expect("a 401 is answered by one refresh");
    assert_eq!(tp.token_requests(), 2);
    assert_eq!(emu.counters().unauthorized.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_refresh_for_concurrent_callers_and_proactive_refresh() {
    let mut cfg = emu_config(1, 10);
    cfg.token_ttl = chrono::Duration::seconds(2);
    let emu = start(cfg).await;
    let raw = aos_audit_export::config::RawConfig::local(
        emu.token_url(),
        emu.base_url(),
        aos_emulator::DEMO_CLIENT_ID,
        aos_emulator::DEMO_CLIENT_SECRET,
    );
    let settings = raw.validate(chrono::Utc::now()).unwrap();
    let tp = std::sync::Arc::new(aos_audit_export::auth::TokenProvider::new(settings.auth, reqwest::Client::new()).unwrap());
    let tokens = futures::future::join_all((0..16).map(|_| {
        let tp = tp.clone();
        async move { tp.token().await.unwrap().bearer().to_string() }
    }))
    .await;
    assert_eq!(tp.token_requests(), 1, "one request for 16 concurrent callers");
    assert!(tokens.iter().all(|t| t == &tokens[0]));
    // Refreshed at 80% of the 2 s lifetime, before the token expires.
    tokio::time::sleep(std::time::Duration::from_millis(1700)).await;
    let fresh = tp.token().await.unwrap();
    assert_eq!(tp.token_requests(), 2);
    assert_ne!(fresh.bearer(), tokens[0]);
}
