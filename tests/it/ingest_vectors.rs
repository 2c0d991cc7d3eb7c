//! The standard-webhooks verifier against signatures made by an independent implementation:
//! the reference `standardwebhooks` Python package (`scripts/make_standardwebhooks_vectors.py`).
//!
//! The committed vectors always run. The live check runs the script afresh; without python3 or
//! the package it skips, except under `CI`, where a skip would hide a broken check.

use std::process::Command;

use bytes::Bytes;
use http::HeaderMap;
use secrecy::SecretString;
use serde::Deserialize;
use xecm_bridge::ingest::config::{SchemeKind, SignatureEncoding, SignedContent, SourceConfig};
use xecm_bridge::ingest::verify::{Verifier, VerifyError};

const COMMITTED: &str = include_str!("vectors/standardwebhooks.json");
const TOLERANCE_SECS: u64 = 300;

#[derive(Debug, Deserialize)]
struct Vectors {
    generator: String,
    cases: Vec<Case>,
}

#[derive(Debug, Clone, Deserialize)]
struct Case {
    secret: String,
    msg_id: String,
    timestamp: i64,
    body: String,
    signature: String,
}

fn verifier(secret: &str) -> Verifier {
    let cfg = SourceConfig {
        scheme: SchemeKind::StandardWebhooks,
        secrets: vec![SecretString::from(secret.to_string())],
        tolerance_secs: TOLERANCE_SECS,
        header: None,
        timestamp_header: None,
        signed_content: SignedContent::Body,
        encoding: SignatureEncoding::Hex,
        prefix: String::new(),
        id_header: None,
    };
    Verifier::new(&cfg).expect("generated secrets are valid whsec_ keys")
}

fn headers(id: &str, timestamp: &str, signature: &str) -> HeaderMap {
    let mut map = HeaderMap::new();
    map.insert("webhook-id", id.parse().expect("ASCII id"));
    map.insert("webhook-timestamp", timestamp.parse().expect("digits"));
    map.insert(
        "webhook-signature",
        signature.parse().expect("ASCII signature"),
    );
    map
}

fn verify(case: &Case, now: i64) -> Result<(), VerifyError> {
    let h = headers(&case.msg_id, &case.timestamp.to_string(), &case.signature);
    let body = Bytes::from(case.body.clone().into_bytes());
    let verified = verifier(&case.secret).verify(&h, body.clone(), now)?;
    assert_eq!(verified.delivery_id(), Some(case.msg_id.as_str()));
    assert_eq!(verified.timestamp(), Some(case.timestamp));
    // Both are covered by the signature, so both may decide the event's identity.
    assert_eq!(verified.signed_delivery_id(), Some(case.msg_id.as_str()));
    assert_eq!(verified.signed_timestamp(), Some(case.timestamp));
    assert_eq!(verified.body(), &body);
    Ok(())
}

/// Every case verifies; each kind of tampering is refused as a bad signature.
fn check_all(cases: &[Case]) {
    assert!(!cases.is_empty(), "no vectors");
    for (i, case) in cases.iter().enumerate() {
        verify(case, case.timestamp + 1).unwrap_or_else(|e| panic!("case {i} must verify: {e}"));
        for (what, tampered) in tamperings(case, &cases[(i + 1) % cases.len()]) {
            let err = verify(&tampered, tampered.timestamp)
                .expect_err(&format!("case {i} with {what} must not verify"));
            assert_eq!(err.reason(), "bad_signature", "case {i} with {what}: {err}");
        }
    }
}

fn tamperings(case: &Case, other: &Case) -> Vec<(&'static str, Case)> {
    let mut body = case.clone();
    body.body.push(' ');
    let mut flipped = case.clone();
    let mut bytes = flipped.body.clone().into_bytes();
    if let Some(first) = bytes.first_mut() {
        // Flipping bit 0 of the first byte keeps valid UTF-8 for ASCII; for other bytes the
        // lossy conversion still changes the content.
        *first ^= 1;
    }
    flipped.body = String::from_utf8_lossy(&bytes).into_owned();
    let mut id = case.clone();
    id.msg_id.push('x');
    let mut timestamp = case.clone();
    timestamp.timestamp += 1;
    let mut secret = case.clone();
    secret.secret = other.secret.clone();
    let mut cases = vec![
        ("an extra body byte", body),
        ("another message id", id),
        ("another timestamp", timestamp),
        ("another secret", secret),
    ];
    if !case.body.is_empty() {
        cases.push(("a flipped body bit", flipped));
    }
    cases
}

#[test]
fn committed_vectors_verify_and_tampered_copies_do_not() {
    let vectors: Vectors = serde_json::from_str(COMMITTED).expect("vectors file is valid JSON");
    assert!(
        vectors.generator.starts_with("standardwebhooks"),
        "{}",
        vectors.generator
    );
    assert!(vectors.cases.len() >= 32, "too few committed vectors");
    // The file must exercise what it is there for: rotation headers and non-ASCII bodies.
    assert!(vectors.cases.iter().any(|c| c.signature.contains(' ')));
    assert!(vectors.cases.iter().any(|c| !c.body.is_ascii()));
    check_all(&vectors.cases);
}

#[test]
fn committed_vectors_respect_the_tolerance() {
    let vectors: Vectors = serde_json::from_str(COMMITTED).expect("valid JSON");
    let case = &vectors.cases[0];
    let tolerance = TOLERANCE_SECS as i64;
    assert!(verify(case, case.timestamp + tolerance).is_ok());
    assert!(verify(case, case.timestamp - tolerance).is_ok());
    let stale = verify(case, case.timestamp + tolerance + 1).unwrap_err();
    assert_eq!(stale.reason(), "stale_timestamp");
    let future = verify(case, case.timestamp - tolerance - 1).unwrap_err();
    assert_eq!(future.reason(), "future_timestamp");
}

/// Skips with a message, or fails when `CI` is set (there the check must really run).
fn skip(why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("CI is set, so this check may not skip: {why}");
    }
    println!("skipping: {why}");
}

#[test]
fn fresh_vectors_from_the_reference_library_verify() {
    let root = env!("CARGO_MANIFEST_DIR");
    let probe = Command::new("python3")
        .args(["-c", "import standardwebhooks"])
        .current_dir(root)
        .output();
    match probe {
        Err(e) => return skip(&format!("python3 cannot be run ({e})")),
        Ok(out) if !out.status.success() => {
            return skip("the python package `standardwebhooks` is not installed");
        }
        Ok(_) => {}
    }
    let out = Command::new("python3")
        .args(["scripts/make_standardwebhooks_vectors.py", "--count", "48"])
        .current_dir(root)
        .output()
        .expect("python3 ran a moment ago");
    assert!(
        out.status.success(),
        "generator failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let vectors: Vectors = serde_json::from_slice(&out.stdout).expect("generator prints JSON");
    assert_eq!(vectors.cases.len(), 48);
    check_all(&vectors.cases);
}
