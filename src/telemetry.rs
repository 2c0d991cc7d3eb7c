//! Logs (tracing; text or JSON) and the Prometheus metrics recorder.

pub mod config;
pub mod metrics;

pub use config::{DEFAULTS, LogConfig, LogFormat};

use metrics_exporter_prometheus::PrometheusHandle;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Installs the global log subscriber. `RUST_LOG` wins over `[log].filter` when set.
/// Calling it again (tests) is harmless.
///
/// JSON lines carry the event's fields and the fields of every span it runs in (the request's
/// `request_id`, `method`, `path`) as top-level members, so that a log search filters on
/// `request_id`, `event_id`, `object_key` or `flow` alike. Span and event field names never
/// overlap (see docs/operations.md), which keeps every line valid JSON.
pub fn init_logging(cfg: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // An error means a subscriber is already installed (tests start several servers).
    let _already_installed = match cfg.format {
        LogFormat::Json => {
            let mut layer = json_subscriber::JsonLayer::stderr();
            layer
                .with_timer("timestamp", tracing_subscriber::fmt::time::SystemTime)
                .with_level("level")
                .with_target("target")
                .with_top_level_flattened_span_list()
                .add_multiple_dynamic_fields(|event, _, writer| {
                    let mut fields = JsonFieldVisitor::default();
                    event.record(&mut fields);
                    for (name, value) in fields.0 {
                        let _ = writer.write_field(name, value);
                    }
                });
            tracing_subscriber::registry()
                .with(filter)
                .with(layer)
                .try_init()
                .is_err()
        }
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init()
            .is_err(),
    };
}

/// An event's fields as JSON values. A list logged with `?list` (`Debug` of a slice or `Vec` of
/// strings or numbers, which reads as JSON) becomes a JSON array rather than a string.
#[derive(Default)]
struct JsonFieldVisitor(Vec<(&'static str, serde_json::Value)>);

impl tracing::field::Visit for JsonFieldVisitor {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        let value = if text.starts_with('[') {
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
        } else {
            serde_json::Value::String(text)
        };
        self.0.push((field.name(), value));
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.push((field.name(), value.into()));
    }

    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.push((field.name(), value.into()));
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.push((field.name(), value.into()));
    }

    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.0.push((field.name(), value.into()));
    }

    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.push((field.name(), value.into()));
    }
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    metrics::handle()
}
