//! The demo's story: one trigger per flow, each a real signed webhook or callback sent by a
//! simulator, then a wait until the bridge's worker has nothing left to do.

use std::io::Write as _;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::snapshot::{OpentextView, versions};
use super::stack::Stack;
use crate::clients::FileUpload;
use crate::sim::allportal::{ids, sample_pdf};

/// The whole scenario must settle within this time; a bridge that stops making progress fails
/// the demo instead of hanging it.
const DEADLINE: Duration = Duration::from_secs(60);
const STEPS: usize = 8;

/// Workflow maps of the example mapping (`[flows.change.workflow]`, `[flows.compliance.workflow]`).
pub const CHANGE_MAP: i64 = 6686;
pub const COMPLIANCE_MAP: i64 = 6687;

/// What the scenario did that the checks need to know.
#[derive(Debug, Default)]
pub struct Facts {
    /// SHA-256 of the second edition of the pumps manual uploaded to 4ALLPORTAL.
    pub manual_edition_sha256: String,
    /// SHA-256 of the revised A100 datasheet, and how many workspaces held the datasheet
    /// before the revision.
    pub datasheet_sha256: String,
    pub datasheet_holders: usize,
    /// The document a partner uploaded in OpenText and that was then approved.
    pub partner_node: i64,
    pub partner_document_sha256: String,
    /// When each step began and ended (unix ms), to attribute events to the step they belong to.
    pub steps: Vec<(i64, i64)>,
}

pub struct Scenario<'a> {
    stack: &'a Stack,
    http: reqwest::Client,
    deadline: Instant,
    step: usize,
    pub facts: Facts,
}

impl<'a> Scenario<'a> {
    pub fn new(stack: &'a Stack) -> Self {
        Self {
            stack,
            http: reqwest::Client::new(),
            deadline: Instant::now() + DEADLINE,
            step: 0,
            facts: Facts::default(),
        }
    }

    /// Runs every step in an order where each flow finds what it relates to (the family
    /// workspace before the launch workspace that names it as parent), then the datasheet
    /// revision that reaches the workspaces holding it.
    pub async fn run(&mut self) -> anyhow::Result<()> {
        self.family().await?;
        self.launch().await?;
        self.compliance().await?;
        self.account().await?;
        self.datasheet().await?;
        self.change().await?;
        self.partner().await?;
        self.archival().await?;
        self.close_step();
        Ok(())
    }

    fn close_step(&mut self) {
        if let Some(last) = self.facts.steps.last_mut() {
            last.1 = crate::store::now_millis();
        }
    }

    fn begin(&mut self, flow: &str, what: &str) {
        self.close_step();
        let now = crate::store::now_millis();
        self.facts.steps.push((now, now));
        self.step += 1;
        print!("[{}/{STEPS}] {flow:<10} {what} … ", self.step);
        let _ = std::io::stdout().flush();
    }

    fn done(result: &str) {
        println!("{result} ✓");
    }

    async fn family(&mut self) -> anyhow::Result<()> {
        self.begin("family", "documentation of family Pumps changed");
        self.webhook("product_family", ids::FAMILY_PUMPS).await?;
        // A new edition of the manual: the workspace must keep one document with a new version.
        let edition = sample_pdf("Pumps operating manual, edition 2");
        self.facts.manual_edition_sha256 = crate::flows::hash::sha256_hex(&edition);
        self.replace_media(ids::FILE_PUMPS_MANUAL, "pumps-manual.pdf", edition)
            .await?;
        self.webhook("product_family", ids::FAMILY_PUMPS).await?;
        let view = self.opentext();
        let ws = self.workspace_note(&view, "product_family", ids::FAMILY_PUMPS)?;
        let manual = view
            .child(
                ws_node(&view, "product_family", ids::FAMILY_PUMPS)?,
                "Manuals",
            )
            .and_then(|f| view.children(f).find(|n| n["name"] == "pumps-manual.pdf"))
            .map(versions)
            .unwrap_or(0);
        Self::done(&format!("{ws}, manual at version {manual}"));
        Ok(())
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        self.begin("launch", "product 4711 Pump A100 is launch-ready");
        self.webhook("product", ids::PRODUCT_PUMP_A100).await?;
        let ws = self.workspace_note(&self.opentext(), "product", ids::PRODUCT_PUMP_A100)?;
        Self::done(&ws);
        Ok(())
    }

    /// The launch-ready event of step 2 also started the compliance review (the compliance
    /// trigger matches it); a reviewer rejects it in OpenText.
    async fn compliance(&mut self) -> anyhow::Result<()> {
        self.begin("compliance", "review of Pump A100 rejected in OpenText");
        let pid = self.open_process(COMPLIANCE_MAP)?;
        self.complete(pid, "rejected", "Energy label missing on the packaging")
            .await?;
        let ws = self.workspace_note(
            &self.opentext(),
            "product_compliance",
            ids::PRODUCT_PUMP_A100,
        )?;
        Self::done(&format!("{ws}, workflow {pid} rejected"));
        Ok(())
    }

