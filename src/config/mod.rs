//! Configuration: the raw layers ([`raw`]), their validation into [`Settings`]
//! ([`settings`]), value parsers ([`parse`]), the AOS endpoint tables ([`endpoints`]) and the
//! redacting [`Secret`] type.
//!
//! Layers, later wins: built-in defaults < TOML file (`--config`) < environment (`AOS_EXPORT_`
//! prefix, `__` between section and key) < command-line flags. Unknown keys are errors. Every
//! raw field's `///` doc is its user documentation (`docs/configuration.md` and
//! `config/example.toml` list every key; a test keeps them in step). Nothing here does network
//! I/O; secret files are read during validation so a missing secret fails before anything is
//! written.

pub mod endpoints;
pub mod parse;
pub mod raw;
pub mod secret;
pub mod settings;
mod streams;

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format as _, Toml};

pub use parse::{parse_duration, parse_instant, parse_instant_or_ago, parse_size};
pub use raw::RawConfig;
pub use secret::Secret;
pub use settings::{ApiSettings, AuthSettings, CaBundle, Credential, DaemonSettings, ExportSettings, Settings};

/// Environment variable prefix of every configuration key.
pub const ENV_PREFIX: &str = "AOS_EXPORT_";
/// Environment variable naming the configuration file (same as `--config`).
pub const ENV_CONFIG_FILE: &str = "AOS_EXPORT_CONFIG";

/// A configuration the program cannot use; each names the key or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named by `--config` cannot be read.
    #[error("config file {path}: cannot read: {source}")]
    FileUnreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A layer does not parse (unknown key, wrong type); figment's message names the key.
    #[error("configuration: {0}")]
    Layer(String),
    /// A key's value is unusable.
    #[error("{key}: {message}")]
    Invalid {
        /// Dotted key, e.g. `export.window`.
        key: &'static str,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// A `*_file` secret cannot be read.
    #[error("{key}: cannot read {path}: {source}")]
    SecretFile {
        /// The `*_file` key.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

pub(crate) fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// Keys whose values are secrets (never echoed, even in errors).
const SECRET_KEYS: &[&str] = &["auth.client_secret", "auth.certificate_password"];

/// `export.output` without what a URL may carry of credentials (user info, query): safe to
/// record and print.
pub fn without_credentials(output: &str) -> String {
    match url::Url::parse(output) {
        Ok(mut u) if u.has_host() || u.scheme() != "file" => {
            let _ = u.set_password(None);
            let _ = u.set_username("");
            u.set_query(None);
            u.to_string()
        }
        _ => output.to_string(),
    }
}

/// `log.format` as the layers give it, read alone: when the configuration as a whole is
/// refused, its error is still reported in the format the operator asked for. `None` when the
/// layers cannot be read at all (e.g. the file is not TOML).
pub fn log_format_hint(file: Option<&Path>, overrides: &[(&str, String)]) -> Option<String> {
    // Each layer alone, the strongest first: one that cannot be read does not hide the others.
    if let Some((_, v)) = overrides.iter().find(|(k, _)| *k == "log.format") {
        return Some(v.clone());
    }
    if let Ok(v) = std::env::var(format!("{ENV_PREFIX}LOG__FORMAT")) {
        return Some(v);
    }
    let mut fig = Figment::new();
    if let Some(path) = file {
        fig = fig.merge(Toml::file_exact(path));
    }
    fig = fig.merge(Env::prefixed(ENV_PREFIX).split("__").ignore(&["config"]));
    for (k, v) in overrides {
        fig = fig.merge((*k, v.clone()));
    }
    fig.extract_inner::<String>("log.format").ok()
}

/// Loads the layers. `overrides` are `(dotted.key, value)` pairs from command-line flags.
pub fn load(file: Option<&Path>, overrides: &[(&str, String)]) -> Result<RawConfig, ConfigError> {
    let mut fig = Figment::new();
    if let Some(path) = file {
        // figment silently skips a missing file; a user who names one wants to hear about it.
        std::fs::metadata(path).map_err(|source| ConfigError::FileUnreadable {
            path: path.to_path_buf(),
            source,
        })?;
        fig = fig.merge(Toml::file_exact(path));
    }
    fig = fig.merge(Env::prefixed(ENV_PREFIX).split("__").ignore(&["config"]));
    for (k, v) in overrides {
        fig = fig.merge((*k, v.clone()));
    }
    fig.extract::<RawConfig>().map_err(|e| {
        // Report the first error on one line; figment names the key and the source. A type
        // error quotes the value it found: never for a secret key.
        let Some(first) = e.into_iter().next() else {
            return ConfigError::Layer("invalid configuration".into());
        };
        let key = first
            .path
            .iter()
            .filter(|p| p.as_str() != "default")
            .cloned()
            .collect::<Vec<_>>()
            .join(".");
        if SECRET_KEYS.contains(&key.as_str()) {
            return ConfigError::Invalid {
                key: if key.ends_with("client_secret") {
                    "auth.client_secret"
                } else {
                    "auth.certificate_password"
                },
                message: "must be a string".into(),
            };
        }
        ConfigError::Layer(first.to_string().replace('\n', " ").replace("key \"default.", "key \""))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_of_the_wrong_type_is_not_echoed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[auth]\nclient_id = \"x\"\nclient_secret = 98765431\n").unwrap();
        let e = load(Some(&p), &[]).unwrap_err().to_string();
        assert!(e.starts_with("auth.client_secret") && !e.contains("98765431"), "{e}");
    }
}
