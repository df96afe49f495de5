//! Kubernetes Events on a Blueprint (`kubectl describe bp`, `kubectl events`): a Warning when
//! its spec is invalid or applying fails, a Normal event summing up what a reconcile created,
//! updated and pruned. Notes name fields and objects, never a Secret's value (the spec holds only
//! references to Secrets, and object names are not secret).
//!
//! An event that cannot be written is logged and dropped: events inform, they never fail a
//! reconcile.

use kube::{
    Client, Resource, ResourceExt,
    runtime::events::{Event, EventType, Recorder, Reporter},
};

use crate::{apply::Changes, crd::Blueprint};

/// `reportingController` of every event.
pub const REPORTER: &str = "kaa-operator";
/// The API's limit on an event's note, in bytes.
const NOTE_LIMIT: usize = 1024;

/// What happened to a Blueprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Happened {
    /// Validation refused the spec (the message names the fields).
    Invalid(String),
    /// The API server refused an object, or could not be reached.
    ApplyFailed(String),
    /// Objects were created, changed or pruned.
    Changed(Changes),
}

impl Happened {
    fn event(&self) -> Event {
        let (type_, reason, action, note) = match self {
            Happened::Invalid(message) => (EventType::Warning, "InvalidSpec", "Validate", message.clone()),
            Happened::ApplyFailed(message) => (EventType::Warning, "ApplyFailed", "Apply", message.clone()),
            Happened::Changed(changes) => (EventType::Normal, "Applied", "Apply", summary(changes)),
        };
        Event {
            type_,
            reason: reason.into(),
            note: Some(truncate(note)),
            action: action.into(),
            secondary: None,
        }
    }
}

/// Records `happened` on the Blueprint.
pub async fn record(client: &Client, blueprint: &Blueprint, happened: &Happened) {
    let recorder = Recorder::new(client.clone(), Reporter::from(REPORTER));
    if let Err(e) = recorder
        .publish(&happened.event(), &blueprint.object_ref(&()))
        .await
    {
        tracing::warn!(blueprint = %blueprint.name_any(), "cannot record an event: {e}");
    }
}

/// Whether the Blueprint's status already says `message` in its `condition` for this
/// generation: then the reconcile that wrote it recorded the Warning, and later reconciles
/// (retries, owned-object changes) do not repeat it.
pub fn already_reported(blueprint: &Blueprint, condition: &str, message: &str) -> bool {
    blueprint.status.as_ref().is_some_and(|status| {
        status.observed_generation == blueprint.metadata.generation
            && status
                .conditions
                .iter()
                .any(|c| c.type_ == condition && c.message == message)
    })
}

/// "created 2 (ConfigMap/a, Deployment/a); updated 1 (...); pruned 1 (...)".
pub fn summary(changes: &Changes) -> String {
    [
        ("created", &changes.created),
        ("updated", &changes.updated),
        ("pruned", &changes.pruned),
    ]
    .into_iter()
    .filter(|(_, names)| !names.is_empty())
    .map(|(what, names)| format!("{what} {} ({})", names.len(), names.join(", ")))
    .collect::<Vec<_>>()
    .join("; ")
}

fn truncate(mut note: String) -> String {
    if note.len() > NOTE_LIMIT {
        let mut end = NOTE_LIMIT - 3;
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
        note.push_str("...");
    }
    note
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_names_every_change_and_stays_under_the_limit() {
        let changes = Changes {
            created: vec!["ConfigMap/a".into(), "Deployment/a".into()],
            updated: vec![],
            pruned: vec!["Service/b".into()],
        };
        assert_eq!(
            summary(&changes),
            "created 2 (ConfigMap/a, Deployment/a); pruned 1 (Service/b)"
        );
        let long = truncate("é".repeat(NOTE_LIMIT));
        assert!(long.len() <= NOTE_LIMIT && long.ends_with("..."));
    }
}
