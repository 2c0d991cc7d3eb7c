//! Signature verification of inbound webhooks, on the raw bytes and before any parsing.
//!
//! One [`Verifier`] is built per source at start-up (keys are decoded once). It implements the
//! three schemes of docs/design.md §4: `standard-webhooks`, `hmac-sha256` and `token`. Every secret of the
//! source is tried, so a sender can rotate keys without downtime. All comparisons are constant-time,
//! and no error message ever carries a secret or an expected signature.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName};
use secrecy::{ExposeSecret, SecretSlice};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::config::{SchemeKind, SignatureEncoding, SignedContent, SourceConfig, decode_whsec};

const WEBHOOK_ID: &str = "webhook-id";
const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
const WEBHOOK_SIGNATURE: &str = "webhook-signature";

/// Signature entries looked at in one request. A legitimate sender has one per active key (two
/// during a rotation); the cap bounds the work an unauthenticated request can cause.
const MAX_SIGNATURE_ENTRIES: usize = 16;

/// Why a request was rejected. `Display` names the header involved, never a secret or signature.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("missing signature header `{0}`")]
    MissingSignature(String),
    #[error("malformed signature header `{header}`: {problem}")]
    MalformedSignature {
        header: String,
        problem: &'static str,
    },
    #[error("no signature in `{0}` matches any configured secret")]
    BadSignature(String),
    #[error("missing timestamp header `{0}`")]
    MissingTimestamp(String),
    #[error("malformed timestamp header `{0}`: expected integer unix seconds")]
    MalformedTimestamp(String),
    #[error("timestamp is {age_secs} s old, more than the tolerance of {tolerance_secs} s")]
    StaleTimestamp { age_secs: i128, tolerance_secs: u64 },
    #[error(
        "timestamp is {ahead_secs} s in the future, more than the tolerance of {tolerance_secs} s"
    )]
    FutureTimestamp {
        ahead_secs: i128,
        tolerance_secs: u64,
    },
    #[error("missing delivery id header `{0}`")]
    MissingId(String),
    #[error("malformed delivery id header `{0}`: expected visible ASCII")]
    MalformedId(String),
    #[error("missing token header `{0}`")]
    MissingToken(String),
    #[error("the token in `{0}` matches no configured secret")]
    BadToken(String),
}

impl VerifyError {
    /// Stable snake_case label for metrics and the problem type.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingSignature(_) => "missing_signature",
            Self::MalformedSignature { .. } => "malformed_signature",
            Self::BadSignature(_) => "bad_signature",
            Self::MissingTimestamp(_) => "missing_timestamp",
            Self::MalformedTimestamp(_) => "malformed_timestamp",
            Self::StaleTimestamp { .. } => "stale_timestamp",
            Self::FutureTimestamp { .. } => "future_timestamp",
            Self::MissingId(_) => "missing_id",
            Self::MalformedId(_) => "malformed_id",
            Self::MissingToken(_) => "missing_token",
            Self::BadToken(_) => "bad_token",
        }
    }
}

/// A request whose signature checked out. Only [`Verifier::verify`] constructs one, so holding a
/// `Verified` proves the body was authenticated.
#[derive(Clone)]
pub struct Verified {
    body: Bytes,
    delivery_id: Option<String>,
    timestamp: Option<i64>,
    /// What the signature covers besides the body; only covered material may decide an event's
    /// identity (a header outside the signature can be changed by whoever replays a request).
    covered: Covered,
}

/// Which header values the signature covers.
#[derive(Debug, Clone, Copy, Default)]
struct Covered {
    delivery_id: bool,
    timestamp: bool,
}

impl Verified {
    /// A body no signature covers, for `xecm-bridge plan --event FILE` only: a plan stores
    /// nothing and writes nothing, so there is nothing for a signature to protect. Never use it
    /// on the ingest path.
    pub fn for_local_plan(body: Bytes) -> Verified {
        Verified {
            body,
            delivery_id: None,
            timestamp: None,
            covered: Covered::default(),
        }
    }

    /// The raw body exactly as received and signed.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// `webhook-id` (standard-webhooks) or the value of the configured `id_header`, signed or
    /// not; for the record only. Identity uses [`Verified::signed_delivery_id`].
    pub fn delivery_id(&self) -> Option<&str> {
        self.delivery_id.as_deref()
    }

    /// The sender's unix timestamp, when the scheme carries one.
    pub fn timestamp(&self) -> Option<i64> {
        self.timestamp
    }

    /// The delivery id, only when the signature covers it (standard-webhooks `webhook-id`).
    pub fn signed_delivery_id(&self) -> Option<&str> {
        self.delivery_id
            .as_deref()
            .filter(|_| self.covered.delivery_id)
    }

    /// The timestamp as sent, only when the signature covers it (standard-webhooks, and
    /// `hmac-sha256` with `signed_content = "timestamp-dot-body"`).
    pub fn signed_timestamp(&self) -> Option<i64> {
        self.timestamp.filter(|_| self.covered.timestamp)
    }
}

impl std::fmt::Debug for Verified {
    // Bodies can be large; the length is what a log line needs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verified")
            .field("body_len", &self.body.len())
            .field("delivery_id", &self.delivery_id)
            .field("timestamp", &self.timestamp)
            .field("covered", &self.covered)
            .finish()
    }
}

