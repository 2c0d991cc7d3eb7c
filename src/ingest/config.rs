//! How each webhook source proves who sent a request (`[sources.allportal]`,
//! `[sources.opentext]`).

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::config_error::ConfigError;
use crate::redact;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourcesConfig {
    pub allportal: SourceConfig,
    pub opentext: SourceConfig,
}

/// How a webhook source proves who sent a request.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SchemeKind {
    /// `webhook-id` / `webhook-timestamp` / `webhook-signature: v1,<base64>` (standardwebhooks.com).
    StandardWebhooks,
    /// HMAC-SHA256 in a configurable header, optionally over `"<timestamp>.<body>"`.
    HmacSha256,
    /// A shared secret sent verbatim in a header. Weaker: no integrity, no replay window.
    Token,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SignedContent {
    /// The raw body only.
    Body,
    /// `"<timestamp>.<body>"`; needs `timestamp_header`.
    TimestampDotBody,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SignatureEncoding {
    Hex,
    Base64,
}

/// Verification settings of one webhook source (`[sources.allportal]`, `[sources.opentext]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub scheme: SchemeKind,
    /// Every secret currently accepted; several during a rotation. `standard-webhooks` secrets are
    /// `whsec_<base64>`; the other schemes use the secret's UTF-8 bytes.
    #[serde(serialize_with = "redact::secrets")]
    pub secrets: Vec<SecretString>,
    /// Largest accepted clock difference, past and future, in seconds.
    pub tolerance_secs: u64,
    /// `hmac-sha256`: signature header; `token`: token header. Defaults per scheme.
    #[serde(default)]
    pub header: Option<String>,
    /// `hmac-sha256`: header carrying the unix timestamp (enables the tolerance check).
    #[serde(default)]
    pub timestamp_header: Option<String>,
    /// `hmac-sha256`: what is signed.
    pub signed_content: SignedContent,
    /// `hmac-sha256`: how the signature is written.
    pub encoding: SignatureEncoding,
    /// `hmac-sha256`: prefix before the signature, e.g. `sha256=`.
    pub prefix: String,
    /// `hmac-sha256` / `token`: optional header carrying the sender's delivery id (event identity).
    #[serde(default)]
    pub id_header: Option<String>,
}

/// The built-in `[sources.*]` sections.
pub const DEFAULTS: &str = r#"
[sources.allportal]
scheme = "standard-webhooks"
secrets = []
tolerance_secs = 300
signed_content = "body"
encoding = "hex"
prefix = ""

[sources.opentext]
scheme = "standard-webhooks"
secrets = []
tolerance_secs = 300
signed_content = "body"
encoding = "hex"
prefix = ""
"#;

impl SourcesConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.allportal.validate("sources.allportal")?;
        self.opentext.validate("sources.opentext")
    }
}

impl SourceConfig {
    /// The header that carries the signature (`hmac-sha256`) or the token (`token`).
    pub fn header_name(&self) -> &str {
        match (&self.header, self.scheme) {
            (Some(h), _) => h,
            (None, SchemeKind::StandardWebhooks) => "webhook-signature",
            (None, SchemeKind::HmacSha256) => "x-signature",
            (None, SchemeKind::Token) => "x-webhook-token",
        }
    }

    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        if self.secrets.is_empty() {
            return Err(ConfigError::key(
                &format!("{at}.secrets"),
                "at least one secret is required (several during a rotation)",
            ));
        }
        for (i, secret) in self.secrets.iter().enumerate() {
            let secret = secret.expose_secret();
            let key = format!("{at}.secrets[{i}]");
            if secret.is_empty() {
                return Err(ConfigError::key(&key, "must not be empty"));
            }
            if self.scheme == SchemeKind::StandardWebhooks {
                decode_whsec(secret).map_err(|problem| ConfigError::key(&key, problem))?;
            } else if secret.len() < 16 {
                return Err(ConfigError::key(&key, "must be at least 16 characters"));
            }
        }
        if self.tolerance_secs == 0 {
            return Err(ConfigError::key(
                &format!("{at}.tolerance_secs"),
                "must be greater than 0",
            ));
        }
        for (key, value) in [
            ("header", &self.header),
            ("timestamp_header", &self.timestamp_header),
            ("id_header", &self.id_header),
        ] {
            if let Some(name) = value
                && http::HeaderName::try_from(name.as_str()).is_err()
            {
                return Err(ConfigError::key(
                    &format!("{at}.{key}"),
                    format!("`{name}` is not a valid HTTP header name"),
                ));
            }
        }
        if self.scheme == SchemeKind::HmacSha256
            && self.signed_content == SignedContent::TimestampDotBody
            && self.timestamp_header.is_none()
        {
            return Err(ConfigError::key(
                &format!("{at}.timestamp_header"),
                "`signed_content = \"timestamp-dot-body\"` needs a timestamp header",
            ));
        }
        Ok(())
    }
}

/// Decodes a Standard Webhooks secret `whsec_<base64>` (the prefix is optional, as in the
/// reference libraries) into the HMAC key bytes.
pub fn decode_whsec(secret: &str) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
    let key = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| "must be `whsec_` followed by base64".to_string())?;
    if key.len() < 16 {
        return Err("the decoded key must be at least 16 bytes".into());
    }
    Ok(key)
}
