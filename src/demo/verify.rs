//! The demo's verdict: per flow, the expected end state read from the simulators' state.

use serde_json::{Value, json};

use super::scenario::{CHANGE_MAP, COMPLIANCE_MAP, DATASHEET, Facts, latest_sha256};
use super::snapshot::{AllportalView, OpentextView, versions};
use crate::sim::allportal::ids;

/// What one flow left behind, and which of its checks failed.
#[derive(Debug, Default)]
pub struct FlowResult {
    pub flow: &'static str,
    pub object: String,
    /// `id "name"` of each workspace the flow owns.
    pub workspaces: Vec<String>,
    /// Each workspace's team (`role: members; …`), in the order of `workspaces`.
    pub teams: Vec<String>,
    pub documents: usize,
    pub versions: usize,
    pub writebacks: String,
    pub failures: Vec<String>,
}

impl FlowResult {
    fn new(flow: &'static str, object: &str) -> Self {
        Self {
            flow,
            object: object.into(),
            writebacks: "-".into(),
            ..Self::default()
        }
    }

    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    fn check(&mut self, ok: bool, what: impl Into<String>) {
        if !ok {
            self.failures.push(what.into());
        }
    }

    /// Records the workspace (and its documents) or the failure of not finding it.
    fn workspace<'v>(
        &mut self,
        ot: &'v OpentextView,
        ws: Option<&'v Value>,
        what: &str,
    ) -> Option<&'v Value> {
        let Some(ws) = ws else {
            self.failures
                .push(format!("no {what} workspace in OpenText"));
            return None;
        };
        self.workspaces.push(format!(
            "{} \"{}\"",
            ws["id"],
            ws["name"].as_str().unwrap_or_default()
        ));
        let team = ot.team(ws);
        self.check(
            !team.is_empty(),
            format!("no team in {what} workspace {}", ws["id"]),
        );
        self.teams.push(team.join("; "));
        let docs = ot.documents_below(ws);
        self.documents += docs.len();
        self.versions += docs.iter().map(|d| versions(d)).sum::<usize>();
        Some(ws)
    }

    /// The documents of one folder must be exactly `expected`.
    fn folder(&mut self, ot: &OpentextView, ws: &Value, folder: &str, expected: &[&str]) {
        let found = ot.documents_in(ws, folder);
        self.check(
            found == expected,
            format!("folder `{folder}` holds {found:?}, expected {expected:?}"),
        );
    }
}

/// Checks every flow against the simulators' state.
pub fn verify(ot: &OpentextView, ap: &AllportalView, facts: &Facts) -> Vec<FlowResult> {
    vec![
        launch(ot),
        account(ot),
        change(ot, ap),
        compliance(ot),
        partner(ot, ap, facts),
        family(ot, facts),
        archival(ot),
    ]
}

fn launch(ot: &OpentextView) -> FlowResult {
    let mut r = FlowResult::new("launch", "product 4711 Pump A100");
    let Some(ws) = r.workspace(
        ot,
        ot.workspace("product", ids::PRODUCT_PUMP_A100),
        "launch",
    ) else {
        return r;
    };
    r.check(
        ws["categories"]["9830"]["9830_2"] == "4711",
        "category Product Data lacks the article number",
    );
    r.check(
        ws["categories"]["9830"]["9830_10"] == json!(["energy efficient"]),
        "the multi-value attribute Claims is not the product's claims as an array",
    );
    r.folder(
        ot,
        ws,
        "Master Data",
        &["4711 master data.html", "4711 master data.json"],
    );
    r.folder(
        ot,
        ws,
        "Technical Specifications",
        &["pump-a100-datasheet.pdf"],
    );
    r.folder(
        ot,
        ws,
        "Pricing",
        &["pricing-2025.csv", "pricing-2025.json"],
    );
    r.folder(ot, ws, "Marketing Assets", &["pump-a100.png"]);
    r
}