/// Verifies requests of one source. `Debug` shows the scheme and header names, never keys.
pub struct Verifier {
    scheme: Scheme,
    /// Decoded keys (HMAC keys, or the tokens themselves), in configuration order.
    keys: Vec<SecretSlice<u8>>,
    tolerance_secs: u64,
    id_header: Option<HeaderName>,
}

#[derive(Debug)]
enum Scheme {
    StandardWebhooks,
    HmacSha256 {
        header: HeaderName,
        prefix: String,
        encoding: SignatureEncoding,
        signed_content: SignedContent,
        timestamp_header: Option<HeaderName>,
    },
    Token {
        header: HeaderName,
    },
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("scheme", &self.scheme)
            .field("keys", &format_args!("<{} redacted>", self.keys.len()))
            .field("tolerance_secs", &self.tolerance_secs)
            .field("id_header", &self.id_header)
            .finish()
    }
}

impl Verifier {
    /// Builds a verifier, decoding every key once. The error names the problem, not the secret.
    pub fn new(cfg: &SourceConfig) -> Result<Verifier, String> {
        if cfg.secrets.is_empty() {
            return Err("at least one secret is required".into());
        }
        let keys = cfg
            .secrets
            .iter()
            .enumerate()
            .map(|(i, secret)| decode_key(cfg.scheme, secret.expose_secret(), i))
            .collect::<Result<Vec<_>, _>>()?;
        let scheme = match cfg.scheme {
            SchemeKind::StandardWebhooks => Scheme::StandardWebhooks,
            SchemeKind::HmacSha256 => {
                let timestamp_header = cfg
                    .timestamp_header
                    .as_deref()
                    .map(|h| header_name(h, "timestamp_header"))
                    .transpose()?;
                if cfg.signed_content == SignedContent::TimestampDotBody
                    && timestamp_header.is_none()
                {
                    return Err(
                        "signed content `timestamp-dot-body` needs `timestamp_header`".into(),
                    );
                }
                Scheme::HmacSha256 {
                    header: header_name(cfg.header_name(), "header")?,
                    prefix: cfg.prefix.clone(),
                    encoding: cfg.encoding,
                    signed_content: cfg.signed_content,
                    timestamp_header,
                }
            }
            SchemeKind::Token => Scheme::Token {
                header: header_name(cfg.header_name(), "header")?,
            },
        };
        let id_header = cfg
            .id_header
            .as_deref()
            .map(|h| header_name(h, "id_header"))
            .transpose()?;
        Ok(Verifier {
            scheme,
            keys,
            tolerance_secs: cfg.tolerance_secs,
            id_header,
        })
    }

