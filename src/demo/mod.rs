//! `xecm-bridge demo`: both simulators and the bridge in one process, every flow triggered by
//! real signed webhooks and callbacks, and a verdict read from the simulators' state.
//!
//! Exit code 0 only when every flow reached its expected end state in the two (simulated)
//! systems; the bridge's own bookkeeping only supplies the attempts and times shown.

mod scenario;
mod snapshot;
mod stack;
mod stats;
mod table;
mod verify;

use std::process::ExitCode;
use std::time::Instant;

use crate::telemetry::LogConfig;
use scenario::Scenario;
use snapshot::{AllportalView, OpentextView};
use stack::Stack;

/// Runs the demo; with `keep_running`, leaves everything up until ctrl-c afterwards.
pub async fn run(keep_running: bool) -> anyhow::Result<ExitCode> {
    // Quiet unless asked: the progress lines and the table are the output.
    crate::telemetry::init_logging(&LogConfig {
        filter: "warn".into(),
        ..LogConfig::default()
    });
    let started = Instant::now();
    let stack = Stack::start().await?;
    println!("xecm-bridge demo");
    println!("  4ALLPORTAL simulator  {}", stack.allportal.base_url());
    println!("  OpenText simulator    {}", stack.opentext.base_url());
    println!(
        "  bridge                {} (store {})",
        stack.bridge_url,
        stack.store_path().display()
    );
    println!();
    let mut scenario = Scenario::new(&stack);
    let story = scenario.run().await;
    if let Err(error) = &story {
        println!("✗");
        println!("\nthe scenario stopped: {error:#}");
    }
    let results = verify::verify(
        &OpentextView::of(&stack.opentext),
        &AllportalView::of(&stack.allportal),
        &scenario.facts,
    );
    let (datasheets, datasheet_failures) =
        verify::datasheet(&OpentextView::of(&stack.opentext), &scenario.facts);
    let work = stats::collect(stack.store.as_ref()).await?;
    let echoes = stats::echoes(stack.store.as_ref(), &scenario.facts.steps).await?;
    println!();
    print!("{}", table::render(&results, &work));
    println!();
    println!(
        "echoes of the bridge's own write-backs: {} recognised, {} write(s) caused",
        echoes.recognised, echoes.caused_writes
    );
    println!(
        "datasheet revision (an event on the file only, none on the product): new version in \
         {datasheets} workspaces holding it"
    );
    println!();
    let failures: Vec<String> = results
        .iter()
        .flat_map(|r| r.failures.iter().map(move |f| format!("{}: {f}", r.flow)))
        .chain(datasheet_failures.iter().map(|f| format!("datasheet: {f}")))
        .collect();
    for failure in &failures {
        println!("check failed: {failure}");
    }
    let passed = story.is_ok() && failures.is_empty() && echoes.caused_writes == 0;
    let verdict = if passed {
        "all seven flows reached their expected end state, the datasheet revision every workspace holding it"
    } else {
        "the demo FAILED"
    };
    println!(
        "{verdict} (checked in the simulators' state) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    if keep_running {
        explore(&stack).await;
    }
    stack.stop().await?;
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Prints where to look around and waits for ctrl-c (or SIGTERM).
async fn explore(stack: &Stack) {
    let ap = stack.allportal.control_url();
    let ot = stack.opentext.control_url();
    println!();
    println!("Everything stays up until ctrl-c:");
    println!("  bridge             {}", stack.bridge_url);
    println!(
        "    console          {}/ui/  (sign in with the token {})",
        stack.bridge_url, stack.admin_token
    );
    println!(
        "    admin API        {}/api/v1/events  (Authorization: Bearer {})",
        stack.bridge_url, stack.admin_token
    );
    println!(
        "    health, metrics  {0}/healthz  {0}/metrics",
        stack.bridge_url
    );
    println!(
        "  4ALLPORTAL         {}/api/modules/...  (Authorization: Bearer {})",
        stack.allportal.base_url(),
        stack.allportal_api_key
    );
    println!("    state, requests  {ap}/state  {ap}/requests");
    println!(
        "    send a webhook   POST {ap}/webhooks/send {{\"module\":\"product\",\"object_id\":\"...\",\"event\":\"moduleobject_modify\"}}"
    );
    println!(
        "  OpenText           {}/api/v1/...  (POST /api/v1/auth as {} / {})",
        stack.opentext.base_url(),
        crate::sim::opentext::SAMPLE_ADMIN_USER,
        crate::sim::opentext::SAMPLE_ADMIN_PASSWORD
    );
    println!("    state, requests  {ot}/state  {ot}/requests");
    println!(
        "    finish workflow  POST {ot}/workflows/{{id}}/complete {{\"decision\":\"approved\"}}"
    );
    let stop = tokio_util::sync::CancellationToken::new();
    crate::server::cancel_on_signal(stop.clone()).await;
    println!("stopping");
}
