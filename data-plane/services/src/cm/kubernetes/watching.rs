//! The watch path: reflector events -> index updates -> revocations. Revocations come from here,
//! whoever made the change (this replica, another one, the operator or `kubectl`).

use std::{pin::pin, sync::Arc};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api,
    runtime::{
        WatchStreamExt, reflector,
        watcher::{self, Event},
    },
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{
    Shared,
    layout::{Layout, Parsed},
};
use crate::cm::storage::Revocation;

/// The watch: reflector events -> index updates -> revocations, until `stop`.
pub(super) async fn watch_secrets(
    api: Api<Secret>,
    layout: Layout,
    shared: Arc<Shared>,
    writer: reflector::store::Writer<Secret>,
    revocations: mpsc::UnboundedSender<Revocation>,
    stop: CancellationToken,
) {
    let config = watcher::Config::default().labels(&layout.selector());
    let mut events = pin!(reflector::reflector(
        writer,
        watcher::watcher(api, config).default_backoff()
    ));
    // Objects of a (re-)list, applied together when it completes.
    let mut listing: Vec<Secret> = Vec::new();
    loop {
        let event = tokio::select! {
            () = stop.cancelled() => return,
            event = events.next() => event,
        };
        let Some(event) = event else { return };
        let (announced, warnings) = match event {
            Err(e) => {
                tracing::warn!(error = %e, "watching the credential Secrets failed; retrying");
                *shared.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                continue;
            }
            Ok(Event::Init) => {
                listing.clear();
                continue;
            }
            Ok(Event::InitApply(secret)) => {
                listing.push(secret);
                continue;
            }
            Ok(Event::InitDone) => {
                let secrets = std::mem::take(&mut listing)
                    .iter()
                    .filter_map(|s| {
                        let (name, version) = identity(s)?;
                        Some((name, version, read_logged(&layout, s)))
                    })
                    .collect();
                let outcome = shared.write().replace_all(secrets);
                shared.ready.send_replace(true);
                outcome
            }
            Ok(Event::Apply(secret)) => match identity(&secret) {
                Some((name, version)) => {
                    let parsed = read_logged(&layout, &secret);
                    shared.write().apply(&name, &version, parsed)
                }
                None => continue,
            },
            Ok(Event::Delete(secret)) => match identity(&secret) {
                Some((name, version)) => (shared.write().delete(&name, Some(&version)), Vec::new()),
                None => continue,
            },
        };
        for warning in warnings {
            tracing::warn!(%warning, "ambiguous credential Secrets");
        }
        for revocation in announced {
            // The receiver lives as long as CM; once it is gone nobody is left to tell.
            let _ = revocations.send(revocation);
        }
        shared.applied.send_modify(|n| *n = n.wrapping_add(1));
    }
}

fn identity(secret: &Secret) -> Option<(String, String)> {
    Some((
        secret.metadata.name.clone()?,
        secret.metadata.resource_version.clone().unwrap_or_default(),
    ))
}

/// Parses a Secret and logs what could not be read in it (names and reasons, never values).
fn read_logged(layout: &Layout, secret: &Secret) -> Parsed {
    let reading = layout.read(secret);
    let name = secret.metadata.name.as_deref().unwrap_or_default();
    for problem in &reading.problems {
        tracing::warn!(secret = name, %problem, "ignoring unreadable credential data");
    }
    reading.parsed
}