    /// Verifies a request over its raw bytes. `now` is unix seconds (injected so tests control it).
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: Bytes,
        now: i64,
    ) -> Result<Verified, VerifyError> {
        match &self.scheme {
            Scheme::StandardWebhooks => self.verify_standard(headers, body, now),
            Scheme::HmacSha256 {
                header,
                prefix,
                encoding,
                signed_content,
                timestamp_header,
            } => {
                let timestamp = match timestamp_header {
                    Some(name) => Some(self.checked_timestamp(headers, name, now)?),
                    None => None,
                };
                let candidates = hmac_candidates(headers, header, prefix, *encoding)?;
                let signed_prefix = match (signed_content, &timestamp) {
                    (SignedContent::TimestampDotBody, Some((_, raw))) => format!("{raw}."),
                    _ => String::new(),
                };
                if !self.any_key_matches(signed_prefix.as_bytes(), &body, &candidates) {
                    return Err(VerifyError::BadSignature(header.to_string()));
                }
                Ok(Verified {
                    delivery_id: self.optional_id(headers)?,
                    timestamp: timestamp.map(|(t, _)| t),
                    covered: Covered {
                        delivery_id: false,
                        timestamp: *signed_content == SignedContent::TimestampDotBody,
                    },
                    body,
                })
            }
            Scheme::Token { header } => {
                self.check_token(headers, header)?;
                Ok(Verified {
                    delivery_id: self.optional_id(headers)?,
                    timestamp: None,
                    covered: Covered::default(),
                    body,
                })
            }
        }
    }

    fn verify_standard(
        &self,
        headers: &HeaderMap,
        body: Bytes,
        now: i64,
    ) -> Result<Verified, VerifyError> {
        let id = match header_str(headers, WEBHOOK_ID) {
            HeaderText::Missing => return Err(VerifyError::MissingId(WEBHOOK_ID.into())),
            HeaderText::Invalid => return Err(VerifyError::MalformedId(WEBHOOK_ID.into())),
            HeaderText::Present(id) => id,
        };
        let ts_name = HeaderName::from_static(WEBHOOK_TIMESTAMP);
        // Timestamp before signature, like the reference libraries: a replay is refused without
        // spending an HMAC on it.
        let (timestamp, raw_ts) = self.checked_timestamp(headers, &ts_name, now)?;
        let candidates = standard_candidates(headers)?;
        let signed_prefix = format!("{id}.{raw_ts}.");
        if !self.any_key_matches(signed_prefix.as_bytes(), &body, &candidates) {
            return Err(VerifyError::BadSignature(WEBHOOK_SIGNATURE.into()));
        }
        Ok(Verified {
            delivery_id: Some(id.to_string()),
            timestamp: Some(timestamp),
            covered: Covered {
                delivery_id: true,
                timestamp: true,
            },
            body,
        })
    }

    /// Parses the timestamp header and applies the tolerance both ways. Returns the value and
    /// its text as sent (the text is what the sender signed).
    fn checked_timestamp<'h>(
        &self,
        headers: &'h HeaderMap,
        name: &HeaderName,
        now: i64,
    ) -> Result<(i64, &'h str), VerifyError> {
        let raw = match header_str(headers, name.as_str()) {
            HeaderText::Missing => return Err(VerifyError::MissingTimestamp(name.to_string())),
            HeaderText::Invalid => return Err(VerifyError::MalformedTimestamp(name.to_string())),
            HeaderText::Present(raw) => raw,
        };
        let timestamp = parse_unix_seconds(raw)
            .ok_or_else(|| VerifyError::MalformedTimestamp(name.to_string()))?;
        // i128 so that no pair of i64 values can overflow the difference.
        let age = i128::from(now) - i128::from(timestamp);
        let tolerance = i128::from(self.tolerance_secs);
        if age > tolerance {
            return Err(VerifyError::StaleTimestamp {
                age_secs: age,
                tolerance_secs: self.tolerance_secs,
            });
        }
        if -age > tolerance {
            return Err(VerifyError::FutureTimestamp {
                ahead_secs: -age,
                tolerance_secs: self.tolerance_secs,
            });
        }
        Ok((timestamp, raw))
    }

    /// True when HMAC-SHA256(key, prefix ‖ body) equals one candidate, for any key.
    fn any_key_matches(&self, prefix: &[u8], body: &[u8], candidates: &[Vec<u8>]) -> bool {
        let mut matched = subtle::Choice::from(0);
        for key in &self.keys {
            let expected = hmac_sha256(key.expose_secret(), prefix, body);
            for candidate in candidates {
                matched |= expected.as_slice().ct_eq(candidate);
            }
        }
        matched.into()
    }

    fn check_token(&self, headers: &HeaderMap, header: &HeaderName) -> Result<(), VerifyError> {
        // Compare digests, not the raw values, so the comparison does not depend on the length
        // of the configured token.
        let sent = match headers.get(header) {
            None => return Err(VerifyError::MissingToken(header.to_string())),
            Some(value) if value.is_empty() => {
                return Err(VerifyError::MissingToken(header.to_string()));
            }
            // In `Authorization` the token is a bearer credential; elsewhere the whole value.
            Some(value) if *header == http::header::AUTHORIZATION => {
                let token = value
                    .to_str()
                    .ok()
                    .and_then(bearer_credentials)
                    .ok_or_else(|| VerifyError::BadToken(header.to_string()))?;
                Sha256::digest(token.as_bytes())
            }
            Some(value) => Sha256::digest(value.as_bytes()),
        };
        let mut matched = subtle::Choice::from(0);
        for key in &self.keys {
            matched |= Sha256::digest(key.expose_secret()).ct_eq(&sent);
        }
        if bool::from(matched) {
            Ok(())
        } else {
            Err(VerifyError::BadToken(header.to_string()))
        }
    }

    fn optional_id(&self, headers: &HeaderMap) -> Result<Option<String>, VerifyError> {
        let Some(name) = &self.id_header else {
            return Ok(None);
        };
        match header_str(headers, name.as_str()) {
            HeaderText::Missing => Ok(None),
            HeaderText::Invalid => Err(VerifyError::MalformedId(name.to_string())),
            HeaderText::Present(id) => Ok(Some(id.to_string())),
        }
    }
}

/// The credentials of an `Authorization: Bearer <token>` value. The scheme name is matched
/// case-insensitively (RFC 9110 §11.1); the admin API and the `token` scheme both use this.
pub fn bearer_credentials(value: &str) -> Option<&str> {
    let (scheme, credentials) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credentials.trim())
        .filter(|c| !c.is_empty())
}

fn decode_key(scheme: SchemeKind, secret: &str, index: usize) -> Result<SecretSlice<u8>, String> {
    if secret.is_empty() {
        return Err(format!("secret #{index} is empty"));
    }
    let bytes = match scheme {
        SchemeKind::StandardWebhooks => {
            decode_whsec(secret).map_err(|problem| format!("secret #{index}: {problem}"))?
        }
        SchemeKind::HmacSha256 | SchemeKind::Token => secret.as_bytes().to_vec(),
    };
    Ok(SecretSlice::from(bytes))
}

fn header_name(name: &str, key: &str) -> Result<HeaderName, String> {
    HeaderName::try_from(name).map_err(|_| format!("`{key}`: `{name}` is not a valid header name"))
}

enum HeaderText<'h> {
    Missing,
    Invalid,
    Present(&'h str),
}

/// The first value of a header as trimmed visible ASCII; empty counts as missing.
fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> HeaderText<'h> {
    match headers.get(name).map(|v| v.to_str()) {
        None => HeaderText::Missing,
        Some(Err(_)) => HeaderText::Invalid,
        Some(Ok(text)) if text.trim().is_empty() => HeaderText::Missing,
        Some(Ok(text)) => HeaderText::Present(text.trim()),
    }
}

/// Integer unix seconds: ASCII digits with an optional leading `-`, nothing else.
fn parse_unix_seconds(raw: &str) -> Option<i64> {
    let digits = raw.strip_prefix('-').unwrap_or(raw);
    if digits.is_empty() || digits.len() > 19 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse().ok()
}