fn account(ot: &OpentextView) -> FlowResult {
    let mut r = FlowResult::new("account", "opportunity ACME plant retrofit 2025");
    let ws = ot.workspace("opportunity", ids::OPPORTUNITY_ACME_2025);
    let Some(ws) = r.workspace(ot, ws, "opportunity") else {
        return r;
    };
    r.folder(
        ot,
        ws,
        "Products",
        &[
            "4711 Pump A100 product data.html",
            "4711 Pump A100 product data.json",
            "5810 Valve V10 product data.html",
            "5810 Valve V10 product data.json",
        ],
    );
    r.folder(
        ot,
        ws,
        "Configurations",
        &[
            "4711 configuration options.html",
            "5810 configuration options.html",
        ],
    );
    r.folder(ot, ws, "Images", &["pump-a100.png"]);
    r.folder(ot, ws, "Brochures", &["pump-a100-datasheet.pdf"]);
    r
}

fn change(ot: &OpentextView, ap: &AllportalView) -> FlowResult {
    let mut r = FlowResult::new("change", "product 4712 Pump A200");
    let reviews = ot.workspaces("product_change", |id| {
        id.starts_with(ids::PRODUCT_PUMP_A200)
    });
    r.check(
        reviews.len() == 1,
        format!("{} change-review workspaces, expected 1", reviews.len()),
    );
    let Some(ws) = r.workspace(ot, reviews.first().copied(), "change-review") else {
        return r;
    };
    let docs = ot.documents_in(ws, "Change Documents");
    r.check(
        docs.len() == 2,
        format!("change documents {docs:?}, expected JSON and HTML"),
    );
    let processes = ot.processes(CHANGE_MAP);
    r.check(
        processes.len() == 1 && processes[0]["decision"]["decision"] == "approved",
        "the change-review workflow was not completed as approved",
    );
    let field = |name| ap.field("product", ids::PRODUCT_PUMP_A200, name);
    r.check(
        field("packaging") == "blister",
        "the packaging change is not in 4ALLPORTAL",
    );
    r.check(
        field("approval_status") == "approved",
        "approval_status was not written back",
    );
    r.check(
        field("approval_comment") == "Blister packaging checked",
        "approval_comment was not written back",
    );
    r.check(
        field("approved_by") == "jdoe",
        "approved_by was not written back",
    );
    r.check(
        field("approved_at").is_string(),
        "approved_at was not written back",
    );
    r.writebacks = format!(
        "approval_status={} by {}",
        text(&field("approval_status")),
        text(&field("approved_by"))
    );
    r
}

fn compliance(ot: &OpentextView) -> FlowResult {
    let mut r = FlowResult::new("compliance", "product 4711 Pump A100");
    let ws = ot.workspace("product_compliance", ids::PRODUCT_PUMP_A100);
    let Some(ws) = r.workspace(ot, ws, "compliance") else {
        return r;
    };
    let claims = ot
        .child(ws, "Claims")
        .and_then(|f| ot.child(f, "4711 claims.json"));
    r.check(
        claims.is_some_and(|c| c["categories"]["9840"]["9840_2"] == ids::PRODUCT_PUMP_A100),
        "the claims document is not tied to the product-data version",
    );
    r.folder(ot, ws, "Images", &["pump-a100.png"]);
    r.folder(ot, ws, "Brochures", &["pump-a100-datasheet.pdf"]);
    let processes = ot.processes(COMPLIANCE_MAP);
    r.check(
        processes.len() == 1 && processes[0]["decision"]["decision"] == "rejected",
        "the compliance review was not completed as rejected",
    );
    r.check(
        ws["categories"]["9830"]["9830_9"] == "rejected",
        "the workspace does not show the rejected review",
    );
    r
}

fn partner(ot: &OpentextView, ap: &AllportalView, facts: &Facts) -> FlowResult {
    let mut r = FlowResult::new("partner", "partner Nordic Distribution AB");
    for product in [ids::PRODUCT_PUMP_A100, ids::PRODUCT_PUMP_A200] {
        let key = format!("{}:{product}", ids::PARTNER_DISTRIBUTOR);
        let ws = ot.workspace("partner_product", &key);
        if let Some(ws) = r.workspace(ot, ws, &format!("partner ({product})")) {
            r.check(
                ot.child(ws, "Channel Content").is_some(),
                "no Channel Content folder",
            );
        }
    }
    let file_id = crate::flows::partner::import_id("4ALLPORTAL", facts.partner_node, 1);
    let file = ap.object("file", &file_id);
    r.check(
        file.is_some(),
        "the approved partner document was not imported into 4ALLPORTAL",
    );
    if let Some(file) = file {
        r.check(
            file["asset_type"][0]["value"] == "partner_document",
            "the imported file is not marked as a partner document",
        );
        r.check(
            file["_media"]["Original"]["sha256"] == facts.partner_document_sha256.as_str(),
            "the imported file's content differs from the partner's upload",
        );
    }
    let linked = ap.field("product", ids::PRODUCT_PUMP_A100, "partner_documents");
    r.check(
        linked == json!([file_id]),
        "the imported file is not linked to Pump A100",
    );
    r.writebacks = format!("1 file imported, linked to 4711 ({})", short(&file_id));
    r
}

