//! Contract: every (method, path) the OpenText client can send exists in OpenText's own OpenAPI
//! documents (Content Server, Business Workspaces, Records Management), except the few listed
//! exceptions, each with a reason. The client's table is the one it sends from, so the two
//! cannot drift apart.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;
use xecm_bridge::clients::opentext::routes::{ROUTES, SPEC_EXCEPTIONS};

const SPECS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/reference/opentext-specs"
);

/// The specs folder, or `None` (test skipped) when it is absent outside CI.
fn specs_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(SPECS);
    if dir.is_dir() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "OpenText specs missing at {SPECS}, required in CI"
    );
    eprintln!("skipping: OpenText specs not found at {SPECS}");
    None
}

fn load(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    match path.extension().and_then(|e| e.to_str()) {
        Some("json") => serde_json::from_str(&text).unwrap(),
        _ => serde_yaml_ng::from_str(&text).unwrap(),
    }
}

/// `(METHOD, /api + path)` of every operation in every spec in `dir`.
fn operations(dir: &Path) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            )
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= 3,
        "expected the three OpenText specs in {dir:?}"
    );
    for file in files {
        let spec = load(&file);
        let paths = spec["paths"].as_object().expect("spec has paths");
        for (path, item) in paths {
            for method in item.as_object().into_iter().flatten().map(|(m, _)| m) {
                if matches!(
                    method.as_str(),
                    "get" | "put" | "post" | "delete" | "patch" | "head"
                ) {
                    // Every server entry of these specs ends in `/api`; paths start after it.
                    ops.insert((method.to_uppercase(), format!("/api{path}")));
                }
            }
        }
    }
    ops
}

#[test]
fn every_client_route_is_in_opentexts_specs() {
    let Some(dir) = specs_dir() else { return };
    let ops = operations(&dir);
    assert!(ops.len() > 500, "specs parsed: {} operations", ops.len());
    let missing: Vec<_> = ROUTES
        .iter()
        .filter(|r| !ops.contains(&(r.method.to_string(), r.path.to_string())))
        .collect();
    assert!(missing.is_empty(), "routes not in the specs: {missing:#?}");
}

#[test]
fn exceptions_are_really_outside_the_specs_and_explained() {
    let Some(dir) = specs_dir() else { return };
    let ops = operations(&dir);
    for (route, reason) in SPEC_EXCEPTIONS {
        assert!(
            !ops.contains(&(route.method.to_string(), format!("/api{}", route.path)))
                && !ops.contains(&(route.method.to_string(), route.path.to_string())),
            "{route:?} is in the specs; drop the exception"
        );
        assert!(reason.len() > 20, "{route:?} needs a reason");
        assert!(!ROUTES.contains(route), "an exception is not a spec route");
    }
}

#[test]
fn route_table_has_no_duplicates() {
    let unique: BTreeSet<_> = ROUTES.iter().map(|r| (r.method, r.path)).collect();
    assert_eq!(unique.len(), ROUTES.len());
}
