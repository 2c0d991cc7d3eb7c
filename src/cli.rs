//! The command line: `serve`, `check-config`, `migrate`, `healthcheck`, `plan`, `backfill`,
//! `sim`, `demo`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::flows::register::WebhookAuth;
use crate::server::{self, Role};
use crate::{store, telemetry};

/// Exit codes beyond 0 (success) and 1 (any other failure).
pub mod exit_code {
    /// The configuration does not load or is invalid (every command).
    pub const INVALID_CONFIG: u8 = 2;
    /// `check-config --online`: OpenText or 4ALLPORTAL could not be asked.
    pub const UNREACHABLE: u8 = 3;
    /// `check-config --online`: the mapping does not fit the live systems.
    pub const CHECK_FAILED: u8 = 4;
}

#[derive(Debug, Parser)]
#[command(
    name = "xecm-bridge",
    version,
    about = "Connects 4ALLPORTAL with OpenText Extended ECM Business Workspaces",
    after_help = "Exit codes: 0 success, 1 failure, 2 invalid configuration, 3 (check-config \
                  --online) a system could not be reached, 4 (check-config --online) the \
                  mapping does not fit the live systems."
)]
pub struct Cli {
    /// Configuration file (TOML). Environment variables `XECM_BRIDGE__SECTION__KEY` override it.
    #[arg(long, short, global = true, env = "XECM_BRIDGE_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service: webhooks, admin API and workers (see --role).
    Serve {
        #[arg(long, value_enum, default_value_t = Role::All)]
        role: Role,
    },
    /// Validate the configuration and print it as it would run, secrets redacted. With
    /// `--online`, also check every id and name the flow mapping uses against the live
    /// OpenText and 4ALLPORTAL. Exit codes: 0 valid, 2 invalid configuration, 3 a system could
    /// not be reached, 4 the online check found problems (each printed with its key).
    CheckConfig {
        /// Check the mapping against the live systems.
        #[arg(long)]
        online: bool,
    },
    /// Apply the store's migrations and exit.
    Migrate,
    /// Exit 0 if the service answers `GET /healthz` (for container probes without curl). Reads
    /// only `server.listen` (file or environment); needs no secrets.
    Healthcheck {
        /// Defaults to `http://<server.listen>/healthz`.
        #[arg(long)]
        url: Option<String>,
    },
    /// Show what the flows would do for an event, writing nothing: the event file is a webhook
    /// body as 4ALLPORTAL (or, with `--source opentext`, an OpenText callback) would send it.
    Plan {
        #[arg(long)]
        event: PathBuf,
        #[arg(long, default_value = "allportal")]
        source: String,
        /// One flow; every flow that wants the event when absent.
        #[arg(long)]
        flow: Option<String>,
    },
    /// Enqueue a reconcile of every 4ALLPORTAL object a flow's trigger matches (the objects that
    /// existed before the flow), page by page, resumable: running the same command again
    /// (after ctrl-c, a kill or `cancel`) goes on from where it stopped. A running `serve`
    /// carries out the reconciles (and takes over an interrupted enumeration). Shows a progress
    /// bar on a terminal, log lines otherwise.
    Backfill {
        /// The flow, e.g. `launch`.
        #[arg(long)]
        flow: String,
        /// A 4APQL condition on the trigger module's objects, e.g. `status = 'active'`.
        #[arg(long = "where", value_name = "CONDITION")]
        condition: Option<String>,
        /// Objects enqueued per second, e.g. `20` or `20/s` (default: as fast as 4ALLPORTAL
        /// answers; OpenText is protected by `opentext.max_requests_per_sec`).
        #[arg(long, value_parser = parse_rate)]
        rate: Option<f64>,
        /// Count the objects and list a few; enqueue nothing.
        #[arg(long)]
        dry_run: bool,
        /// Return once every object is enqueued instead of following the reconciles.
        #[arg(long)]
        no_wait: bool,
    },
    /// Register the bridge with an upstream system: `allportal` creates or updates the bridge's
    /// webhook in 4ALLPORTAL from the configured flows' triggers (found by its URL,
    /// `server.public_url` + `/webhooks/allportal`) and prints the difference; `opentext`
    /// prints what the OpenText side must send for callbacks.
    Register {
        #[command(subcommand)]
        system: RegisterSystem,
    },
    /// Run a simulator of one upstream system (for exploring and testing; no configuration needed).
    #[cfg(feature = "sim")]
    Sim(crate::sim::SimArgs),
    /// Run both simulators and the bridge in one process, drive all seven flows end to end and
    /// check the result in the simulators (no configuration needed).
    #[cfg(feature = "sim")]
    Demo {
        /// Leave everything running afterwards and print the URLs to explore (until ctrl-c).
        #[arg(long)]
        keep_running: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum RegisterSystem {
    /// Create or update the 4ALLPORTAL webhook; a second run changes nothing.
    Allportal {
        /// Print the difference only.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print the callback URL, signature and body OpenText workflows must send.
    Opentext,
}

pub fn run(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    };
    // `serve` has already drained within its shutdown budget; a task still blocked (on a stuck
    // disk, say) must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    code
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    // Commands that need no (or only part of the) configuration come first.
    match cli.command {
        #[cfg(feature = "sim")]
        Command::Sim(args) => {
            telemetry::init_logging(&crate::telemetry::LogConfig::default());
            crate::sim::run(args).await?;
            return Ok(ExitCode::SUCCESS);
        }
        #[cfg(feature = "sim")]
        Command::Demo { keep_running } => return crate::demo::run(keep_running).await,
        Command::Healthcheck { url } => {
            // A probe must work without the secrets the full configuration needs.
            let url = match url {
                Some(url) => url,
                None => health_url(crate::config::listen_address(cli.config.as_deref())?),
            };
            return Ok(healthcheck(&url).await);
        }
        _ => {}
    }
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("error: {error}");
            return Ok(ExitCode::from(exit_code::INVALID_CONFIG));
        }
    };
    match cli.command {
        Command::Serve { role } => {
            telemetry::init_logging(&settings.log);
            let listener = tokio::net::TcpListener::bind(settings.server.listen)
                .await
                .with_context(|| format!("cannot listen on {}", settings.server.listen))?;
            let on_problem = settings.mapping_check.on_problem;
            let state = server::build_state(settings).await?;
            server::check_mapping(&state, on_problem).await?;
            let shutdown = CancellationToken::new();
            tokio::spawn(server::cancel_on_signal(shutdown.clone()));
            server::run(state, role, listener, shutdown).await?;
        }
        Command::CheckConfig { online } => return Ok(check_config(&settings, online).await),
        Command::Migrate => {
            telemetry::init_logging(&settings.log);
            let store = store::open(&settings.store).await?;
            store.migrate().await.context("migration failed")?;
            store.readiness().await?;
            store.close().await;
            println!("migrations applied ({})", store.backend());
        }
        Command::Plan {
            event,
            source,
            flow,
        } => {
            telemetry::init_logging(&settings.log);
            let plans = plan_file(settings, &event, &source, flow.as_deref()).await?;
            println!("{}", serde_json::to_string_pretty(&plans)?);
        }
        Command::Backfill {
            flow,
            condition,
            rate,
            dry_run,
            no_wait,
        } => {
            telemetry::init_logging(&settings.log);
            let request = crate::flows::backfill::BackfillRequest {
                flow,
                condition: condition.filter(|c| !c.trim().is_empty()),
                rate,
            };
            return backfill(settings, request, dry_run, !no_wait).await;
        }
        Command::Register { system } => {
            telemetry::init_logging(&settings.log);
            let Some(public_url) = settings.server.public_url.clone() else {
                eprintln!(
                    "error: `server.public_url` is not set: the URL under which 4ALLPORTAL and \
                     OpenText reach the bridge"
                );
                return Ok(ExitCode::from(exit_code::INVALID_CONFIG));
            };
            match system {
                RegisterSystem::Allportal { dry_run } => {
                    return register_allportal(settings, &public_url, dry_run).await;
                }
                RegisterSystem::Opentext => print_opentext_callback(&settings, &public_url),
            }
        }
        Command::Healthcheck { .. } => unreachable!("handled above"),
        #[cfg(feature = "sim")]
        Command::Sim(_) | Command::Demo { .. } => unreachable!("handled above"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `check-config [--online]`; see [`exit_code`].
async fn check_config(settings: &Settings, online: bool) -> ExitCode {
    let invalid = |error: &dyn std::fmt::Display| {
        eprintln!("error: {error}");
        ExitCode::from(exit_code::INVALID_CONFIG)
    };
    if let Err(error) = crate::ingest::Verifiers::new(&settings.sources) {
        return invalid(&error);
    }
    // Builds both clients (no network): reads and parses the CA and client certificates.
    let upstreams = match crate::clients::Upstreams::new(&settings.allportal, &settings.opentext) {
        Ok(upstreams) => upstreams,
        Err(error) => return invalid(&format!("cannot build the upstream clients: {error}")),
    };
    println!("{}", settings.redacted_toml());
    eprintln!("configuration is valid");
    if !online {
        return ExitCode::SUCCESS;
    }
    let report = crate::flows::check::check_online(
        &settings.flows,
        &upstreams.opentext,
        &upstreams.allportal,
    )
    .await;
    for problem in &report.problems {
        eprintln!("problem: {problem}");
    }
    for system in &report.unreachable {
        eprintln!("unreachable: {system}");
    }
    let webhook_drift = match webhook_drift(settings, &upstreams.allportal).await {
        Ok(drift) => drift,
        Err(error) => {
            eprintln!("unreachable: 4ALLPORTAL webhooks: {error}");
            return ExitCode::from(exit_code::UNREACHABLE);
        }
    };
    if webhook_drift {
        eprintln!(
            "the 4ALLPORTAL webhook differs from what the flows need: run `register allportal`"
        );
        return ExitCode::from(exit_code::CHECK_FAILED);
    }
    if !report.problems.is_empty() {
        eprintln!(
            "the mapping does not fit the live systems: {} problem(s)",
            report.problems.len()
        );
        ExitCode::from(exit_code::CHECK_FAILED)
    } else if !report.unreachable.is_empty() {
        eprintln!("the mapping could not be checked completely");
        ExitCode::from(exit_code::UNREACHABLE)
    } else {
        eprintln!("the mapping fits OpenText and 4ALLPORTAL");
        ExitCode::SUCCESS
    }
}

/// Where the id of the registered 4ALLPORTAL webhook is remembered (for a 4ALLPORTAL that
/// cannot list webhooks).
const REGISTERED_WEBHOOK: &str = "register.allportal.webhook_id";

/// `register allportal [--dry-run]`.
async fn register_allportal(
    settings: Settings,
    public_url: &url::Url,
    dry_run: bool,
) -> anyhow::Result<ExitCode> {
    let upstreams = crate::clients::Upstreams::new(&settings.allportal, &settings.opentext)
        .context("cannot build the upstream clients")?;
    let store = store::open(&settings.store).await?;
    if settings.store.migrate_on_start {
        store.migrate().await.context("migration failed")?;
    }
    let url = crate::flows::register::webhook_url(public_url);
    let remembered = store.get_cursor(REGISTERED_WEBHOOK).await?;
    let source = &settings.sources.allportal;
    let auth = match (source.scheme, source.secrets.first().cloned()) {
        (_, None) => WebhookAuth::None,
        (crate::ingest::config::SchemeKind::Token, Some(token)) => WebhookAuth::Header {
            name: source.header_name().to_string(),
            token,
        },
        (_, Some(secret)) => WebhookAuth::Secret(secret),
    };
    let registration = crate::flows::register::register(
        &upstreams.allportal,
        &settings.flows,
        &url,
        auth,
        remembered,
        dry_run,
    )
    .await
    .context("4ALLPORTAL")?;
    if let (false, Some(id)) = (dry_run, &registration.id) {
        store
            .set_cursor(REGISTERED_WEBHOOK, id, store::now_millis())
            .await?;
    }
    store.close().await;
    let verb = match (registration.action, dry_run) {
        ("unchanged", _) => "is up to date",
        ("create", true) => "would be created",
        ("create", false) => "created",
        (_, true) => "would be updated",
        (_, false) => "updated",
    };
    println!("4ALLPORTAL webhook {url} {verb}");
    for line in &registration.changes {
        println!("  {line}");
    }
    if !registration.compared {
        println!("  (4ALLPORTAL cannot list webhooks: the registered one could not be compared)");
    }
    Ok(ExitCode::SUCCESS)
}

/// `register opentext`: OpenText has no webhook API to register with; what its workflow step
/// (or script) must send, from this configuration.
fn print_opentext_callback(settings: &Settings, public_url: &url::Url) {
    let base = public_url.as_str().trim_end_matches('/');
    let source = &settings.sources.opentext;
    println!("OpenText callbacks (docs/opentext-callback.md):");
    println!("  POST {base}/webhooks/opentext");
    println!("  Content-Type: application/json");
    println!(
        "  signature: {:?}, with the secret of `sources.opentext.secrets` ({} configured)",
        source.scheme,
        source.secrets.len()
    );
    println!(
        "  body: one event object or an array of them: type (`workflow.decision` or \
         `partner_document.approved`), business_object {{ext_system_id = {}, bo_type, bo_id}}, \
         workflow {{process_id, decision, comment, approver, decided_at}} or document \
         {{node_id, version, name}} (`[callbacks]` configures another shape)",
        settings.opentext.ext_system_id
    );
    println!(
        "  OpenText offers no API to register or read such a callback: configure it in the \
         workflow map or WebReport, then send a test with `docs/opentext-callback.md`'s script."
    );
}

/// `20` or `20/s`: objects per second.
fn parse_rate(text: &str) -> Result<f64, String> {
    let number = text.trim().trim_end_matches("/s");
    match number.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate >= crate::flows::backfill::MIN_RATE => Ok(rate),
        _ => Err(format!(
            "`{text}` is not a rate of at least {}/s, such as `20/s`",
            crate::flows::backfill::MIN_RATE
        )),
    }
}

/// Compares the registered 4ALLPORTAL webhook with what the flows need (when
/// `server.public_url` says where it points), printing each difference; `true` on drift.
async fn webhook_drift(
    settings: &Settings,
    allportal: &crate::clients::allportal::AllportalClient,
) -> Result<bool, crate::clients::UpstreamError> {
    let Some(public_url) = &settings.server.public_url else {
        eprintln!("note: `server.public_url` is not set; the 4ALLPORTAL webhook was not checked");
        return Ok(false);
    };
    let url = crate::flows::register::webhook_url(public_url);
    match crate::flows::register::drift(allportal, &settings.flows, &url).await? {
        None => {
            eprintln!("note: 4ALLPORTAL cannot list webhooks; {url} was not compared");
            Ok(false)
        }
        Some(lines) if lines.is_empty() => {
            eprintln!("the 4ALLPORTAL webhook {url} is as the flows need");
            Ok(false)
        }
        Some(lines) => {
            for line in lines {
                eprintln!("problem: 4ALLPORTAL webhook {url}: {line}");
            }
            Ok(true)
        }
    }
}

/// The local health URL for a listen address (a wildcard address is probed on loopback).
fn health_url(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}/healthz", SocketAddr::new(ip, listen.port()))
}

async fn healthcheck(url: &str) -> ExitCode {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .expect("a client without custom TLS settings builds");
    match client.get(url).send().await {
        Ok(response) if response.status().is_success() => ExitCode::SUCCESS,
        Ok(response) => {
            eprintln!("unhealthy: {url} answered {}", response.status());
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("unhealthy: {url}: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The plans for every event in `file` (a webhook body), computed against the live systems.
async fn plan_file(
    settings: Settings,
    file: &std::path::Path,
    source: &str,
    flow: Option<&str>,
) -> anyhow::Result<serde_json::Value> {
    use crate::ingest::{payload, verify::Verified};
    let body = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let unsigned = Verified::for_local_plan(body.into());
    let events = match source {
        "allportal" => payload::parse_allportal(&unsigned)?,
        "opentext" => payload::parse_opentext_shaped(&unsigned, &settings.callbacks)?,
        other => anyhow::bail!("unknown source `{other}`; use allportal or opentext"),
    };
    let state = server::build_state(settings).await?;
    let mut plans = Vec::new();
    for parsed in events {
        let key = parsed
            .object_key
            .clone()
            .context("the event names no business object")?;
        let event = crate::flows::unsaved_event(source, &parsed.kind, &key, parsed.payload);
        plans.extend(state.flows.plan(flow, &event).await?);
    }
    state.store.close().await;
    Ok(serde_json::json!({ "plans": plans }))
}

/// How often `backfill` shows its progress: the bar's refresh, and a log line when stderr is
/// no terminal.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);
const LOG_EVERY: Duration = Duration::from_secs(5);

/// `backfill`: enumerates in this process (unless another holds the backfill) and follows the
/// progress until every object is enqueued and, with `wait`, reconciled.
async fn backfill(
    settings: Settings,
    request: crate::flows::backfill::BackfillRequest,
    dry_run: bool,
    wait: bool,
) -> anyhow::Result<ExitCode> {
    use crate::flows::backfill::Backfiller;
    let upstreams = crate::clients::Upstreams::new(&settings.allportal, &settings.opentext)
        .context("cannot build the upstream clients")?;
    let store = store::open(&settings.store).await?;
    if settings.store.migrate_on_start {
        store.migrate().await.context("migration failed")?;
    }
    let backfiller = Backfiller::new(
        store.clone(),
        upstreams.allportal.clone(),
        settings.flows.clone(),
        format!("cli:{}", uuid::Uuid::now_v7()),
    );
    if dry_run {
        let found = backfiller.dry_run(&request).await?;
        println!(
            "flow {}: {} object(s) of module `{}` match{}",
            found.flow,
            found.total,
            found.module,
            found
                .query
                .as_deref()
                .map(|q| format!(" `{q}`"))
                .unwrap_or_default()
        );
        for key in &found.sample {
            println!("  {key}");
        }
        store.close().await;
        return Ok(ExitCode::SUCCESS);
    }
    let backfill = backfiller.start(&request).await?;
    let id = backfill.id.clone();
    eprintln!("backfill {id} (flow {})", backfill.flow);
    let stop = CancellationToken::new();
    let enumerate = if backfiller.lease(&id).await? {
        let (backfiller, id, stop) = (backfiller.clone(), id.clone(), stop.clone());
        Some(tokio::spawn(
            async move { backfiller.run(&id, &stop).await },
        ))
    } else {
        eprintln!("another process enumerates it; following its progress");
        None
    };
    let interrupted = follow(&backfiller, &id, wait, &stop).await;
    stop.cancel();
    if let Some(task) = enumerate {
        task.await.context("the enumeration task failed")??;
    }
    let progress = backfiller.progress(&id).await?;
    store.close().await;
    println!("{}", serde_json::to_string_pretty(&progress)?);
    if interrupted? {
        eprintln!("interrupted: run the same command again to resume backfill {id}");
        return Ok(ExitCode::FAILURE);
    }
    Ok(match progress.backfill.state.as_str() {
        crate::store::backfill_state::FAILED => ExitCode::FAILURE,
        _ => ExitCode::SUCCESS,
    })
}

/// Shows the progress until the backfill is enumerated (and with `wait` every event final),
/// stopped, or ctrl-c (`Ok(true)`).
async fn follow(
    backfiller: &crate::flows::backfill::Backfiller,
    id: &str,
    wait: bool,
    stop: &CancellationToken,
) -> anyhow::Result<bool> {
    use std::io::IsTerminal;

    use crate::store::backfill_state;
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {pos}/{len} {msg} {per_sec} ETA {eta}",
            )
            .expect("a valid template"),
        );
        bar
    });
    let started = std::time::Instant::now();
    let mut logged = started;
    let mut signal = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        let p = backfiller.progress(id).await?;
        let o = &p.outcomes;
        let finished = o.done + o.skipped + o.failed;
        // Without waiting the work is the enumeration; with it, the reconciles.
        let (position, length) = if wait {
            (finished, p.backfill.total.unwrap_or(p.backfill.found))
        } else {
            (
                p.backfill.found,
                p.backfill.total.unwrap_or(p.backfill.found),
            )
        };
        let summary = format!(
            "found {}, enqueued {}, done {}, skipped {}, failed {}",
            p.backfill.found, o.enqueued, o.done, o.skipped, o.failed
        );
        if let Some(bar) = &bar {
            bar.set_length(length.max(position) as u64);
            bar.set_position(position as u64);
            bar.set_message(summary.clone());
        } else if logged.elapsed() >= LOG_EVERY {
            logged = std::time::Instant::now();
            let rate = position as f64 / started.elapsed().as_secs_f64().max(0.001);
            let eta = (length - position).max(0) as f64 / rate.max(0.001);
            eprintln!(
                "backfill {id}: {} {position}/{length}, {summary}, {rate:.1}/s, ETA {eta:.0}s",
                p.backfill.state
            );
        }
        let enumerated = p.backfill.state != backfill_state::RUNNING;
        if enumerated && (!wait || p.finished()) {
            if let Some(bar) = &bar {
                bar.finish_with_message(summary);
            }
            return Ok(false);
        }
        tokio::select! {
            () = tokio::time::sleep(PROGRESS_EVERY) => {}
            _ = &mut signal => return Ok(true),
            () = stop.cancelled() => return Ok(true),
        }
    }
}
