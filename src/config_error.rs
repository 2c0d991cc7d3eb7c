//! The error every configuration check returns: it names the offending key. Each module
//! validates its own config type with it; `config.rs` only composes them.

/// A configuration error; the message names the key.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl ConfigError {
    /// An error about `key`.
    pub fn key(key: &str, problem: impl std::fmt::Display) -> Self {
        Self(format!("`{key}`: {problem}"))
    }
}

/// Each value of `checks` must be greater than 0; an error names the first key below `at` that is not.
pub fn positive(at: &str, checks: &[(&str, u64)]) -> Result<(), ConfigError> {
    match checks.iter().find(|(_, value)| *value == 0) {
        Some((key, _)) => Err(ConfigError::key(
            &format!("{at}.{key}"),
            "must be greater than 0",
        )),
        None => Ok(()),
    }
}

/// Section `section` of a module's built-in `defaults` (TOML), for its `Default` impl.
pub fn builtin<T: serde::de::DeserializeOwned>(defaults: &str, section: &str) -> T {
    use figment::providers::{Format, Toml};
    figment::Figment::from(Toml::string(defaults))
        .extract_inner(section)
        .unwrap_or_else(|e| panic!("the built-in [{section}] defaults are invalid: {e}"))
}
