//! Exit codes, and the mapping from an error chain to one. Documented in `docs/operations.md`.

use std::error::Error;

use crate::api::ApiError;
use crate::auth::AuthError;
use crate::checkpoint::CheckpointError;
use crate::config::ConfigError;
use crate::sink::SinkError;
use crate::store::StoreError;
use crate::window::ExportError;

/// Success.
pub const OK: u8 = 0;
/// Anything not covered below.
pub const FAILURE: u8 = 1;
/// Bad configuration or command line.
pub const CONFIG: u8 = 2;
/// Credential unusable or rejected by the identity service.
pub const AUTH: u8 = 3;
/// The API refused a request, or the API or identity service kept failing past the retries.
pub const API: u8 = 4;
/// Output could not be written or published.
pub const OUTPUT: u8 = 5;
/// State database unusable, or another instance holds its lock.
pub const STATE: u8 = 6;
/// `verify` found files that do not match the manifest; `demo` exported a different count.
pub const MISMATCH: u8 = 7;
/// `export.run_deadline` reached (progress up to it is committed).
pub const DEADLINE: u8 = 75;
/// Interrupted by SIGINT/SIGTERM (progress up to it is committed).
pub const INTERRUPTED: u8 = 130;

/// The error chain on one line, joined by ": ", skipping causes an outer message already
/// quotes (our errors often embed their source).
pub fn one_line(err: &(dyn Error + 'static)) -> String {
    let mut msg = String::new();
    for cause in chain(err) {
        let text = cause.to_string();
        if !msg.contains(&text) {
            if !msg.is_empty() {
                msg.push_str(": ");
            }
            msg.push_str(&text);
        }
    }
    msg.replace(['\n', '\r'], " ")
}

/// Raised by `verify` and `demo` when what was written differs from what was expected.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Mismatch(pub String);

/// `err` and its sources, outermost first.
fn chain<'a>(err: &'a (dyn Error + 'static)) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    std::iter::successors(Some(err), |e: &&'a (dyn Error + 'static)| (*e).source())
}

fn auth_code(e: &AuthError) -> u8 {
    if e.is_credential_problem() {
        AUTH
    } else if matches!(e, AuthError::Cancelled) {
        INTERRUPTED
    } else {
        // The identity service did not answer usefully: not the credential's fault.
        API
    }
}

fn api_code(e: &ApiError) -> u8 {
    match e {
        ApiError::Auth(a) => auth_code(a),
        ApiError::Cancelled => INTERRUPTED,
        _ => API,
    }
}

/// The failure cause an exit code stands for (a label of logs and metrics).
pub fn cause(code: u8) -> &'static str {
    match code {
        OK => "none",
        CONFIG => "config",
        AUTH => "auth",
        API => "api",
        OUTPUT => "output",
        STATE => "state",
        MISMATCH => "mismatch",
        DEADLINE => "deadline",
        INTERRUPTED => "interrupted",
        _ => "internal",
    }
}

/// The exit code for an error: the first error in the chain whose kind is known decides.
pub fn exit_code(err: &(dyn Error + 'static)) -> u8 {
    for cause in chain(err) {
        if cause.is::<ConfigError>() || cause.is::<clap::Error>() {
            return CONFIG;
        }
        if let Some(e) = cause.downcast_ref::<AuthError>() {
            return auth_code(e);
        }
        if let Some(e) = cause.downcast_ref::<ApiError>() {
            return api_code(e);
        }
        if cause.is::<SinkError>() || cause.is::<StoreError>() {
            return OUTPUT;
        }
        if cause.is::<CheckpointError>() {
            return STATE;
        }
        if cause.is::<Mismatch>() {
            return MISMATCH;
        }
        if let Some(crate::daemon::DaemonError::Export(e)) = cause.downcast_ref::<crate::daemon::DaemonError>() {
            return exit_code(e);
        }
        if let Some(e) = cause.downcast_ref::<ExportError>() {
            return match e {
                ExportError::Api(a) => api_code(a),
                ExportError::Auth(a) => auth_code(a),
                ExportError::Http(_) | ExportError::Internal(_) => FAILURE,
                ExportError::Sink(_) | ExportError::Store(_) => OUTPUT,
                ExportError::Checkpoint(_) => STATE,
                ExportError::Cancelled => INTERRUPTED,
                ExportError::Deadline => DEADLINE,
                ExportError::OutOfRange { .. } | ExportError::RepeatedNextLink(_) | ExportError::InvalidRecord { .. } => API,
                ExportError::Rebuild { .. } | ExportError::TableChanged { .. } => OUTPUT,
                ExportError::NotATable { .. } => CONFIG,
                ExportError::NotConvertible { .. } => MISMATCH,
                ExportError::FormatSwitch { .. } => CONFIG,
            };
        }
    }
    FAILURE
}
