//! Stateful simulators of 4ALLPORTAL and OpenText, for tests and `demo`. Never used by production code paths.
//!
//! Both simulators are real axum servers that follow the documented API shapes (paths, encodings,
//! envelopes, error bodies) of `reference/opentext-api.md` and `reference/allportal-api.md`, keep
//! state in memory, inject faults on request, and send Standard Webhooks–signed notifications the
//! way the real systems (or the OpenText-side callback step) would.
//!
//! Control endpoints live under `/_sim/` (no authentication, never subject to faults): seed data,
//! inspect state (`GET /_sim/state`), the request log (`GET /_sim/requests`), faults
//! (`PUT /_sim/faults`), and per-system actions such as completing a workflow or sending a webhook.

pub mod allportal;
mod blob;
mod faults;
mod handle;
mod multipart;
pub mod opentext;
mod requests;
mod signing;

pub use faults::FaultSettings;
pub use handle::SimHandle;
pub use requests::RequestRecord;
pub use signing::{WebhookDelivery, sign_standard_webhook};

use std::net::SocketAddr;

/// Which system a standalone simulator stands in for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SimKind {
    Opentext,
    Allportal,
}

/// Arguments of `xecm-bridge sim opentext|allportal --listen ADDR`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Which system to simulate.
    #[arg(value_enum)]
    pub kind: SimKind,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9001")]
    pub listen: SocketAddr,
    /// Where signed notifications go (4ALLPORTAL change webhooks / OpenText callbacks).
    #[arg(long)]
    pub webhook_url: Option<url::Url>,
    /// Standard Webhooks signing secret (`whsec_<base64>`) for those notifications.
    #[arg(long, env = "XECM_SIM_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// Do not load the sample data set at start.
    #[arg(long)]
    pub empty: bool,
    /// 4ALLPORTAL: also generate this many launch-ready products (spread over the sample's
    /// families, with its files as assets), e.g. 50000 for the backfill benchmark.
    #[arg(long, default_value_t = 0)]
    pub products: usize,
}

/// Runs one simulator until Ctrl-C (the `sim` subcommand).
pub async fn run(args: SimArgs) -> anyhow::Result<()> {
    let handle = match args.kind {
        SimKind::Opentext => {
            let mut opts = opentext::OpentextSimOptions {
                callback_url: args.webhook_url,
                callback_secret: args.webhook_secret,
                ..Default::default()
            };
            if args.empty {
                opts.seed = opentext::OpentextSeed::default();
            }
            opentext::spawn(args.listen, opts).await?
        }
        SimKind::Allportal => {
            let mut opts = allportal::AllportalSimOptions {
                webhook_url: args.webhook_url,
                webhook_secret: args.webhook_secret,
                ..Default::default()
            };
            if !args.empty {
                opts.seed = Some(allportal::large_catalogue(args.products));
            }
            allportal::spawn(args.listen, opts).await?
        }
    };
    tracing::info!(base_url = %handle.base_url(), "simulator listening; control endpoints under /_sim/");
    tokio::signal::ctrl_c().await?;
    handle.shutdown().await;
    Ok(())
}
