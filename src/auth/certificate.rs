//! Loading the app certificate and its RSA key from PKCS#12 or PEM, and what the assertion
//! header needs from it (SHA-1 thumbprint). Error messages name the file, never its contents.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha1::{Digest, Sha1};

use super::AuthError;

const RSA_OID: &str = "1.2.840.113549.1.1.1";

/// A loaded certificate with its signing key. `Debug` shows only the thumbprint.
pub struct AppCertificate {
    /// SHA-1 thumbprint of the DER certificate, upper-case hex (the assertion's `kid`).
    pub thumbprint_hex: String,
    /// SHA-1 thumbprint of the DER certificate, base64url without padding (the assertion's `x5t`).
    pub x5t: String,
    /// Start of the certificate's validity period.
    pub not_before: DateTime<Utc>,
    /// End of the certificate's validity period.
    pub not_after: DateTime<Utc>,
    /// The certificate's subject distinguished name.
    pub subject: String,
    pub(super) key: EncodingKey,
}

impl std::fmt::Debug for AppCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppCertificate")
            .field("thumbprint", &self.thumbprint_hex)
            .field("not_after", &self.not_after)
            .finish()
    }
}

fn bad(path: &Path, what: impl Into<String>) -> AuthError {
    AuthError::Certificate {
        path: path.to_path_buf(),
        message: what.into(),
    }
}

/// Loads `path` (PKCS#12 when it is not PEM), with `key_path` for a PEM without its key.
pub fn load(path: &Path, password: Option<&str>, key_path: Option<&Path>, now: DateTime<Utc>) -> Result<AppCertificate, AuthError> {
    let data = std::fs::read(path).map_err(|e| bad(path, format!("cannot read: {e}")))?;
    let is_pem = data.windows(11).take(4096).any(|w| w == b"-----BEGIN ");
    let (cert_der, key): (Vec<u8>, PrivateKeyDer<'static>) = if is_pem {
        let cert = CertificateDer::pem_slice_iter(&data)
            .next()
            .ok_or_else(|| bad(path, "no CERTIFICATE block in the PEM file"))?
            .map_err(|e| bad(path, format!("invalid PEM certificate: {e}")))?;
        let (kpath, kdata): (PathBuf, Vec<u8>) = match key_path {
            Some(k) => (
                k.to_path_buf(),
                std::fs::read(k).map_err(|e| bad(k, format!("cannot read private_key_path: {e}")))?,
            ),
            None => (path.to_path_buf(), data.clone()),
        };
        let key = PrivateKeyDer::from_pem_slice(&kdata).map_err(|e| {
            bad(
                &kpath,
                format!(
                    "no usable private key (PKCS#8 or PKCS#1 PEM) found ({e}); set auth.private_key_path if the key is in another file"
                ),
            )
        })?;
        (cert.to_vec(), key)
    } else {
        let pw = password.unwrap_or("");
        let ks = p12_keystore::KeyStore::from_pkcs12(&data, pw, p12_keystore::Pkcs12ImportPolicy::Relaxed).map_err(|e| {
            bad(
                path,
                format!("cannot open PKCS#12: wrong auth.certificate_password or corrupt file ({e})"),
            )
        })?;
        let (_, chain) = ks
            .private_key_chain()
            .ok_or_else(|| bad(path, "PKCS#12 holds no private key with a certificate"))?;
        let cert = chain
            .certs()
            .first()
            .ok_or_else(|| bad(path, "PKCS#12 holds a key without its certificate"))?;
        (cert.as_der().to_vec(), PrivateKeyDer::Pkcs8(chain.key().as_der().to_vec().into()))
    };
    let (_, x509) = x509_parser::parse_x509_certificate(&cert_der).map_err(|e| bad(path, format!("invalid X.509 certificate: {e}")))?;
    let alg = x509.public_key().algorithm.algorithm.to_id_string();
    if alg != RSA_OID {
        return Err(bad(
            path,
            format!("the certificate's key is not RSA (algorithm {alg}); only RSA certificates are supported"),
        ));
    }
    let not_before = DateTime::from_timestamp(x509.validity().not_before.timestamp(), 0).unwrap_or_default();
    let not_after = DateTime::from_timestamp(x509.validity().not_after.timestamp(), 0).unwrap_or_default();
    if now > not_after {
        return Err(bad(
            path,
            format!("the certificate expired on {not_after}; upload a new one to the app registration"),
        ));
    }
    if now < not_before {
        return Err(bad(path, format!("the certificate is not valid before {not_before}")));
    }
    let key = match &key {
        PrivateKeyDer::Pkcs1(k) => EncodingKey::from_rsa_der(k.secret_pkcs1_der()),
        PrivateKeyDer::Pkcs8(k) => {
            // jsonwebtoken's DER constructor takes PKCS#1 only; its PEM one takes PKCS#8 too.
            let pem = format!(
                "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
                STANDARD.encode(k.secret_pkcs8_der())
            );
            EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(|_| bad(path, "the private key is not an RSA key; only RSA is supported"))?
        }
        PrivateKeyDer::Sec1(_) => return Err(bad(path, "the private key is an EC key; only RSA is supported")),
        _ => return Err(bad(path, "unsupported private key type; only RSA is supported")),
    };
    // Prove the key belongs to the certificate now, rather than getting invalid_client later.
    let public = DecodingKey::from_rsa_der(&x509.public_key().subject_public_key.data);
    let probe = b"aos-audit-export key check";
    let sig = jsonwebtoken::crypto::sign(probe, &key, Algorithm::RS256)
        .map_err(|_| bad(path, "the private key cannot sign with RS256 (not an RSA key?)"))?;
    if !jsonwebtoken::crypto::verify(&sig, probe, &public, Algorithm::RS256).unwrap_or(false) {
        return Err(bad(path, "the private key does not match the certificate"));
    }
    let digest = Sha1::digest(&cert_der);
    Ok(AppCertificate {
        thumbprint_hex: hex::encode_upper(digest),
        x5t: URL_SAFE_NO_PAD.encode(digest),
        not_before,
        not_after,
        subject: x509.subject().to_string(),
        key,
    })
}
