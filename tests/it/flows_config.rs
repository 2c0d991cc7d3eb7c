//! Mapping errors, one test per kind; each error names the key. Field names and types are
//! checked against the 4ALLPORTAL simulator's module schemas over HTTP, as at start-up.

use xecm_bridge::clients::allportal::AllportalClient;
use xecm_bridge::config::Settings;
use xecm_bridge::flows::schema::{SchemaCheckError, check_upstream};
use xecm_bridge::sim::allportal::{self as ap_sim, AllportalSimOptions, sample_catalogue};

const SECRETS: &str = r#"
[sources.allportal]
secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
[sources.opentext]
secrets = ["whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"]
"#;

const LAUNCH: &str = r#"
[flows.launch.trigger]
module = "product"
conditions = [{ field = "status", equals = "launch_ready" }]
[flows.launch.workspace]
bo_type = "product"
template_id = 20101
name = "Launch {name@en_US} ({article_number})"
[flows.launch.workspace.categories]
"9830_2" = "article_number"
"#;

fn load(mapping: &str) -> Result<Settings, String> {
    Settings::from_toml(&[SECRETS, mapping]).map_err(|e| e.to_string())
}

fn example() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml");
    std::fs::read_to_string(path).expect("example config")
}

async fn schema_check(mapping: &str) -> Result<(), String> {
    let settings = load(mapping).expect("statically valid");
    let sim = ap_sim::spawn(
        "127.0.0.1:0".parse().unwrap(),
        AllportalSimOptions {
            seed: Some(sample_catalogue()),
            ..AllportalSimOptions::default()
        },
    )
    .await
    .expect("simulator");
    let mut cfg = settings.allportal.clone();
    cfg.base_url = sim.base_url().parse().unwrap();
    cfg.api_key = "sim-allportal-api-key".to_string().into();
    let client = AllportalClient::new(&cfg).expect("client");
    let result = check_upstream(&settings.flows, &client).await;
    sim.shutdown().await;
    result.map_err(|e| {
        assert!(matches!(e, SchemaCheckError::Mapping(_)), "{e}");
        e.to_string()
    })
}

#[test]
fn the_example_mapping_is_valid_and_enables_all_seven_flows() {
    let settings = Settings::from_toml(&[&example()]).expect("example is valid");
    let names: Vec<&str> = settings.flows.enabled().iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        [
            "launch",
            "account",
            "change",
            "compliance",
            "partner",
            "family",
            "archival"
        ]
    );
}

#[tokio::test]
async fn the_example_mapping_fits_the_sample_catalogue() {
    let settings = Settings::from_toml(&[&example()]).expect("example is valid");
    let sim = ap_sim::spawn(
        "127.0.0.1:0".parse().unwrap(),
        AllportalSimOptions {
            seed: Some(sample_catalogue()),
            ..AllportalSimOptions::default()
        },
    )
    .await
    .unwrap();
    let mut cfg = settings.allportal.clone();
    cfg.base_url = sim.base_url().parse().unwrap();
    let client = AllportalClient::new(&cfg).unwrap();
    check_upstream(&settings.flows, &client)
        .await
        .expect("every field exists with a fitting type");
}

#[test]
fn a_missing_template_id_names_the_key() {
    let err = load(&LAUNCH.replace("template_id = 20101\n", "")).unwrap_err();
    assert!(
        err.contains("`flows.launch.workspace.template_id`"),
        "{err}"
    );
    assert!(err.contains("missing"), "{err}");
}

#[test]
fn a_value_of_the_wrong_type_names_the_key() {
    let err = load(&LAUNCH.replace("template_id = 20101", "template_id = \"launch\"")).unwrap_err();
    assert!(err.contains("flows.launch.workspace.template_id"), "{err}");
    let err =
        load(&LAUNCH.replace("equals = \"launch_ready\" }", "equals = [\"a\"] }")).unwrap_err();
    assert!(
        err.contains("`flows.launch.trigger.conditions[0]`"),
        "{err}"
    );
}

#[test]
fn an_unknown_key_names_the_key() {
    let err = load(&LAUNCH.replace("template_id", "templat_id")).unwrap_err();
    assert!(err.contains("templat_id"), "{err}");
}

#[test]
fn shape_errors_name_the_key() {
    let cases = [
        (
            LAUNCH.replace(
                "equals = \"launch_ready\" }",
                "equals = \"x\", present = true }",
            ),
            "`flows.launch.trigger.conditions[0]`",
        ),
        (
            LAUNCH.replace("({article_number})", "({article_number)"),
            "`flows.launch.workspace.name`",
        ),
        (
            LAUNCH.replace("\"9830_2\"", "\"article\""),
            "`flows.launch.workspace.categories.\"article\"`",
        ),
        (
            format!("{LAUNCH}\n[flows.launch.records]\nrm_class_id = 1\n"),
            "`flows.launch.records`",
        ),
        (
            format!(
                "{LAUNCH}\n{}",
                LAUNCH.replace("flows.launch", "flows.family")
            ),
            "`flows.family.workspace.bo_type`",
        ),
        (
            LAUNCH.replace(
                "module = \"product\"",
                "module = \"product\"\nevents = [\"moduleobject_touch\"]",
            ),
            "`flows.launch.trigger.events[0]`",
        ),
    ];
    for (mapping, key) in cases {
        let err = load(&mapping).unwrap_err();
        assert!(err.contains(key), "expected {key} in: {err}");
    }
}

#[tokio::test]
async fn an_unknown_field_names_the_key() {
    let err = schema_check(&LAUNCH.replace("= \"article_number\"", "= \"article_no\""))
        .await
        .unwrap_err();
    assert!(
        err.contains("`flows.launch.workspace.categories.\"9830_2\"`"),
        "{err}"
    );
    assert!(err.contains("unknown field `article_no`"), "{err}");
    let err = schema_check(&LAUNCH.replace("{name@en_US}", "{title@en_US}"))
        .await
        .unwrap_err();
    assert!(err.contains("`flows.launch.workspace.name`"), "{err}");
}

#[tokio::test]
async fn a_field_type_mismatch_names_the_key() {
    // A locale on a field that has no locale dimension.
    let err = schema_check(&LAUNCH.replace("({article_number})", "({article_number@en_US})"))
        .await
        .unwrap_err();
    assert!(err.contains("`flows.launch.workspace.name`"), "{err}");
    assert!(err.contains("type mismatch"), "{err}");
    // `equals` on a list field.
    let err =
        schema_check(&LAUNCH.replace("field = \"status\", equals", "field = \"claims\", equals"))
            .await
            .unwrap_err();
    assert!(
        err.contains("`flows.launch.trigger.conditions[0]`"),
        "{err}"
    );
    assert!(err.contains("type mismatch"), "{err}");
    // A relation that is not a relation field.
    let mapping = LAUNCH.replace(
        "[flows.launch.workspace.categories]",
        "relations = [{ field = \"status\", bo_type = \"product_family\" }]\n[flows.launch.workspace.categories]",
    );
    let err = schema_check(&mapping).await.unwrap_err();
    assert!(
        err.contains("`flows.launch.workspace.relations[0].field`"),
        "{err}"
    );
}