    async fn account(&mut self) -> anyhow::Result<()> {
        self.begin(
            "account",
            "opportunity ACME retrofit 2025 gets Valve V10 too",
        );
        self.edit(
            "opportunity",
            ids::OPPORTUNITY_ACME_2025,
            json!({"products": [{"value": [ids::PRODUCT_PUMP_A100, ids::PRODUCT_VALVE_V10], "dimensions": null}]}),
        )
        .await?;
        let ws =
            self.workspace_note(&self.opentext(), "opportunity", ids::OPPORTUNITY_ACME_2025)?;
        Self::done(&ws);
        Ok(())
    }

    /// A packaging change on a product still in development (so that only the change flow
    /// reacts), approved in OpenText; the decision comes back into 4ALLPORTAL.
    async fn change(&mut self) -> anyhow::Result<()> {
        self.begin(
            "change",
            "packaging of Pump A200 carton → blister, approved",
        );
        self.edit(
            "product",
            ids::PRODUCT_PUMP_A200,
            json!({"packaging": [{"value": "blister", "dimensions": null}]}),
        )
        .await?;
        let pid = self.open_process(CHANGE_MAP)?;
        self.complete(pid, "approved", "Blister packaging checked")
            .await?;
        let view = self.opentext();
        let ws = view
            .workspaces("product_change", |id| {
                id.starts_with(ids::PRODUCT_PUMP_A200)
            })
            .first()
            .map(|ws| format!("workspace {} \"{}\"", ws["id"], text(&ws["name"])))
            .ok_or_else(|| anyhow!("no change-review workspace for Pump A200"))?;
        Self::done(&format!("{ws}, workflow {pid} approved"));
        Ok(())
    }

    /// Content shared with a distributor; the distributor uploads a translation, which is
    /// approved internally and comes back into 4ALLPORTAL.
    async fn partner(&mut self) -> anyhow::Result<()> {
        self.begin(
            "partner",
            "Nordic Distribution AB shares two pumps, returns a translation",
        );
        self.webhook("partner", ids::PARTNER_DISTRIBUTOR).await?;
        let key = format!("{}:{}", ids::PARTNER_DISTRIBUTOR, ids::PRODUCT_PUMP_A100);
        let view = self.opentext();
        let ws = ws_node(&view, "partner_product", &key)?;
        let content = "Fiche technique Pompe A100 : débit 120 l/min, pression 6 bar.\n";
        self.facts.partner_document_sha256 = crate::flows::hash::sha256_hex(content.as_bytes());
        let uploaded = self
            .control(
                &self.stack.opentext.control_url(),
                "partner/upload",
                json!({"workspace_id": ws["id"], "name": "Datasheet FR.txt",
                       "content": content, "mime_type": "text/plain"}),
            )
            .await?;
        self.facts.partner_node = uploaded["node_id"]
            .as_i64()
            .ok_or_else(|| anyhow!("partner upload answered {uploaded}"))?;
        let approved = self
            .control(
                &self.stack.opentext.control_url(),
                "partner/approve",
                json!({"node_id": self.facts.partner_node}),
            )
            .await?;
        accepted(&approved["callback"], "partner approval callback")?;
        self.settle().await?;
        let count = self
            .opentext()
            .workspaces("partner_product", |id| {
                id.starts_with(ids::PARTNER_DISTRIBUTOR)
            })
            .len();
        Self::done(&format!("{count} workspaces, translation imported"));
        Ok(())
    }

    async fn archival(&mut self) -> anyhow::Result<()> {
        self.begin("archival", "product 5810 Valve V10 reached end of life");
        self.webhook("product", ids::PRODUCT_VALVE_V10).await?;
        let ws =
            self.workspace_note(&self.opentext(), "product_archive", ids::PRODUCT_VALVE_V10)?;
        Self::done(&format!("{ws}, records finalized"));
        Ok(())
    }

    /// A revised datasheet in 4ALLPORTAL, with an event on the file only: the dependency index
    /// takes it to every workspace that holds the datasheet by then (launch, compliance,
    /// account) as a new version; the partner workspaces made later start with it. (It runs
    /// before the partner step: the partner import links a file to the product, a change of
    /// product data after which the compliance flow's next run would start a new review.)
    async fn datasheet(&mut self) -> anyhow::Result<()> {
        self.begin(
            "datasheet",
            "datasheet of Pump A100 revised, no product event",
        );
        self.facts.datasheet_holders = self
            .opentext()
            .documents_named(DATASHEET)
            .filter(|d| versions(d) == 1)
            .count();
        let revision = sample_pdf("Pump A100 datasheet, revision B");
        self.facts.datasheet_sha256 = crate::flows::hash::sha256_hex(&revision);
        self.replace_media(ids::FILE_A100_DATASHEET, DATASHEET, revision)
            .await?;
        self.webhook("file", ids::FILE_A100_DATASHEET).await?;
        let view = self.opentext();
        let current = view
            .documents_named(DATASHEET)
            .filter(|d| latest_sha256(d) == Some(self.facts.datasheet_sha256.as_str()))
            .count();
        Self::done(&format!(
            "new version in {current} of {} workspaces",
            self.facts.datasheet_holders
        ));
        Ok(())
    }

