//! `runwarden webhooks install --url URL [--dry-run] [--replace]`: for each configured
//! project, create or update this bot's Currents webhook for the four run events,
//! carrying the secret header. Idempotent: a webhook already pointing at URL is updated
//! only when its events or headers differ, and none is created twice.
//!
//! Webhooks are matched by URL, never by label alone: another webhook labelled
//! `runwarden` that points elsewhere (another deployment of the bot sharing the project:
//! production's, while staging installs its own) is left untouched and reported on
//! stderr, and this URL gets a webhook of its own. Only `--replace` points such a
//! webhook at URL instead (when none points there yet).
//!
//! With `--dry-run`, or `dry_run = true` in the config (SPEC §6: a dry run mutates
//! nothing anywhere), it lists the webhooks (a `GET`) and prints what it would create or
//! update, sending no `POST` nor `PUT`.

use crate::commands::errln;
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
    /// `--replace`: another runwarden webhook, which pointed at `previous_url`, now points
    /// at the URL installed.
    Replaced {
        hook_id: String,
        previous_url: String,
    },
}

/// What [`install_one_with`] did for one project, and the webhooks it left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub change: Change,
    /// Other webhooks labelled `runwarden`, pointing at another URL, left untouched:
    /// `(hook_id, url)`.
    pub others: Vec<(String, String)>,
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

/// Installs (or with `dry_run`, plans) the webhook of one project, as
/// [`install_one_with`] without `replace`; the other runwarden webhooks it leaves alone
/// are not returned.
pub async fn install_one(
    client: &CurrentsClient,
    project: &str,
    url: &str,
    header: &str,
    secret: &str,
    dry_run: bool,
) -> anyhow::Result<Change> {
    install_one_with(client, project, url, header, secret, dry_run, false)
        .await
        .map(|i| i.change)
}

/// Installs (or with `dry_run`, plans) the webhook of one project.
///
/// The webhook pointing at `url` (labelled `runwarden` preferably, when several do) is
/// updated when its secret header, events or label differ, or left alone; when none
/// does, one is created. Webhooks labelled `runwarden` that point at another URL are
/// never changed, only returned in [`Installed::others`]; except with `replace`, when no
/// webhook points at `url` yet: then the first of them is pointed at `url` instead of
/// creating one ([`Change::Replaced`]).
pub async fn install_one_with(
    client: &CurrentsClient,
    project: &str,
    url: &str,
    header: &str,
    secret: &str,
    dry_run: bool,
    replace: bool,
) -> anyhow::Result<Installed> {
    let want = wanted(url, header, secret);
    let hooks = client.list_webhooks(project).await?;
    let mine = hooks
        .iter()
        .filter(|h| h.url == url)
        .min_by_key(|h| h.label.as_deref() != Some(LABEL));
    let mut others: Vec<&Webhook> = hooks
        .iter()
        .filter(|h| h.url != url && h.label.as_deref() == Some(LABEL))
        .collect();
    let replaced = match (mine, replace) {
        (None, true) if !others.is_empty() => Some(others.remove(0)),
        _ => None,
    };
    let others = others
        .into_iter()
        .map(|h| (h.hook_id.clone(), h.url.clone()))
        .collect();
    let change = match (mine, replaced) {
        (Some(h), _) if same(h, &want) => Change::Unchanged(h.hook_id.clone()),
        (Some(h), _) => {
            if !dry_run {
                client.update_webhook(&h.hook_id, &want).await?;
            }
            Change::Updated(h.hook_id.clone())
        }
        (None, Some(h)) => {
            if !dry_run {
                client.update_webhook(&h.hook_id, &want).await?;
            }
            Change::Replaced {
                hook_id: h.hook_id.clone(),
                previous_url: h.url.clone(),
            }
        }
        (None, None) if dry_run => Change::Created("(new)".into()),
        (None, None) => match client.create_webhook(project, &want).await {
            Ok(h) => Change::Created(h.hook_id),
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
                Change::Created(id)
            }
            Err(e) => return Err(e.into()),
        },
    };
    Ok(Installed { change, others })
}

/// Runs the command (without `--replace`).
pub fn run(path: &std::path::Path, url: &str, dry_run: bool) -> ExitCode {
    run_with(path, url, dry_run, false)
}

/// Runs the command; `replace` is `--replace` (see [`install_one_with`]).
pub fn run_with(path: &std::path::Path, url: &str, dry_run: bool, replace: bool) -> ExitCode {
    let loaded = match super::load_config(path) {
        Ok(l) => l,
        Err(code) => return code,
    };
    match url::Url::parse(url) {
        Ok(u) if u.scheme() == "https" || u.scheme() == "http" => {}
        _ => {
            errln!("runwarden webhooks install: --url {url:?} is not an http(s) URL");
            return ExitCode::from(super::EXIT_USAGE);
        }
    }
    let secrets = Secrets::from_env();
    let Some(secret) = secrets.currents_webhook_secrets.first().cloned() else {
        errln!(
            "runwarden webhooks install: RUNWARDEN_CURRENTS_WEBHOOK_SECRET is not set (the webhook must carry it)"
        );
        return ExitCode::from(super::EXIT_USAGE);
    };
    let client = match super::serve::currents_client(&loaded.config, &secrets) {
        Ok(c) => c,
        Err(e) => {
            errln!("runwarden webhooks install: {e:#}");
            return ExitCode::from(super::EXIT_USAGE);
        }
    };
    // The global `dry_run` (the emergency stop) holds here too.
    if loaded.config.dry_run {
        errln!(
            "runwarden webhooks install: dry_run is on in the config: nothing is created or updated"
        );
    }
    let dry_run = dry_run || loaded.config.dry_run;
    let header = loaded.config.currents.webhook_header.clone();
    let rt = super::runtime();
    let mut failed = false;
    for project in &loaded.config.currents.projects {
        let r = rt.block_on(install_one_with(
            &client,
            project,
            url,
            &header,
            secret.expose(),
            dry_run,
            replace,
        ));
        let prefix = if dry_run { "would be " } else { "" };
        let installed = match r {
            Ok(i) => i,
            Err(e) => {
                failed = true;
                errln!("{project}: cannot install the webhook: {e:#}");
                continue;
            }
        };
        match installed.change {
            Change::Created(id) => outln!("{project}: webhook {prefix}created {id} -> {url}"),
            Change::Updated(id) => outln!("{project}: webhook {id} {prefix}updated -> {url}"),
            Change::Unchanged(id) => outln!("{project}: webhook {id} already up to date"),
            Change::Replaced {
                hook_id,
                previous_url,
            } => outln!(
                "{project}: webhook {hook_id} {prefix}moved from {previous_url} -> {url} (--replace)"
            ),
        }
        for (id, other) in installed.others {
            errln!(
                "{project}: another runwarden webhook ({id}) points at {other}; not changed; remove it in Currents if it is stale"
            );
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
