//! `check-config --online`: the real binary checks the mapping against both simulators and
//! names each wrong id with its key and what exists instead; exit codes tell an invalid
//! configuration, an unreachable system and a failed check apart.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::cluster::{FAST_WORKER, Sims, free_port, write_config_for};

const ALL_FLOWS: [&str; 7] = [
    "launch",
    "account",
    "change",
    "compliance",
    "partner",
    "family",
    "archival",
];

fn check_online(config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xecm-bridge"))
        .args(["check-config", "--online", "--config"])
        .arg(config)
        .output()
        .expect("run check-config --online")
}

fn config(dir: &Path, name: &str, sims: &Sims) -> PathBuf {
    let store = format!("sqlite://{}/bridge.db", dir.display());
    write_config_for(
        dir,
        name,
        free_port(),
        &store,
        sims,
        &ALL_FLOWS,
        FAST_WORKER,
    )
}

/// Rewrites the configuration file with `edit` applied to its TOML.
fn edit(path: &Path, edit: impl FnOnce(&mut toml::Table)) {
    let mut doc: toml::Table = std::fs::read_to_string(path)
        .unwrap()
        .parse()
        .expect("config is TOML");
    edit(&mut doc);
    std::fs::write(path, toml::to_string(&doc).unwrap()).unwrap();
}

