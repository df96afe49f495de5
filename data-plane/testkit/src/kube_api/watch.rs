//! Watch streams: the history after the requested resourceVersion, then live changes, filtered like
//! a list, until the timeout, the server's shutdown or [`super::FakeApiServer::block_watches`].

use std::{sync::Arc, time::Duration};

use axum::{
    body::{Body, Bytes},
    http::{StatusCode, header::CONTENT_TYPE},
    response::{IntoResponse, Response},
};
use futures_util::{StreamExt, stream};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::{
    routes::{Handler, failure, status_body},
    selector::{Query, Selector},
    store::{Change, ChangeKind, Resource},
};

pub(super) fn watch(
    handler: &Handler,
    resource: &Resource,
    namespace: Option<&str>,
    query: &Query,
) -> Response {
    let selector = match query.selector() {
        Ok(s) => s,
        Err(failure) => return failure.into_response(),
    };
    let since: u64 = match query.get("resourceVersion") {
        None | Some("" | "0") => 0,
        Some(rv) => match rv.parse() {
            Ok(rv) => rv,
            Err(_) => {
                return failure(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    &format!("invalid resourceVersion {rv:?}"),
                )
                .into_response();
            }
        },
    };
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs);
    let (replay, live, gate) = {
        let store = handler.state.lock();
        if store.gate.blocked {
            return failure(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "watches are blocked by the test",
            )
            .into_response();
        }
        if since != 0 && since < store.compacted {
            let expired = status_body(
                StatusCode::GONE,
                "Expired",
                &format!("too old resource version: {since} ({})", store.compacted),
            );
            let line = event_line("ERROR", &expired);
            return Response::new(Body::from(line));
        }
        let replay: Vec<Arc<Change>> = match since {
            // From "now": only what happens next (the caller listed first).
            0 => Vec::new(),
            _ => store
                .history
                .iter()
                .filter(|c| c.revision > since)
                .cloned()
                .collect(),
        };
        let live = handler.state.live.as_ref().map(broadcast::Sender::subscribe);
        (replay, live, store.gate.open.clone())
    };
    let filter = Arc::new(WatchFilter {
        resource: resource.clone(),
        namespace: namespace.map(str::to_owned),
        selector,
    });
    let replayed = {
        let filter = filter.clone();
        stream::iter(replay).filter_map(move |c| std::future::ready(filter.event(&c)))
    };
    let live_events = stream::unfold(live, |live| async move {
        let mut live = live?;
        // Fell behind or the server is gone: the stream ends and the client re-watches.
        let change = live.recv().await.ok()?;
        Some((change, Some(live)))
    })
    .filter_map({
        let filter = filter.clone();
        move |c| std::future::ready(filter.event(&c))
    });
    let stop = handler.shutdown.clone();
    let deadline = async move {
        let ended = async {
            tokio::select! {
                () = stop.cancelled() => {}
                () = gate.cancelled() => {}
            }
        };
        match timeout {
            Some(t) => {
                let _ = tokio::time::timeout(t, ended).await;
            }
            None => ended.await,
        }
    };
    let events = replayed
        .chain(live_events)
        .map(Ok::<Bytes, std::convert::Infallible>)
        .take_until(Box::pin(deadline));
    Response::builder()
        .header(CONTENT_TYPE, "application/json")
        .body(Body::from_stream(events))
        .unwrap_or_else(|e| {
            failure(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", &e.to_string()).into_response()
        })
}

pub(super) struct WatchFilter {
    resource: Resource,
    namespace: Option<String>,
    selector: Selector,
}

impl WatchFilter {
    /// The line a watcher of this collection sees for `change`, if any.
    fn event(&self, change: &Change) -> Option<Bytes> {
        if !change
            .key
            .same_collection(&self.resource, self.namespace.as_deref())
        {
            return None;
        }
        let was = change.old.as_ref().is_some_and(|o| self.selector.matches(o));
        let is = self.selector.matches(&change.new);
        let kind = match (&change.kind, was, is) {
            (ChangeKind::Added, _, true) => "ADDED",
            (ChangeKind::Modified, true, true) => "MODIFIED",
            (ChangeKind::Modified, false, true) => "ADDED",
            (ChangeKind::Modified, true, false) => "DELETED",
            (ChangeKind::Deleted, true, _) => "DELETED",
            _ => return None,
        };
        Some(Bytes::from(event_line(kind, &change.new)))
    }
}

pub(super) fn event_line(kind: &str, object: &Value) -> String {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    line
}
