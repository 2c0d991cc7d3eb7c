//! How secrets print: configuration types serialize them as `"<redacted>"` (`check-config`
//! shows the configuration in effect), and URLs lose their password before they are logged.

use secrecy::SecretString;
use serde::Serializer;
use url::Url;

const REDACTED: &str = "<redacted>";

pub fn secret<S: Serializer>(_: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(REDACTED)
}

pub fn optional_secret<S: Serializer>(v: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(_) => s.serialize_str(REDACTED),
        None => s.serialize_none(),
    }
}

pub fn secrets<S: Serializer>(v: &[SecretString], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(v.len()))?;
    for _ in v {
        seq.serialize_element(REDACTED)?;
    }
    seq.end()
}

/// A PostgreSQL URL may embed a password; print it without.
pub fn url_password<S: Serializer>(v: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&url(v))
}

/// The URL with any password replaced, for logs and `check-config`.
pub fn url(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some(REDACTED));
            url.to_string()
        }
        _ => raw.to_string(),
    }
}