    // --- triggers ------------------------------------------------------------------------

    /// Has the 4ALLPORTAL simulator send its signed change webhook for one object.
    async fn webhook(&self, module: &str, id: &str) -> anyhow::Result<()> {
        let delivery = self
            .control(
                &self.stack.allportal.control_url(),
                "webhooks/send",
                json!({"module": module, "object_id": id, "event": "moduleobject_modify"}),
            )
            .await?;
        accepted(&delivery, "change webhook")?;
        self.settle().await
    }

    /// Changes an object as a 4ALLPORTAL user would, which sends the signed webhook.
    async fn edit(&self, module: &str, id: &str, fields: Value) -> anyhow::Result<()> {
        let answer = self
            .control(
                &self.stack.allportal.control_url(),
                &format!("objects/{module}/{id}?webhook=true"),
                fields,
            )
            .await?;
        accepted(&answer["webhook"]["Ok"], "change webhook")?;
        self.settle().await
    }

    /// Completes a workflow in OpenText; the simulator sends the signed decision callback.
    async fn complete(&self, pid: i64, decision: &str, comment: &str) -> anyhow::Result<()> {
        let answer = self
            .control(
                &self.stack.opentext.control_url(),
                &format!("workflows/{pid}/complete"),
                json!({"decision": decision, "comment": comment, "approver": "jdoe"}),
            )
            .await?;
        accepted(&answer["callback"], "workflow callback")?;
        self.settle().await
    }

    /// Uploads a new original of a 4ALLPORTAL file object through its REST API.
    async fn replace_media(&self, id: &str, name: &str, content: Vec<u8>) -> anyhow::Result<()> {
        let size = content.len() as u64;
        let bytes = bytes::Bytes::from(content);
        let upload = FileUpload::new(
            futures::stream::once(async move { Ok::<_, std::io::Error>(bytes) }),
            size,
            name,
            "application/pdf",
        );
        self.stack
            .upstreams
            .allportal
            .upload_media("file", id, None, upload)
            .await
            .with_context(|| format!("cannot upload a new original of {name}"))
    }

    async fn control(&self, root: &str, path: &str, body: Value) -> anyhow::Result<Value> {
        let url = format!("{root}/{path}");
        let response = self
            .http
            .post(&url)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("POST {url} answered {status}: {answer}");
        }
        Ok(answer)
    }

    // --- waiting and reading -------------------------------------------------------------

    /// Waits until no event or job is left, then fails on any dead letter.
    async fn settle(&self) -> anyhow::Result<()> {
        loop {
            let backlog = self.stack.store.backlog(crate::store::now_millis()).await?;
            if backlog.dead_letters > 0 {
                bail!(
                    "{} event(s) failed for good (dead letters)",
                    backlog.dead_letters
                );
            }
            if backlog.events == 0 && backlog.jobs == 0 {
                return Ok(());
            }
            if Instant::now() >= self.deadline {
                bail!(
                    "the bridge did not finish its work within {} s: {} event(s), {} job(s) left",
                    DEADLINE.as_secs(),
                    backlog.events,
                    backlog.jobs
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn opentext(&self) -> OpentextView {
        OpentextView::of(&self.stack.opentext)
    }

    /// The one running process of a workflow map.
    fn open_process(&self, map: i64) -> anyhow::Result<i64> {
        let view = self.opentext();
        let open: Vec<i64> = view
            .processes(map)
            .into_iter()
            .filter(|p| p["status"] != "completed")
            .filter_map(|p| p["id"].as_i64())
            .collect();
        match open.as_slice() {
            [pid] => Ok(*pid),
            _ => bail!(
                "expected one running workflow of map {map}, found {}",
                open.len()
            ),
        }
    }

    fn workspace_note(
        &self,
        view: &OpentextView,
        bo_type: &str,
        bo_id: &str,
    ) -> anyhow::Result<String> {
        let ws = ws_node(view, bo_type, bo_id)?;
        Ok(format!("workspace {} \"{}\"", ws["id"], text(&ws["name"])))
    }
}

fn ws_node<'v>(view: &'v OpentextView, bo_type: &str, bo_id: &str) -> anyhow::Result<&'v Value> {
    view.workspace(bo_type, bo_id)
        .ok_or_else(|| anyhow!("no {bo_type} workspace for {bo_id}"))
}

/// The file name of the A100 datasheet in every workspace that holds it.
pub const DATASHEET: &str = "pump-a100-datasheet.pdf";

/// SHA-256 of a document's newest version.
pub fn latest_sha256(node: &Value) -> Option<&str> {
    node["versions"].as_array()?.last()?["sha256"].as_str()
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

/// A simulator's delivery report: the bridge must have answered 202.
fn accepted(delivery: &Value, what: &str) -> anyhow::Result<()> {
    if delivery["status"] == 202 {
        Ok(())
    } else {
        bail!("the bridge did not accept the {what}: {delivery}")
    }
}
