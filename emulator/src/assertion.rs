//! Validation of RFC 7523 client assertions, the way IdentityServer checks them.
//!
//! Deliberately independent of the exporter's JWT library (`jsonwebtoken`): the signature is
//! checked here with the `rsa` crate, so a test that passes proves the real contract.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::signature::Verifier;
use serde_json::Value;
use sha1::{Digest, Sha1};

/// Largest accepted lifetime (`exp - nbf`) of an assertion, as the AOS documentation states.
const MAX_LIFETIME_SECS: i64 = 3600;
/// Clock skew tolerated on `nbf`/`exp` (IdentityServer's default is 5 minutes).
const SKEW_SECS: i64 = 300;

/// What a valid assertion tells the token endpoint.
#[derive(Debug)]
pub struct ValidAssertion {
    pub jti: String,
    pub exp: i64,
}

/// Checks header, signature (RS256 against `cert_der`), `iss`/`sub`, `aud`, lifetime and `jti`
/// presence. Replay detection is the caller's (it owns the seen-`jti` set).
pub fn validate(jwt: &str, client_id: &str, cert_der: &[u8], audience: &str, now: i64) -> Result<ValidAssertion, String> {
    let mut parts = jwt.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err("client assertion is not a compact JWS".into());
    };
    let header: Value = decode_json(h).map_err(|e| format!("header: {e}"))?;
    if header["alg"] != "RS256" {
        return Err(format!("unsupported alg {}", header["alg"]));
    }
    let sha1 = Sha1::digest(cert_der);
    let x5t = URL_SAFE_NO_PAD.encode(sha1);
    let kid = hex::encode_upper(sha1);
    if header.get("x5t").and_then(Value::as_str) != Some(x5t.as_str()) {
        return Err("x5t does not match the registered certificate".into());
    }
    if let Some(k) = header.get("kid").and_then(Value::as_str)
        && k != kid
    {
        return Err("kid does not match the registered certificate".into());
    }
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).map_err(|e| format!("registered cert: {e}"))?;
    let spki = cert.public_key();
    let key = rsa::RsaPublicKey::from_pkcs1_der(&spki.subject_public_key.data).map_err(|e| format!("registered cert is not RSA: {e}"))?;
    let sig_bytes = URL_SAFE_NO_PAD.decode(s).map_err(|e| format!("signature encoding: {e}"))?;
    let sig = Signature::try_from(sig_bytes.as_slice()).map_err(|e| format!("signature: {e}"))?;
    VerifyingKey::<sha2::Sha256>::new(key)
        .verify(format!("{h}.{p}").as_bytes(), &sig)
        .map_err(|_| "signature validation failed".to_string())?;
    let claims: Value = decode_json(p).map_err(|e| format!("payload: {e}"))?;
    if claims["iss"] != client_id || claims["sub"] != client_id {
        return Err("iss and sub must equal the client id".into());
    }
    let aud_ok = match &claims["aud"] {
        Value::String(a) => a == audience,
        Value::Array(xs) => xs.iter().any(|a| a == audience),
        _ => false,
    };
    if !aud_ok {
        return Err(format!("aud must be {audience}"));
    }
    let exp = claims["exp"].as_i64().ok_or("exp missing")?;
    let nbf = claims["nbf"].as_i64().ok_or("nbf missing")?;
    if exp + SKEW_SECS < now {
        return Err("assertion expired".into());
    }
    if nbf - SKEW_SECS > now {
        return Err("assertion not yet valid".into());
    }
    if exp - nbf > MAX_LIFETIME_SECS {
        return Err("assertion lifetime exceeds 1 hour".into());
    }
    let jti = claims["jti"].as_str().filter(|j| !j.is_empty()).ok_or("jti missing")?;
    Ok(ValidAssertion { jti: jti.to_string(), exp })
}

fn decode_json(part: &str) -> Result<Value, String> {
    let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}
