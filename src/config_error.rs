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
