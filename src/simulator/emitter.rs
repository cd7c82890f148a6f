//! Outbound Currents webhooks (`currents-notes.md` §2.1): a POST with the JSON payload,
//! `Content-Type: application/json`, `x-timestamp` (epoch ms) and the configured custom
//! headers. Deliveries run in a background task, in event order, each with a short
//! timeout; nothing is retried (Currents documents no retries). Every attempt is
//! recorded and can be read with [`super::World::deliveries`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::mpsc;

use super::world::lock;
use crate::currents::models::CurrentsWebhookPayload;

/// Where an event goes.
#[derive(Debug, Clone, PartialEq)]
pub struct HookTarget {
    pub url: String,
    pub headers: Vec<(String, String)>,
    /// `config` (the simulator's webhook URL) or `webhook:<hookId>`.
    pub source: String,
}

/// One event to deliver to its targets.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    pub event: String,
    pub run_id: String,
    pub payload: CurrentsWebhookPayload,
    pub targets: Vec<HookTarget>,
}

/// The record of one delivery attempt.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub at: DateTime<Utc>,
    pub event: String,
    pub run_id: String,
    pub group_id: Option<String>,
    pub url: String,
    pub source: String,
    /// HTTP status of the receiver's answer; `None` when it failed or timed out.
    pub status: Option<u16>,
    pub error: Option<String>,
}

pub(crate) struct Emitter {
    tx: mpsc::UnboundedSender<Outgoing>,
    deliveries: Arc<Mutex<Vec<Delivery>>>,
}

const MAX_DELIVERIES: usize = 50_000;

impl Emitter {
    pub fn start(timeout: Duration) -> Emitter {
        let (tx, rx) = mpsc::unbounded_channel();
        let deliveries = Arc::new(Mutex::new(Vec::new()));
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        tokio::spawn(run(rx, client, deliveries.clone()));
        Emitter { tx, deliveries }
    }

    pub fn send(&self, o: Outgoing) {
        // The worker only stops when the world is dropped; a failed send is harmless.
        let _ = self.tx.send(o);
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        lock(&self.deliveries).clone()
    }

    pub fn clear_deliveries(&self) {
        lock(&self.deliveries).clear();
    }
}

async fn run(
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    client: reqwest::Client,
    deliveries: Arc<Mutex<Vec<Delivery>>>,
) {
    while let Some(o) = rx.recv().await {
        let Some(body) = payload_body(&o.payload) else {
            continue;
        };
        let o = &o;
        let sends = o.targets.iter().map(|t| {
            let mut req = client
                .post(&t.url)
                .header("content-type", "application/json")
                .header("user-agent", "Currents-Webhook/1.0 (runwarden simulator)")
                .header("x-timestamp", Utc::now().timestamp_millis().to_string());
            for (k, v) in &t.headers {
                req = req.header(k.as_str(), v.as_str());
            }
            let req = req.body(body.clone());
            async move {
                let res = req.send().await;
                let (status, error) = match res {
                    Ok(r) => (Some(r.status().as_u16()), None),
                    Err(e) => (None, Some(error_text(&e))),
                };
                Delivery {
                    at: Utc::now(),
                    event: o.event.clone(),
                    run_id: o.run_id.clone(),
                    group_id: o.payload.group_id.clone(),
                    url: t.url.clone(),
                    source: t.source.clone(),
                    status,
                    error,
                }
            }
        });
        let done = futures::future::join_all(sends).await;
        let mut d = lock(&deliveries);
        d.extend(done);
        if d.len() > MAX_DELIVERIES {
            let excess = d.len() - MAX_DELIVERIES;
            d.drain(..excess);
        }
    }
}

/// The JSON body of a webhook. `groupId` is sent "only for multigroup runs"
/// (`currents-notes.md` §2.1): absent, not `null`, otherwise.
pub(crate) fn payload_body(payload: &CurrentsWebhookPayload) -> Option<Vec<u8>> {
    let mut v = serde_json::to_value(payload).ok()?;
    if let Some(obj) = v.as_object_mut()
        && obj.get("groupId").is_some_and(serde_json::Value::is_null)
    {
        obj.remove("groupId");
    }
    serde_json::to_vec(&v).ok()
}

fn error_text(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timeout".into();
    }
    if e.is_connect() {
        return "connect error".into();
    }
    // Without the URL, which may carry credentials in its query.
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(u.as_str(), "<url>");
    }
    s
}

impl super::World {
    /// Every webhook delivery attempted so far, oldest first.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.emitter.deliveries()
    }

    pub fn clear_deliveries(&self) {
        self.emitter.clear_deliveries();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(group_id: Option<&str>) -> serde_json::Value {
        let p = CurrentsWebhookPayload {
            event: "RUN_START".into(),
            run_url: "https://app.currents.dev/run/abc".into(),
            group_id: group_id.map(str::to_string),
            ..Default::default()
        };
        serde_json::from_slice(&payload_body(&p).unwrap()).unwrap()
    }

    #[test]
    fn group_id_only_for_multigroup_runs() {
        let single = body(None);
        assert!(single.get("groupId").is_none(), "{single}");
        assert_eq!(single["event"], "RUN_START");
        assert_eq!(body(Some("chromium"))["groupId"], "chromium");
    }
}