fn family(ot: &OpentextView, facts: &Facts) -> FlowResult {
    let mut r = FlowResult::new("family", "product family Pumps");
    let ws = ot.workspace("product_family", ids::FAMILY_PUMPS);
    let Some(ws) = r.workspace(ot, ws, "family") else {
        return r;
    };
    r.folder(ot, ws, "Manuals", &["pumps-manual.pdf"]);
    let manual = ot
        .child(ws, "Manuals")
        .and_then(|f| ot.child(f, "pumps-manual.pdf"));
    r.check(
        manual.is_some_and(|m| {
            versions(m) == 2 && m["versions"][1]["sha256"] == facts.manual_edition_sha256.as_str()
        }),
        "the manual's new edition is not its second version",
    );
    let launch = ot.workspace("product", ids::PRODUCT_PUMP_A100);
    let related =
        launch.is_some_and(|l| l["workspace"].to_string().contains(&ws["id"].to_string()));
    r.check(
        related,
        "the launch workspace of Pump A100 is not related to the family workspace",
    );
    r
}

fn archival(ot: &OpentextView) -> FlowResult {
    let mut r = FlowResult::new("archival", "product 5810 Valve V10");
    let ws = ot.workspace("product_archive", ids::PRODUCT_VALVE_V10);
    let Some(ws) = r.workspace(ot, ws, "archive") else {
        return r;
    };
    r.folder(
        ot,
        ws,
        "Final Data",
        &["5810 final data.html", "5810 final data.json"],
    );
    r.folder(
        ot,
        ws,
        "Approval History",
        &["5810 approval history.html", "5810 approval history.json"],
    );
    r.check(
        ws["rm"]["class_id"].is_i64(),
        "the workspace has no records-management classification",
    );
    r.check(
        ws["holds"].as_array().is_some_and(|h| !h.is_empty()),
        "the workspace is not on legal hold",
    );
    let docs = ot.documents_below(ws);
    r.check(
        !docs.is_empty() && docs.iter().all(|d| d["finalized"] == true),
        "not every archived document is a finalized record",
    );
    let roles = ws["workspace"]["roles"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    r.check(
        !roles.is_empty()
            && roles
                .iter()
                .all(|role| role["permissions"] == json!(["see", "see_contents"])),
        "the workspace is not read-only for its roles",
    );
    r
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or("(none)").to_string()
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// The revised datasheet: each workspace that held it before the revision has it as a new
/// (second) version, and every copy made since starts with it. Returns how many got a new
/// version, and what is wrong.
pub fn datasheet(ot: &OpentextView, facts: &Facts) -> (usize, Vec<String>) {
    let docs: Vec<&Value> = ot.documents_named(DATASHEET).collect();
    let revised = |d: &&&Value| latest_sha256(d) == Some(facts.datasheet_sha256.as_str());
    let new_versions = docs
        .iter()
        .filter(revised)
        .filter(|d| versions(d) == 2)
        .count();
    let current = docs.iter().filter(revised).count();
    let mut failures = Vec::new();
    if facts.datasheet_holders < 3 {
        failures.push(format!(
            "the datasheet was in {} workspaces before its revision, expected 3",
            facts.datasheet_holders
        ));
    }
    if new_versions != facts.datasheet_holders {
        failures.push(format!(
            "{new_versions} of the {} copies there before got the revision as a new version",
            facts.datasheet_holders
        ));
    }
    if current != docs.len() {
        failures.push(format!(
            "the revision is the newest version of {current} of {} copies",
            docs.len()
        ));
    }
    (new_versions, failures)
}
