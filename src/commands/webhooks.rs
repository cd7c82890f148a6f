//! `runwarden webhooks install --url URL [--dry-run]`: for each configured project,
//! create or update this bot's Currents webhook for the four run events, carrying the
//! secret header. Idempotent: a webhook already pointing at URL is updated only when its
//! events or headers differ, and none is created twice.
//!
//! With `--dry-run`, or `dry_run = true` in the config (SPEC §6: a dry run mutates
//! nothing anywhere), it lists the webhooks (a `GET`) and prints what it would create or
//! update, sending no `POST` nor `PUT`.

use std::process::ExitCode;

use super::outln;
use crate::config::Secrets;
use crate::currents::{CurrentsClient, RUN_EVENTS, Webhook, WebhookSpec};

/// Label of the webhooks runwarden manages.
pub const LABEL: &str = "runwarden";

/// What `install` did (or would do) for one project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Created(String),
    Updated(String),
    Unchanged(String),
}

fn wanted(url: &str, header: &str, secret: &str) -> WebhookSpec {
    let headers = serde_json::json!({ header: secret }).to_string();
    WebhookSpec {
        url: Some(url.to_string()),
        headers: Some(headers),
        hook_events: Some(RUN_EVENTS.iter().map(|s| s.to_string()).collect()),
        label: Some(LABEL.to_string()),
    }
}

fn same(existing: &Webhook, want: &WebhookSpec) -> bool {
    let mut a = existing.hook_events.clone();
    a.sort();
    let mut b = want.hook_events.clone().unwrap_or_default();
    b.sort();
    let parse = |s: &Option<String>| {
        s.as_deref()
            .and_then(|h| serde_json::from_str::<serde_json::Value>(h).ok())
    };
    a == b && parse(&existing.headers) == parse(&want.headers) && existing.label == want.label
}

/// Installs (or with `dry_run`, plans) the webhook of one project.
pub async fn install_one(
    client: &CurrentsClient,
    project: &str,
    url: &str,
    header: &str,
    secret: &str,
    dry_run: bool,
) -> anyhow::Result<Change> {
    let want = wanted(url, header, secret);
    let hooks = client.list_webhooks(project).await?;
    let mine = hooks
        .iter()
        .find(|h| h.url == url)
        .or_else(|| hooks.iter().find(|h| h.label.as_deref() == Some(LABEL)));
    match mine {
        Some(h) if h.url == url && same(h, &want) => Ok(Change::Unchanged(h.hook_id.clone())),
        Some(h) => {
            if !dry_run {
                client.update_webhook(&h.hook_id, &want).await?;
            }
            Ok(Change::Updated(h.hook_id.clone()))
        }
        None => {
            if dry_run {
                return Ok(Change::Created("(new)".into()));
            }
            match client.create_webhook(project, &want).await {
                Ok(h) => Ok(Change::Created(h.hook_id)),
                // A 2xx without the webhook in it (a 204, an empty body: what Currents'
                // own MCP client tolerates). It was created: find it by listing.
                Err(crate::currents::client::CurrentsError::Decode { status, .. })
                    if (200..300).contains(&status) =>
                {
                    let hooks = client.list_webhooks(project).await?;
                    let id = hooks
                        .into_iter()
                        .find(|h| h.url == url)
                        .map(|h| h.hook_id)
                        .unwrap_or_else(|| "(created; the API gave no id)".into());
                    Ok(Change::Created(id))
                }
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// Runs the command.
pub fn run(path: &std::path::Path, url: &str, dry_run: bool) -> ExitCode {
    let loaded = match super::load_config(path) {
        Ok(l) => l,
        Err(code) => return code,
    };
    match url::Url::parse(url) {
        Ok(u) if u.scheme() == "https" || u.scheme() == "http" => {}
        _ => {
            eprintln!("runwarden webhooks install: --url {url:?} is not an http(s) URL");
            return ExitCode::from(super::EXIT_USAGE);
        }
    }
    let secrets = Secrets::from_env();
    let Some(secret) = secrets.currents_webhook_secrets.first().cloned() else {
        eprintln!(
            "runwarden webhooks install: RUNWARDEN_CURRENTS_WEBHOOK_SECRET is not set (the webhook must carry it)"
        );
        return ExitCode::from(super::EXIT_USAGE);
    };
    let client = match super::serve::currents_client(&loaded.config, &secrets) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("runwarden webhooks install: {e:#}");
            return ExitCode::from(super::EXIT_USAGE);
        }
    };
    // The global `dry_run` (the emergency stop) holds here too.
    if loaded.config.dry_run {
        eprintln!(
            "runwarden webhooks install: dry_run is on in the config: nothing is created or updated"
        );
    }
    let dry_run = dry_run || loaded.config.dry_run;
    let header = loaded.config.currents.webhook_header.clone();
    let rt = super::runtime();
    let mut failed = false;
    for project in &loaded.config.currents.projects {
        let r = rt.block_on(install_one(
            &client,
            project,
            url,
            &header,
            secret.expose(),
            dry_run,
        ));
        let prefix = if dry_run { "would be " } else { "" };
        match r {
            Ok(Change::Created(id)) => outln!("{project}: webhook {prefix}created {id} -> {url}"),
            Ok(Change::Updated(id)) => outln!("{project}: webhook {id} {prefix}updated -> {url}"),
            Ok(Change::Unchanged(id)) => outln!("{project}: webhook {id} already up to date"),
            Err(e) => {
                failed = true;
                eprintln!("{project}: cannot install the webhook: {e:#}");
            }
        }
    }
    if failed {
        ExitCode::from(super::EXIT_FAILED)
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The secret travels in the `headers` of the spec sent and of the webhooks listed:
    /// their `Debug` names the header, never its value.
    #[test]
    fn webhook_debug_output_hides_the_secret_header_value() {
        let spec = wanted(
            "https://bot.example.com/hook",
            "x-webhook-secret",
            "s3cr3t-value",
        );
        let shown = format!("{spec:?} {spec:#?}");
        assert!(!shown.contains("s3cr3t-value"), "{shown}");
        assert!(shown.contains("x-webhook-secret"), "{shown}");
        assert!(shown.contains("https://bot.example.com/hook"), "{shown}");
        let hook = Webhook {
            hook_id: "h1".into(),
            url: "https://bot.example.com/hook".into(),
            headers: spec.headers.clone(),
            label: Some(LABEL.into()),
            ..Webhook::default()
        };
        let shown = format!("{hook:?} {hook:#?}");
        assert!(!shown.contains("s3cr3t-value"), "{shown}");
        assert!(
            shown.contains("x-webhook-secret") && shown.contains("h1"),
            "{shown}"
        );
        // Headers that are not a JSON object are hidden whole.
        let odd = Webhook {
            headers: Some("x-webhook-secret: s3cr3t-value".into()),
            ..Webhook::default()
        };
        assert!(!format!("{odd:?}").contains("s3cr3t-value"));
    }
}