/// The `v1` signatures of a `webhook-signature` header; other versions (`v1a`, …) are ignored.
fn standard_candidates(headers: &HeaderMap) -> Result<Vec<Vec<u8>>, VerifyError> {
    let malformed = |problem| VerifyError::MalformedSignature {
        header: WEBHOOK_SIGNATURE.into(),
        problem,
    };
    let text = match header_str(headers, WEBHOOK_SIGNATURE) {
        HeaderText::Missing => return Err(VerifyError::MissingSignature(WEBHOOK_SIGNATURE.into())),
        HeaderText::Invalid => return Err(malformed("not visible ASCII")),
        HeaderText::Present(text) => text,
    };
    let candidates: Vec<Vec<u8>> = text
        .split_ascii_whitespace()
        .take(MAX_SIGNATURE_ENTRIES)
        .filter_map(|entry| entry.split_once(','))
        .filter(|(version, _)| *version == "v1")
        .filter_map(|(_, sig)| BASE64.decode(sig).ok())
        .collect();
    if candidates.is_empty() {
        return Err(malformed("no `v1,<base64>` entry"));
    }
    Ok(candidates)
}

/// The signatures of an `hmac-sha256` header. Several may be sent (rotation), separated by
/// spaces or commas; each carries the configured prefix.
fn hmac_candidates(
    headers: &HeaderMap,
    header: &HeaderName,
    prefix: &str,
    encoding: SignatureEncoding,
) -> Result<Vec<Vec<u8>>, VerifyError> {
    let malformed = |problem| VerifyError::MalformedSignature {
        header: header.to_string(),
        problem,
    };
    let text = match header_str(headers, header.as_str()) {
        HeaderText::Missing => return Err(VerifyError::MissingSignature(header.to_string())),
        HeaderText::Invalid => return Err(malformed("not visible ASCII")),
        HeaderText::Present(text) => text,
    };
    let candidates: Vec<Vec<u8>> = text
        .split(|c: char| c == ',' || c.is_ascii_whitespace())
        .filter(|entry| !entry.is_empty())
        .take(MAX_SIGNATURE_ENTRIES)
        .filter_map(|entry| entry.strip_prefix(prefix))
        .filter_map(|sig| match encoding {
            SignatureEncoding::Hex => hex::decode(sig).ok(),
            SignatureEncoding::Base64 => BASE64.decode(sig).ok(),
        })
        .collect();
    if candidates.is_empty() {
        return Err(malformed(match encoding {
            SignatureEncoding::Hex => "no hex signature with the configured prefix",
            SignatureEncoding::Base64 => "no base64 signature with the configured prefix",
        }));
    }
    Ok(candidates)
}

