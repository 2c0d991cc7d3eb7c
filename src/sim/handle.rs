//! The running simulator: its address, inspection helpers and shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::faults::FaultSettings;
use super::requests::RequestRecord;

/// What every simulator lets a test inspect or change directly (same as its `/_sim/` endpoints).
pub(crate) trait SimControl: Send + Sync {
    fn state_json(&self) -> serde_json::Value;
    fn requests(&self) -> Vec<RequestRecord>;
    fn clear_requests(&self);
    fn set_faults(&self, faults: FaultSettings);
}

/// A running simulator. Shuts down on drop or [`SimHandle::shutdown`].
pub struct SimHandle {
    pub addr: SocketAddr,
    base_path: &'static str,
    control: Arc<dyn SimControl>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("addr", &self.addr)
            .field("base_url", &self.base_url())
            .finish()
    }
}

impl SimHandle {
    /// Binds `listen`, serves `router` until shutdown.
    pub(crate) async fn serve(
        listen: SocketAddr,
        router: axum::Router,
        base_path: &'static str,
        control: Arc<dyn SimControl>,
    ) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(err) = served {
                tracing::warn!(error = %err, "simulator server stopped with an error");
            }
        });
        Ok(Self {
            addr,
            base_path,
            control,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The base URL a client is configured with: `http://addr/otcs/cs` for OpenText (the client
    /// appends `/api/v1/…`), `http://addr` for 4ALLPORTAL.
    pub fn base_url(&self) -> String {
        format!("http://{}{}", self.addr, self.base_path)
    }

    /// `http://addr/_sim`, the root of the control endpoints.
    pub fn control_url(&self) -> String {
        format!("http://{}/_sim", self.addr)
    }

    /// The full simulator state, as `GET /_sim/state` returns it.
    pub fn state(&self) -> serde_json::Value {
        self.control.state_json()
    }

    /// Every API request answered so far, as `GET /_sim/requests` returns it.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.control.requests()
    }

    pub fn clear_requests(&self) {
        self.control.clear_requests();
    }

    /// Replaces the fault settings, as `PUT /_sim/faults` does.
    pub fn set_faults(&self, faults: FaultSettings) {
        self.control.set_faults(faults);
    }

    /// Stops accepting connections and waits for the server task to end.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take() {
            // Graceful shutdown waits for open connections; a client holding one must not hang us.
            if tokio::time::timeout(std::time::Duration::from_secs(5), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