fn table<'a>(doc: &'a mut toml::Table, path: &[&str]) -> &'a mut toml::Table {
    path.iter().fold(doc, |t, key| {
        t.get_mut(*key)
            .and_then(toml::Value::as_table_mut)
            .unwrap_or_else(|| panic!("no table `{key}`"))
    })
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_example_mapping_fits_both_simulators() {
    let sims = Sims::start(0, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), "example", &sims);
    let output = check_online(&path);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{err}");
    assert!(
        err.contains("the mapping fits OpenText and 4ALLPORTAL"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_mapping_names_each_wrong_id() {
    let sims = Sims::start(0, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), "broken", &sims);
    edit(&path, |doc| {
        let flows = table(doc, &["flows"]);
        table(flows, &["launch", "trigger"]).insert("module".into(), "prodct".into());
        let ws = table(flows, &["launch", "workspace"]);
        ws.insert("template_id".into(), 20199.into());
        let cats = table(flows, &["change", "workspace", "categories"]);
        // Launch Date is a Date attribute; packaging a text field.
        cats.insert("9830_11".into(), "packaging".into());
        cats.insert("9830_12".into(), "'jdoe'".into());
        cats.insert("9830_13".into(), "article_number".into());
        cats.insert(
            "9830_2".into(),
            toml::Value::Array(vec!["article_number".into(), "'x'".into()]),
        );
        table(flows, &["change", "write_back"]).insert("decision_field".into(), "aproval".into());
        table(flows, &["change"])
            .insert("watch".into(), toml::Value::Array(vec!["pakaging".into()]));
        table(flows, &["compliance", "workflow"]).insert("map_id".into(), 6680.into());
        let records = table(flows, &["archival", "records"]);
        records.insert("rm_class_id".into(), 2100.into());
        records.insert("hold_id".into(), 5009.into());
        table(flows, &["partner", "workspace"]).insert("bo_type".into(), "partnr".into());
        table(flows, &["account", "workspace"]).insert("parent_id".into(), 999_999.into());
        let family = table(flows, &["family"]);
        let assets = family["content"]["assets"].as_array().unwrap().clone();
        let mut first = assets[0].as_table().unwrap().clone();
        first.insert("folder".into(), "Datasheet".into());
        let mut assets = assets;
        assets[0] = toml::Value::Table(first);
        table(family, &["content"]).insert("assets".into(), toml::Value::Array(assets));
        let partners = table(flows, &["partner", "team", "roles", "Partners", "folders"]);
        let upload = partners
            .remove("Partner Uploads")
            .expect("the example's upload folder");
        partners.insert("Partner Upload".into(), upload);
    });
    let output = check_online(&path);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(4), "{err}");
    let expect = [
        ("flows.launch.trigger.module", "`prodct` is unknown"),
        (
            "flows.launch.workspace.template_id",
            "`20199` is not a template",
        ),
        (
            "flows.launch.workspace.template_id",
            "20101 (Product Launch Template)",
        ),
        (
            "flows.change.workspace.categories.\"9830_11\"",
            "the attribute is `Launch Date` (date) but the field is `CEVarchar`",
        ),
        (
            "flows.change.workspace.categories.\"9830_12\"",
            "`jdoe` does not fit `Product Owner` (user)",
        ),
        (
            "flows.change.workspace.categories.\"9830_13\"",
            "has no attribute 13; its attributes: 9830_10 `Claims` (multi-value text)",
        ),
        (
            "flows.change.workspace.categories.\"9830_2\"",
            "a list of 2 values for `Article Number` (text), which takes one value",
        ),
        (
            "flows.change.write_back.decision_field",
            "unknown field `aproval`",
        ),
        ("flows.compliance.workflow.map_id", "`6680`: no such node"),
        (
            "flows.archival.records.rm_class_id",
            "`2100` is `4ALLPORTAL Workspaces` (Folder), not an RM classification",
        ),
        (
            "flows.archival.records.hold_id",
            "5001 (Product Liability Hold)",
        ),
        (
            "flows.partner.workspace.bo_type",
            "`partnr`: no workspace type",
        ),
        (
            "flows.account.workspace.parent_id",
            "`999999` does not exist",
        ),
        (
            "flows.family.content.assets[0].folder",
            "`Datasheet`: the template 20107 has folders Datasheets, Manuals",
        ),
        (
            "flows.partner.team.roles.\"Partners\".folders.\"Partner Upload\"",
            "`Partner Upload`: the template",
        ),
    ];
    for (key, text) in expect {
        assert!(
            err.lines()
                .any(|l| l.starts_with(&format!("problem: {key}: ")) && l.contains(text)),
            "no problem `{key}` with `{text}` in:\n{err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_codes_tell_invalid_unreachable_and_failed_apart() {
    let sims = Sims::start(0, 0).await;
    let dir = tempfile::tempdir().unwrap();
    // Invalid: a key of the wrong type.
    let invalid = config(dir.path(), "invalid", &sims);
    edit(&invalid, |doc| {
        table(doc, &["server"]).insert("max_body_bytes".into(), "lots".into());
    });
    let output = check_online(&invalid);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    // Unreachable: OpenText on a port nobody listens on.
    let unreachable = config(dir.path(), "unreachable", &sims);
    edit(&unreachable, |doc| {
        let closed = format!("http://127.0.0.1:{}/", free_port());
        table(doc, &["opentext"]).insert("base_url".into(), closed.into());
    });
    let output = check_online(&unreachable);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(3), "{err}");
    assert!(err.contains("unreachable: opentext"), "{err}");
    // Without --online nothing is asked.
    let output = Command::new(env!("CARGO_BIN_EXE_xecm-bridge"))
        .args(["check-config", "--config"])
        .arg(&unreachable)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}

/// Runs `serve` on `config` until it exits by itself (it must refuse to start).
fn serve_refuses(config: &Path) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_xecm-bridge"))
        .args(["serve", "--config"])
        .arg(config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start serve");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().ok();
            panic!("serve started although its mapping is wrong");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    err
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_refuses_a_misspelled_module_and_with_fail_any_problem() {
    let sims = Sims::start(0, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let module = config(dir.path(), "module", &sims);
    edit(&module, |doc| {
        let trigger = table(doc, &["flows", "launch", "trigger"]);
        trigger.insert("module".into(), "prodct".into());
    });
    let err = tokio::task::spawn_blocking(move || serve_refuses(&module))
        .await
        .unwrap();
    assert!(err.contains("flows.launch.trigger.module"), "{err}");
    let template = config(dir.path(), "template", &sims);
    edit(&template, |doc| {
        let ws = table(doc, &["flows", "launch", "workspace"]);
        ws.insert("template_id".into(), 20199.into());
        let mut check = toml::Table::new();
        check.insert("on_problem".into(), "fail".into());
        doc.insert("mapping_check".into(), toml::Value::Table(check));
    });
    let err = tokio::task::spawn_blocking(move || serve_refuses(&template))
        .await
        .unwrap();
    assert!(err.contains("flows.launch.workspace.template_id"), "{err}");
}
