//! Configuration: invalid files produce errors naming the key; environment variables win over the
//! file; `check-config` never prints a secret.

use std::process::Command;

use xecm_bridge::config::Settings;

const SECRETS: &str = r#"
[sources.allportal]
secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
[sources.opentext]
secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
"#;

fn error_for(toml: &str) -> String {
    match Settings::from_toml(&[SECRETS, toml]) {
        Ok(_) => panic!("accepted invalid configuration:\n{toml}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn invalid_values_name_their_key() {
    let cases = [
        ("[server]\nlisten = \"not an address\"", "server.listen"),
        ("[server]\nlisten_port = 1", "listen_port"),
        ("[server]\nmax_body_bytes = 0", "server.max_body_bytes"),
        ("[server]\nmax_body_bytes = -5", "server.max_body_bytes"),
        ("[store]\nurl = \"mysql://x\"", "store.url"),
        ("[admin]\ntoken = \"short\"", "admin.token"),
        (
            "[sources.allportal]\nsecrets = []",
            "sources.allportal.secrets",
        ),
        (
            "[sources.allportal]\nsecrets = [\"whsec_***\"]",
            "sources.allportal.secrets[0]",
        ),
        (
            "[sources.opentext]\nscheme = \"md5\"",
            "sources.opentext.scheme",
        ),
        (
            "[sources.opentext]\ntolerance_secs = 0",
            "sources.opentext.tolerance_secs",
        ),
        (
            "[sources.opentext]\nscheme = \"hmac-sha256\"\nsecrets = [\"0123456789abcdef\"]\nsigned_content = \"timestamp-dot-body\"",
            "sources.opentext.timestamp_header",
        ),
        (
            "[sources.opentext]\nscheme = \"token\"\nsecrets = [\"0123456789abcdef\"]\nheader = \"bad header\"",
            "sources.opentext.header",
        ),
        (
            "[allportal]\nbase_url = \"ftp://pim\"",
            "allportal.base_url",
        ),
        (
            "[allportal]\nbase_url = \"not a url\"",
            "allportal.base_url",
        ),
        (
            "[opentext]\nbase_url = \"https://otcs.example.com/otcs/cs/api/v1\"",
            "opentext.base_url",
        ),
        (
            "[opentext]\next_system_id = \" \"",
            "opentext.ext_system_id",
        ),
        ("[opentext]\nauth = \"oauth2\"", "opentext.client_id"),
        (
            "[opentext.transport]\ncircuit_failure_rate = 1.5",
            "opentext.transport.circuit_failure_rate",
        ),
        (
            "[allportal.transport]\nrequest_timeout_secs = 0",
            "allportal.transport.request_timeout_secs",
        ),
        ("[log]\nformat = \"xml\"", "log.format"),
    ];
    for (toml, key) in cases {
        let message = error_for(toml);
        assert!(
            message.contains(key),
            "error for {toml:?} should name `{key}`: {message}"
        );
    }
}

#[test]
fn defaults_plus_secrets_are_valid() {
    let settings = Settings::from_toml(&[SECRETS]).unwrap();
    assert_eq!(settings.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(settings.server.max_body_bytes, 1_048_576);
    assert_eq!(settings.store.url, "sqlite://data/bridge.db");
    assert_eq!(settings.opentext.ext_system_id, "4ALLPORTAL");
}

#[test]
fn missing_secrets_are_an_error() {
    let message = Settings::from_toml(&[]).unwrap_err().to_string();
    assert!(message.contains("sources.allportal.secrets"), "{message}");
}

#[test]
fn debug_output_never_shows_secrets() {
    let settings = Settings::from_toml(&[SECRETS, "[opentext]\npassword = \"hunter2-opentext\"\n[allportal]\napi_key = \"pim-key-secret\"\n[admin]\ntoken = \"admin-token-secret-value\""]).unwrap();
    let debug = format!("{settings:?}");
    let shown = settings.redacted_toml();
    for secret in [
        "hunter2-opentext",
        "pim-key-secret",
        "admin-token-secret-value",
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    ] {
        assert!(!debug.contains(secret), "Debug shows {secret}");
        assert!(!shown.contains(secret), "redacted TOML shows {secret}");
    }
}

fn check_config(file: &std::path::Path, env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_xecm-bridge"));
    command.args(["check-config", "--config"]).arg(file);
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("run check-config")
}

#[test]
fn environment_overrides_the_file_and_secrets_stay_hidden() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bridge.toml");
    std::fs::write(&file, format!("{SECRETS}\n[server]\nlisten = \"127.0.0.1:8080\"\n[opentext]\npassword = \"file-password\"")).unwrap();
    let output = check_config(
        &file,
        &[
            ("XECM_BRIDGE__SERVER__LISTEN", "127.0.0.1:9999"),
            ("XECM_BRIDGE__OPENTEXT__PASSWORD", "env-password-secret"),
            (
                "XECM_BRIDGE__SOURCES__OPENTEXT__SECRETS",
                "[\"whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD\"]",
            ),
        ],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("listen = \"127.0.0.1:9999\""), "{stdout}");
    assert!(
        !stdout.contains("env-password-secret") && !stdout.contains("file-password"),
        "{stdout}"
    );
    assert!(!stdout.contains("C2FVsBQIhrscChlQIMV"), "{stdout}");
    assert!(stdout.contains("<redacted>"), "{stdout}");
}

#[test]
fn invalid_environment_value_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bridge.toml");
    std::fs::write(&file, SECRETS).unwrap();
    let output = check_config(&file, &[("XECM_BRIDGE__SERVER__MAX_BODY_BYTES", "lots")]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("server.max_body_bytes"), "{stderr}");
}

#[test]
fn missing_config_file_is_a_clear_error() {
    let output = check_config(std::path::Path::new("/nonexistent/bridge.toml"), &[]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/bridge.toml"), "{stderr}");
}

#[test]
fn example_config_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml");
    let output = check_config(std::path::Path::new(path), &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
