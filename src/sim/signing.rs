//! Standard Webhooks signing and delivery, written here on purpose: the simulators stand in for the
//! external senders, so they must not share code with the bridge's verifier (a shared bug would
//! then pass every test).

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

/// `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>` where key is the base64-decoded part of
/// a `whsec_…` secret (a secret without the prefix is decoded as base64 too).
pub fn sign_standard_webhook(
    secret: &str,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> anyhow::Result<String> {
    let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
    let key = STANDARD
        .decode(encoded)
        .map_err(|_| anyhow::anyhow!("webhook secret is not whsec_<base64>"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key)?;
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// The outcome of one signed delivery, as control endpoints report it.
#[derive(Debug, Clone, Serialize)]
pub struct WebhookDelivery {
    pub webhook_id: String,
    pub url: String,
    /// HTTP status of the receiver; absent when the request failed before an answer.
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub body: serde_json::Value,
}

/// Posts `body` to `url` signed with `secret`, with `headers` added (a registered webhook's
/// custom headers); never fails: transport errors are reported.
pub(crate) async fn deliver(
    client: &reqwest::Client,
    url: &str,
    secret: &str,
    headers: &BTreeMap<String, String>,
    body: serde_json::Value,
) -> WebhookDelivery {
    let webhook_id = format!("msg_{}", uuid::Uuid::new_v4().simple());
    let raw = serde_json::to_vec(&body).expect("JSON value serializes");
    let timestamp = chrono::Utc::now().timestamp();
    let mut delivery = WebhookDelivery {
        webhook_id: webhook_id.clone(),
        url: url.to_owned(),
        status: None,
        error: None,
        body,
    };
    let signature = match sign_standard_webhook(secret, &webhook_id, timestamp, &raw) {
        Ok(signature) => signature,
        Err(err) => {
            delivery.error = Some(err.to_string());
            return delivery;
        }
    };
    let mut request = client.post(url);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let sent = request
        .header("content-type", "application/json")
        .header("webhook-id", &webhook_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(raw)
        .send()
        .await;
    match sent {
        Ok(response) => delivery.status = Some(response.status().as_u16()),
        Err(err) => delivery.error = Some(err.to_string()),
    }
    delivery
}

/// Where and how a simulator signs its outgoing notifications; `Debug` hides the secret.
#[derive(Clone, Default)]
pub(crate) struct WebhookTarget {
    pub(crate) url: Option<String>,
    pub(crate) secret: Option<String>,
}

impl std::fmt::Debug for WebhookTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookTarget")
            .field("url", &self.url)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}