fn hmac_sha256(key: &[u8], prefix: &[u8], body: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length; the error branch cannot occur.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return [0; 32];
    };
    mac.update(prefix);
    mac.update(body);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers that sign like a sender would, for tests of this module and of `payload`.

    use super::*;
    use crate::ingest::config::SourceConfig;
    use secrecy::SecretString;

    pub const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    pub fn source(scheme: SchemeKind, secrets: &[&str]) -> SourceConfig {
        SourceConfig {
            scheme,
            secrets: secrets
                .iter()
                .map(|s| SecretString::from(s.to_string()))
                .collect(),
            tolerance_secs: 300,
            header: None,
            timestamp_header: None,
            signed_content: SignedContent::Body,
            encoding: SignatureEncoding::Hex,
            prefix: String::new(),
            id_header: None,
        }
    }

    /// `v1,<base64>` for one Standard Webhooks secret.
    pub fn sign_standard(whsec: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
        let key = decode_whsec(whsec).expect("test secret decodes");
        let mac = hmac_sha256(&key, format!("{id}.{timestamp}.").as_bytes(), body);
        format!("v1,{}", BASE64.encode(mac))
    }

    pub fn standard_headers(id: &str, timestamp: i64, signature: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(WEBHOOK_ID, id.parse().expect("id header"));
        headers.insert(
            WEBHOOK_TIMESTAMP,
            timestamp.to_string().parse().expect("ts"),
        );
        headers.insert(WEBHOOK_SIGNATURE, signature.parse().expect("signature"));
        headers
    }

    pub const HMAC_KEY: &str = "an-hmac-secret-of-some-length";

    /// A `Verified` for `body` from a real `hmac-sha256` verification (hex, `x-signature`), with
    /// an unsigned `x-delivery` id header and, with `timestamp`, `timestamp-dot-body` signing.
    pub fn verified_hmac(
        delivery_id: Option<&str>,
        timestamp: Option<i64>,
        body: &[u8],
    ) -> Verified {
        let now = 1_700_000_000;
        let mut cfg = source(SchemeKind::HmacSha256, &[HMAC_KEY]);
        cfg.id_header = Some("x-delivery".into());
        let mut headers = HeaderMap::new();
        let mut prefix = String::new();
        if let Some(ts) = timestamp {
            cfg.signed_content = SignedContent::TimestampDotBody;
            cfg.timestamp_header = Some("x-timestamp".into());
            headers.insert("x-timestamp", ts.to_string().parse().expect("ts"));
            prefix = format!("{ts}.");
        }
        let mac = hmac_sha256(HMAC_KEY.as_bytes(), prefix.as_bytes(), body);
        headers.insert("x-signature", hex::encode(mac).parse().expect("hex"));
        if let Some(id) = delivery_id {
            headers.insert("x-delivery", id.parse().expect("id"));
        }
        Verifier::new(&cfg)
            .expect("verifier")
            .verify(&headers, Bytes::copy_from_slice(body), now)
            .expect("test request verifies")
    }

    /// A `Verified` for `body`, obtained through a real standard-webhooks verification.
    pub fn verified(delivery_id: Option<&str>, body: &[u8]) -> Verified {
        let now = 1_700_000_000;
        let (verifier, headers) = match delivery_id {
            Some(id) => {
                let verifier = Verifier::new(&source(SchemeKind::StandardWebhooks, &[WHSEC]))
                    .expect("verifier");
                let sig = sign_standard(WHSEC, id, now, body);
                (verifier, standard_headers(id, now, &sig))
            }
            None => {
                let secret = "a-token-of-sufficient-length";
                let verifier =
                    Verifier::new(&source(SchemeKind::Token, &[secret])).expect("verifier");
                let mut headers = HeaderMap::new();
                headers.insert("x-webhook-token", secret.parse().expect("token"));
                (verifier, headers)
            }
        };
        verifier
            .verify(&headers, Bytes::copy_from_slice(body), now)
            .expect("test request verifies")
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use proptest::prelude::*;

    const NOW: i64 = 1_614_265_330;
    const OLD_WHSEC: &str = "whsec_dGhlLW9sZC1rZXktb2YtdGhlLXJvdGF0aW9uIQ==";
    const HMAC_SECRET: &str = "hmac-secret-long-enough-1";
    const HMAC_SECRET_OLD: &str = "hmac-secret-long-enough-0";
    const TOKEN: &str = "token-secret-long-enough";

    fn standard(secrets: &[&str]) -> Verifier {
        Verifier::new(&source(SchemeKind::StandardWebhooks, secrets)).expect("verifier")
    }

    fn hmac_cfg(encoding: SignatureEncoding, prefix: &str, with_timestamp: bool) -> SourceConfig {
        let mut cfg = source(SchemeKind::HmacSha256, &[HMAC_SECRET]);
        cfg.encoding = encoding;
        cfg.prefix = prefix.into();
        cfg.header = Some("x-hub-signature-256".into());
        cfg.id_header = Some("x-delivery".into());
        if with_timestamp {
            cfg.timestamp_header = Some("x-timestamp".into());
            cfg.signed_content = SignedContent::TimestampDotBody;
        }
        cfg
    }

    fn hmac_sig(secret: &str, content: &[u8], encoding: SignatureEncoding) -> String {
        let mac = hmac_sha256(secret.as_bytes(), b"", content);
        match encoding {
            SignatureEncoding::Hex => hex::encode(mac),
            SignatureEncoding::Base64 => BASE64.encode(mac),
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::try_from(*name).expect("name"),
                value.parse().expect("value"),
            );
        }
        map
    }

    fn body() -> Bytes {
        Bytes::from_static(br#"{"test": 2432232314}"#)
    }

    // --- standard-webhooks -------------------------------------------------------------

    #[test]
    fn the_published_standard_webhooks_vector_verifies() {
        let h = standard_headers(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        );
        let v = standard(&[WHSEC])
            .verify(&h, body(), NOW)
            .expect("verifies");
        assert_eq!(v.delivery_id(), Some("msg_p5jXN8AQM9LWM0D4loKWxJek"));
        assert_eq!(v.timestamp(), Some(1_614_265_330));
        assert_eq!(v.body(), &body());
    }

    #[test]
    fn our_signer_reproduces_the_published_vector() {
        assert_eq!(
            sign_standard(
                WHSEC,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                &body()
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn standard_wrong_secret_is_a_bad_signature() {
        let sig = sign_standard(OLD_WHSEC, "msg_1", NOW, &body());
        let err = standard(&[WHSEC])
            .verify(&standard_headers("msg_1", NOW, &sig), body(), NOW)
            .unwrap_err();
        assert_eq!(err.reason(), "bad_signature");
    }

    #[test]
    fn standard_rotation_accepts_old_and_new_secrets() {
        let verifier = standard(&[WHSEC, OLD_WHSEC]);
        for secret in [WHSEC, OLD_WHSEC] {
            let sig = sign_standard(secret, "msg_1", NOW, &body());
            verifier
                .verify(&standard_headers("msg_1", NOW, &sig), body(), NOW)
                .expect("either secret verifies");
        }
    }

    #[test]
    fn standard_accepts_any_of_several_signatures_and_ignores_other_versions() {
        let good = sign_standard(WHSEC, "msg_1", NOW, &body());
        let other = sign_standard(OLD_WHSEC, "msg_1", NOW, &body());
        let value = format!("v1a,aGVsbG8= {other} v2,{} {good}", &good[3..]);
        standard(&[WHSEC])
            .verify(&standard_headers("msg_1", NOW, &value), body(), NOW)
            .expect("the matching entry wins");
        // The same signature under a version other than v1 must not be accepted.
        let only_other_versions = format!("v1a,{} v2,{}", &good[3..], &good[3..]);
        let err = standard(&[WHSEC])
            .verify(
                &standard_headers("msg_1", NOW, &only_other_versions),
                body(),
                NOW,
            )
            .unwrap_err();
        assert_eq!(err.reason(), "malformed_signature");
    }

    #[test]
    fn standard_missing_headers_are_named() {
        let sig = sign_standard(WHSEC, "msg_1", NOW, &body());
        let full = standard_headers("msg_1", NOW, &sig);
        for (removed, reason) in [
            (WEBHOOK_ID, "missing_id"),
            (WEBHOOK_TIMESTAMP, "missing_timestamp"),
            (WEBHOOK_SIGNATURE, "missing_signature"),
        ] {
            let mut h = full.clone();
            h.remove(removed);
            let err = standard(&[WHSEC]).verify(&h, body(), NOW).unwrap_err();
            assert_eq!(err.reason(), reason, "without {removed}");
        }
    }

    #[test]
    fn standard_malformed_headers_are_rejected() {
        let sig = sign_standard(WHSEC, "msg_1", NOW, &body());
        let cases: [(&str, &str, &str); 6] = [
            (WEBHOOK_TIMESTAMP, "1614265330.5", "malformed_timestamp"),
            (WEBHOOK_TIMESTAMP, "soon", "malformed_timestamp"),
            (
                WEBHOOK_TIMESTAMP,
                "99999999999999999999999",
                "malformed_timestamp",
            ),
            (WEBHOOK_SIGNATURE, "g0hM9SsE", "malformed_signature"),
            (
                WEBHOOK_SIGNATURE,
                "v1,***not-base64***",
                "malformed_signature",
            ),
            (WEBHOOK_SIGNATURE, "v1,aGVsbG8=", "bad_signature"),
        ];
        for (name, value, reason) in cases {
            let mut h = standard_headers("msg_1", NOW, &sig);
            h.insert(name, value.parse().expect("value"));
            let err = standard(&[WHSEC]).verify(&h, body(), NOW).unwrap_err();
            assert_eq!(err.reason(), reason, "{name}: {value}");
        }
        let mut h = standard_headers("msg_1", NOW, &sig);
        h.insert(
            WEBHOOK_ID,
            http::HeaderValue::from_bytes(b"m\xffsg").expect("opaque"),
        );
        let err = standard(&[WHSEC]).verify(&h, body(), NOW).unwrap_err();
        assert_eq!(err.reason(), "malformed_id");
    }

    #[test]
    fn standard_stale_and_future_timestamps_are_refused_at_the_tolerance_edge() {
        let verifier = standard(&[WHSEC]);
        for (ts, outcome) in [
            (NOW - 300, None),
            (NOW + 300, None),
            (NOW - 301, Some("stale_timestamp")),
            (NOW + 301, Some("future_timestamp")),
        ] {
            let sig = sign_standard(WHSEC, "msg_1", ts, &body());
            let result = verifier.verify(&standard_headers("msg_1", ts, &sig), body(), NOW);
            assert_eq!(result.err().map(|e| e.reason()), outcome, "timestamp {ts}");
        }
    }

    #[test]
    fn extreme_timestamps_do_not_overflow() {
        let verifier = standard(&[WHSEC]);
        for (ts, now) in [(i64::MIN, i64::MAX), (i64::MAX, i64::MIN)] {
            let sig = sign_standard(WHSEC, "msg_1", ts, &body());
            let err = verifier
                .verify(&standard_headers("msg_1", ts, &sig), body(), now)
                .unwrap_err();
            assert!(matches!(
                err.reason(),
                "stale_timestamp" | "future_timestamp"
            ));
        }
    }

    #[test]
    fn a_signature_for_another_id_does_not_verify() {
        let sig = sign_standard(WHSEC, "msg_1", NOW, &body());
        let err = standard(&[WHSEC])
            .verify(&standard_headers("msg_2", NOW, &sig), body(), NOW)
            .unwrap_err();
        assert_eq!(err.reason(), "bad_signature");
    }

    // --- hmac-sha256 ---------------------------------------------------------------------

    #[test]
    fn hmac_hex_with_prefix_verifies_and_reads_the_delivery_id() {
        let verifier = Verifier::new(&hmac_cfg(SignatureEncoding::Hex, "sha256=", false)).unwrap();
        let sig = format!(
            "sha256={}",
            hmac_sig(HMAC_SECRET, &body(), SignatureEncoding::Hex)
        );
        let v = verifier
            .verify(
                &headers(&[("x-hub-signature-256", &sig), ("x-delivery", "d-1")]),
                body(),
                NOW,
            )
            .expect("verifies");
        assert_eq!(v.delivery_id(), Some("d-1"));
        assert_eq!(v.timestamp(), None);
        // Upper-case hex is the same signature.
        let upper = format!(
            "sha256={}",
            hmac_sig(HMAC_SECRET, &body(), SignatureEncoding::Hex).to_uppercase()
        );
        verifier
            .verify(&headers(&[("x-hub-signature-256", &upper)]), body(), NOW)
            .expect("hex is case-insensitive");
        let mut opaque_id = headers(&[("x-hub-signature-256", &upper)]);
        opaque_id.insert(
            "x-delivery",
            http::HeaderValue::from_bytes(b"d\xff").expect("opaque"),
        );
        let err = verifier.verify(&opaque_id, body(), NOW).unwrap_err();
        assert_eq!(err.reason(), "malformed_id");
    }

    #[test]
    fn hmac_prefix_is_required_when_configured() {
        let verifier = Verifier::new(&hmac_cfg(SignatureEncoding::Hex, "sha256=", false)).unwrap();
        let sig = hmac_sig(HMAC_SECRET, &body(), SignatureEncoding::Hex);
        let err = verifier
            .verify(&headers(&[("x-hub-signature-256", &sig)]), body(), NOW)
            .unwrap_err();
        assert_eq!(err.reason(), "malformed_signature");
    }

    #[test]
    fn hmac_base64_over_timestamp_dot_body_verifies_within_tolerance() {
        let verifier = Verifier::new(&hmac_cfg(SignatureEncoding::Base64, "", true)).unwrap();
        let sign = |ts: i64| {
            let mut content = format!("{ts}.").into_bytes();
            content.extend_from_slice(&body());
            hmac_sig(HMAC_SECRET, &content, SignatureEncoding::Base64)
        };
        let ok = verifier
            .verify(
                &headers(&[
                    ("x-hub-signature-256", &sign(NOW)),
                    ("x-timestamp", &NOW.to_string()),
                ]),
                body(),
                NOW,
            )
            .expect("verifies");
        assert_eq!(ok.timestamp(), Some(NOW));
        // Signing the body alone is not what is configured.
        let body_only = hmac_sig(HMAC_SECRET, &body(), SignatureEncoding::Base64);
        let err = verifier
            .verify(
                &headers(&[
                    ("x-hub-signature-256", &body_only),
                    ("x-timestamp", &NOW.to_string()),
                ]),
                body(),
                NOW,
            )
            .unwrap_err();
        assert_eq!(err.reason(), "bad_signature");
        for (ts, reason) in [
            (NOW - 301, "stale_timestamp"),
            (NOW + 301, "future_timestamp"),
        ] {
            let err = verifier
                .verify(
                    &headers(&[
                        ("x-hub-signature-256", &sign(ts)),
                        ("x-timestamp", &ts.to_string()),
                    ]),
                    body(),
                    NOW,
                )
                .unwrap_err();
            assert_eq!(err.reason(), reason);
        }
        let err = verifier
            .verify(
                &headers(&[("x-hub-signature-256", &sign(NOW))]),
                body(),
                NOW,
            )
            .unwrap_err();
        assert_eq!(err.reason(), "missing_timestamp");
    }

    #[test]
    fn hmac_timestamp_header_with_body_content_still_applies_the_tolerance() {
        let mut cfg = hmac_cfg(SignatureEncoding::Hex, "", false);
        cfg.timestamp_header = Some("x-timestamp".into());
        let verifier = Verifier::new(&cfg).unwrap();
        let sig = hmac_sig(HMAC_SECRET, &body(), SignatureEncoding::Hex);
        let stale = (NOW - 1000).to_string();
        let err = verifier
            .verify(
                &headers(&[("x-hub-signature-256", &sig), ("x-timestamp", &stale)]),
                body(),
                NOW,
            )
            .unwrap_err();
        assert_eq!(err.reason(), "stale_timestamp");
    }

    #[test]
    fn hmac_rotation_and_several_signatures_in_one_header() {
        let mut cfg = hmac_cfg(SignatureEncoding::Hex, "sha256=", false);
        cfg.secrets
            .push(secrecy::SecretString::from(HMAC_SECRET_OLD));
        let verifier = Verifier::new(&cfg).unwrap();
        for secret in [HMAC_SECRET, HMAC_SECRET_OLD] {
            let sig = format!(
                "sha256={}",
                hmac_sig(secret, &body(), SignatureEncoding::Hex)
            );
            verifier
                .verify(&headers(&[("x-hub-signature-256", &sig)]), body(), NOW)
                .expect("old and new secrets both verify");
        }
        let unknown = hmac_sig(
            "some-other-secret-entirely",
            &body(),
            SignatureEncoding::Hex,
        );
        let good = hmac_sig(HMAC_SECRET_OLD, &body(), SignatureEncoding::Hex);
        let both = format!("sha256={unknown}, sha256={good}");
        verifier
            .verify(&headers(&[("x-hub-signature-256", &both)]), body(), NOW)
            .expect("one matching entry suffices");
    }

    #[test]
    fn hmac_wrong_secret_and_missing_header() {
        let verifier = Verifier::new(&hmac_cfg(SignatureEncoding::Hex, "", false)).unwrap();
        let sig = hmac_sig("not-the-configured-secret", &body(), SignatureEncoding::Hex);
        let err = verifier
            .verify(&headers(&[("x-hub-signature-256", &sig)]), body(), NOW)
            .unwrap_err();
        assert_eq!(err.reason(), "bad_signature");
        let err = verifier.verify(&HeaderMap::new(), body(), NOW).unwrap_err();
        assert_eq!(err.reason(), "missing_signature");
        let err = verifier
            .verify(
                &headers(&[("x-hub-signature-256", "zz-not-hex")]),
                body(),
                NOW,
            )
            .unwrap_err();
        assert_eq!(err.reason(), "malformed_signature");
    }

    // --- token ----------------------------------------------------------------------------

    fn token_verifier() -> Verifier {
        let mut cfg = source(SchemeKind::Token, &[TOKEN, "token-secret-previous-one"]);
        cfg.id_header = Some("x-request-id".into());
        Verifier::new(&cfg).unwrap()
    }

    #[test]
    fn token_accepts_each_configured_secret() {
        for token in [TOKEN, "token-secret-previous-one"] {
            let v = token_verifier()
                .verify(
                    &headers(&[("x-webhook-token", token), ("x-request-id", "r-7")]),
                    body(),
                    NOW,
                )
                .expect("verifies");
            assert_eq!(v.delivery_id(), Some("r-7"));
        }
    }

    #[test]
    fn token_wrong_missing_and_prefix_of_secret_are_refused() {
        let verifier = token_verifier();
        for (value, reason) in [
            (Some("wrong-token-of-some-length"), "bad_token"),
            (Some(&TOKEN[..TOKEN.len() - 1]), "bad_token"),
            (Some(""), "missing_token"),
            (None, "missing_token"),
        ] {
            let h = match value {
                Some(v) => headers(&[("x-webhook-token", v)]),
                None => HeaderMap::new(),
            };
            assert_eq!(
                verifier.verify(&h, body(), NOW).unwrap_err().reason(),
                reason
            );
        }
    }

    // --- construction and secrecy --------------------------------------------------------

    #[test]
    fn construction_errors_and_debug_never_show_secrets() {
        let err = Verifier::new(&source(SchemeKind::StandardWebhooks, &["whsec_***"])).unwrap_err();
        assert!(!err.contains("***"), "{err}");
        assert!(Verifier::new(&source(SchemeKind::Token, &[])).is_err());
        let mut cfg = source(SchemeKind::HmacSha256, &[HMAC_SECRET]);
        cfg.signed_content = SignedContent::TimestampDotBody;
        assert!(Verifier::new(&cfg).is_err());

        let verifier = Verifier::new(&hmac_cfg(SignatureEncoding::Hex, "sha256=", true)).unwrap();
        let debug = format!("{verifier:?}");
        assert!(!debug.contains(HMAC_SECRET), "{debug}");
        assert!(debug.contains("x-hub-signature-256"), "{debug}");
    }

    #[test]
    fn error_messages_never_contain_the_expected_signature() {
        let expected = sign_standard(WHSEC, "msg_1", NOW, &body());
        let wrong = sign_standard(OLD_WHSEC, "msg_1", NOW, &body());
        let err = standard(&[WHSEC])
            .verify(&standard_headers("msg_1", NOW, &wrong), body(), NOW)
            .unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(!text.contains(&expected[3..]), "{text}");
        assert!(!text.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), "{text}");
    }

    // --- properties -----------------------------------------------------------------------

    fn all_schemes() -> Vec<Verifier> {
        let mut token = source(SchemeKind::Token, &[TOKEN]);
        token.id_header = Some("x-id".into());
        vec![
            standard(&[WHSEC, OLD_WHSEC]),
            Verifier::new(&hmac_cfg(SignatureEncoding::Hex, "sha256=", true)).unwrap(),
            Verifier::new(&hmac_cfg(SignatureEncoding::Base64, "", false)).unwrap(),
            Verifier::new(&token).unwrap(),
        ]
    }

    fn arbitrary_headers() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
        let names = prop::sample::select(vec![
            WEBHOOK_ID,
            WEBHOOK_TIMESTAMP,
            WEBHOOK_SIGNATURE,
            "x-hub-signature-256",
            "x-timestamp",
            "x-delivery",
            "x-webhook-token",
            "x-id",
        ]);
        let values = prop_oneof![
            prop::collection::vec(any::<u8>(), 0..200),
            "(v1,|v1a,|sha256=)?[A-Za-z0-9+/=, .-]{0,120}".prop_map(String::into_bytes),
            any::<i64>().prop_map(|n| n.to_string().into_bytes()),
        ];
        prop::collection::vec((names.prop_map(String::from), values), 0..8)
    }

    proptest! {
        #[test]
        fn verifiers_never_panic_on_arbitrary_input(
            pairs in arbitrary_headers(),
            body in prop::collection::vec(any::<u8>(), 0..256),
            now in any::<i64>(),
        ) {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                // Header values the HTTP layer could never produce are skipped, not forced.
                if let Ok(value) = http::HeaderValue::from_bytes(&value) {
                    map.append(HeaderName::try_from(name).expect("static name"), value);
                }
            }
            for verifier in all_schemes() {
                let _ = verifier.verify(&map, Bytes::from(body.clone()), now);
            }
        }

        #[test]
        fn flipping_any_bit_of_a_signed_body_fails_standard(
            body in prop::collection::vec(any::<u8>(), 1..256),
            bit in any::<prop::sample::Index>(),
        ) {
            let sig = sign_standard(WHSEC, "msg_p", NOW, &body);
            let h = standard_headers("msg_p", NOW, &sig);
            let verifier = standard(&[WHSEC]);
            prop_assert!(verifier.verify(&h, Bytes::from(body.clone()), NOW).is_ok());
            let mut tampered = body;
            let i = bit.index(tampered.len() * 8);
            tampered[i / 8] ^= 1 << (i % 8);
            let err = verifier.verify(&h, Bytes::from(tampered), NOW).unwrap_err();
            prop_assert_eq!(err.reason(), "bad_signature");
        }

        #[test]
        fn flipping_any_bit_of_a_signed_body_fails_hmac(
            body in prop::collection::vec(any::<u8>(), 1..256),
            bit in any::<prop::sample::Index>(),
        ) {
            let verifier = Verifier::new(&hmac_cfg(SignatureEncoding::Hex, "sha256=", true)).unwrap();
            let mut content = format!("{NOW}.").into_bytes();
            content.extend_from_slice(&body);
            let sig = format!("sha256={}", hmac_sig(HMAC_SECRET, &content, SignatureEncoding::Hex));
            let h = headers(&[("x-hub-signature-256", &sig), ("x-timestamp", &NOW.to_string())]);
            prop_assert!(verifier.verify(&h, Bytes::from(body.clone()), NOW).is_ok());
            let mut tampered = body;
            let i = bit.index(tampered.len() * 8);
            tampered[i / 8] ^= 1 << (i % 8);
            let err = verifier.verify(&h, Bytes::from(tampered), NOW).unwrap_err();
            prop_assert_eq!(err.reason(), "bad_signature");
        }
    }
}
