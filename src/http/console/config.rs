//! `[console]`: the operator console under `/ui/`.

use serde::{Deserialize, Serialize};

use crate::config_error::ConfigError;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Serve the console under `/ui/` (roles `api` and `all`). It signs in with `admin.token`.
    pub enabled: bool,
    /// Mark the session cookie `Secure` (sent over HTTPS only). Turn off only for plain-HTTP
    /// local use such as the demo.
    pub cookie_secure: bool,
    /// How long a sign-in lasts, in minutes.
    pub session_minutes: u64,
    /// OpenText's `cs.exe` URL (e.g. `https://otcs.example.com/otcs/cs.exe`): workspaces link
    /// to `<opentext_ui_url>/app/nodes/<workspace id>` (Smart View). Empty: no link.
    pub opentext_ui_url: String,
    /// A 4ALLPORTAL object's page, with `{module}` and `{id}` put in (e.g.
    /// `https://pim.example.com/#/{module}/{id}`). Empty: no link.
    pub allportal_ui_url: String,
}

/// The built-in `[console]` section.
pub const DEFAULTS: &str = r#"
[console]
enabled = false
cookie_secure = true
session_minutes = 480
opentext_ui_url = ""
allportal_ui_url = ""
"#;

impl Default for ConsoleConfig {
    /// The built-in `[console]` section.
    fn default() -> Self {
        crate::config_error::builtin(DEFAULTS, "console")
    }
}

impl ConsoleConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        crate::config_error::positive("console", &[("session_minutes", self.session_minutes)])?;
        if self.session_minutes > 7 * 24 * 60 {
            return Err(ConfigError::key(
                "console.session_minutes",
                "must be at most 10080 (one week)",
            ));
        }
        check_url("console.opentext_ui_url", &self.opentext_ui_url)?;
        check_url("console.allportal_ui_url", &self.allportal_ui_url)?;
        let url = &self.allportal_ui_url;
        let placeholders = url.contains("{module}") && url.contains("{id}");
        if !url.is_empty() && !placeholders {
            return Err(ConfigError::key(
                "console.allportal_ui_url",
                "must contain `{module}` and `{id}`, e.g. https://pim.example.com/#/{module}/{id}",
            ));
        }
        Ok(())
    }

    /// The Smart View page of an OpenText workspace, when a UI URL is configured.
    pub fn workspace_url(&self, workspace_id: i64) -> Option<String> {
        (!self.opentext_ui_url.is_empty()).then(|| {
            format!(
                "{}/app/nodes/{workspace_id}",
                self.opentext_ui_url.trim_end_matches('/')
            )
        })
    }

    /// The 4ALLPORTAL page of an object, when a UI URL is configured.
    pub fn object_url(&self, module: &str, id: &str) -> Option<String> {
        (!self.allportal_ui_url.is_empty()).then(|| {
            self.allportal_ui_url
                .replace("{module}", &encode(module))
                .replace("{id}", &encode(id))
        })
    }
}

/// Percent-encodes all but the unreserved characters of RFC 3986, so an id is one segment.
fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

fn check_url(key: &str, value: &str) -> Result<(), ConfigError> {
    if value.is_empty() {
        return Ok(());
    }
    match url::Url::parse(value) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(()),
        Ok(_) => Err(ConfigError::key(key, "must be an http or https URL")),
        Err(error) => Err(ConfigError::key(key, format!("is not a URL: {error}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_off() {
        let config = ConsoleConfig::default();
        config.validate().unwrap();
        assert!(!config.enabled);
        assert!(config.cookie_secure);
        assert_eq!(config.workspace_url(7), None);
    }

    #[test]
    fn links_are_built_from_the_ui_urls() {
        let config = ConsoleConfig {
            opentext_ui_url: "https://ot.example.com/otcs/cs.exe/".into(),
            allportal_ui_url: "https://pim.example.com/#/{module}/{id}".into(),
            ..ConsoleConfig::default()
        };
        config.validate().unwrap();
        assert_eq!(
            config.workspace_url(42).as_deref(),
            Some("https://ot.example.com/otcs/cs.exe/app/nodes/42")
        );
        assert_eq!(
            config.object_url("product", "a b").as_deref(),
            Some("https://pim.example.com/#/product/a%20b")
        );
    }

    #[test]
    fn a_bad_ui_url_names_its_key() {
        let config = ConsoleConfig {
            allportal_ui_url: "https://pim.example.com/".into(),
            ..ConsoleConfig::default()
        };
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("console.allportal_ui_url"), "{error}");
        let config = ConsoleConfig {
            opentext_ui_url: "ftp://x".into(),
            ..ConsoleConfig::default()
        };
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("console.opentext_ui_url"), "{error}");
    }
}
