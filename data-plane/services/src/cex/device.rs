//! The device's 11/CEP requests (resource paths after the endpoint token):
//!
//! | Path | Payload | Answer |
//! |---|---|---|
//! | `/command/<type>` | empty or `{"observe"?: bool}` | `[{"id","payload"}]`: the outstanding commands of that type (now delivered) |
//! | `/result/<type>` | `[{"id", "statusCode"?, "reasonPhrase"?, "payload"?}]` (or one such object) | empty 200 |
//!
//! Results are read the way the official client writes them (digest 10.3 items 8-9): a missing
//! or `null` `statusCode` is 200 (the client strips a falsy 0 too, which is no HTTP status), a
//! missing `reasonPhrase` or `payload` is null. Every well-formed result is recorded even when
//! others in the batch are not; the answer then says which were refused: 400 for malformed
//! items, else 404 for ids that name no command. A second result for a command is ignored (the
//! first stays). `observe` is accepted and ignored: CEX always pushes.

use kaa_protocol::esp::{ClientData, ExtensionData};
use kaa_store::cex::{CommandResult, Completion};
use serde_json::Value;

use super::{CexState, commands_json, is_valid_command_type};
use crate::extension::{self, Failure, is_blank};

/// Answers one device request.
pub async fn handle(state: &CexState, reply_to: Option<&str>, data: ClientData) -> ExtensionData {
    let outcome = match &data.endpoint_id {
        None => Err(Failure::new(
            400,
            "11/CEP is endpoint-aware: the request carries no endpoint (token)",
        )),
        Some(endpoint_id) => {
            state.presence.seen(endpoint_id, &data.app_version_name, reply_to);
            route(state, endpoint_id, &data.resource_path, &data.payload).await
        }
    };
    extension::answer(data, &state.config().instance, outcome)
}

async fn route(
    state: &CexState,
    endpoint_id: &str,
    path: &str,
    payload: &[u8],
) -> Result<Option<Vec<u8>>, Failure> {
    let (kind, command_type) = match path.strip_prefix('/').and_then(|p| p.split_once('/')) {
        Some((kind @ ("command" | "result"), command_type)) => (kind, command_type),
        _ => {
            return Err(Failure::new(
                404,
                format!("unknown 11/CEP resource path {path:?}; supported: /command/<type>, /result/<type>"),
            ));
        }
    };
    if !is_valid_command_type(command_type) {
        return Err(Failure::new(
            400,
            format!("invalid command type {command_type:?}: 1-64 letters, digits, '_' or '-'"),
        ));
    }
    match kind {
        "command" => pull(state, endpoint_id, command_type, payload).await,
        _ => results(state, endpoint_id, command_type, payload)
            .await
            .map(|()| None),
    }
}

fn internal(e: impl std::fmt::Display) -> Failure {
    tracing::error!(error = %e, "CEX storage failed");
    Failure::new(500, "internal error")
}

async fn pull(
    state: &CexState,
    endpoint_id: &str,
    command_type: &str,
    payload: &[u8],
) -> Result<Option<Vec<u8>>, Failure> {
    if !is_blank(payload) {
        let valid = match serde_json::from_slice::<Value>(payload) {
            Ok(Value::Object(o)) => o.iter().all(|(k, v)| k == "observe" && v.is_boolean()),
            _ => false,
        };
        if !valid {
            return Err(Failure::new(
                400,
                "invalid /command payload: expected an empty payload or {\"observe\": true|false}",
            ));
        }
    }
    let commands = state
        .store
        .outstanding_commands(&state.config().instance, endpoint_id, Some(command_type))
        .await
        .map_err(internal)?;
    let ids: Vec<i64> = commands.iter().map(|c| c.id).collect();
    state
        .store
        .commands_delivered(state.scope(endpoint_id, command_type), &ids)
        .await
        .map_err(internal)?;
    Ok(Some(commands_json(&commands).to_string().into_bytes()))
}

/// One parsed result item.
fn parse_item(item: &Value) -> Result<(i64, CommandResult), String> {
    let Value::Object(o) = item else {
        return Err(format!("a result must be an object, not {item}"));
    };
    let id = match o.get("id") {
        Some(Value::Number(n)) => n.as_i64().filter(|id| *id > 0),
        _ => None,
    }
    .ok_or_else(|| format!("a result needs a positive integer \"id\": {item}"))?;
    let status_code = match o.get("statusCode") {
        None | Some(Value::Null) => 200,
        Some(Value::Number(n)) => match n.as_i64() {
            Some(0) => 200,
            Some(code) => code,
            None => return Err(format!("\"statusCode\" of result {id} is not an integer")),
        },
        Some(other) => return Err(format!("\"statusCode\" of result {id} is not a number: {other}")),
    };
    let reason_phrase = match o.get("reasonPhrase") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            return Err(format!(
                "\"reasonPhrase\" of result {id} is not a string: {other}"
            ));
        }
    };
    let payload = o.get("payload").filter(|p| !p.is_null()).cloned();
    Ok((
        id,
        CommandResult {
            completed_at: kaa_protocol::now_millis(),
            status_code,
            reason_phrase,
            payload,
        },
    ))
}

async fn results(
    state: &CexState,
    endpoint_id: &str,
    command_type: &str,
    payload: &[u8],
) -> Result<(), Failure> {
    let items = match serde_json::from_slice::<Value>(payload) {
        Ok(Value::Array(items)) => items,
        Ok(single @ Value::Object(_)) => vec![single],
        Ok(other) => {
            return Err(Failure::new(
                400,
                format!("invalid /result payload: expected an array of results, not {other}"),
            ));
        }
        Err(e) => {
            return Err(Failure::new(
                400,
                format!("invalid /result payload: not valid JSON ({e})"),
            ));
        }
    };
    let (mut malformed, mut unknown) = (Vec::new(), Vec::new());
    let mut recorded = false;
    for item in &items {
        let (id, result) = match parse_item(item) {
            Ok(parsed) => parsed,
            Err(why) => {
                malformed.push(why);
                continue;
            }
        };
        match state
            .store
            .complete_command(state.scope(endpoint_id, command_type), id, &result)
            .await
            .map_err(internal)?
        {
            Completion::Recorded => recorded = true,
            Completion::AlreadyCompleted => {}
            Completion::Unknown => unknown.push(id.to_string()),
        }
    }
    if recorded {
        state.results.send_modify(|n| *n = n.wrapping_add(1));
    }
    if !malformed.is_empty() {
        return Err(Failure::new(
            400,
            format!("invalid /result payload: {}", malformed.join("; ")),
        ));
    }
    if !unknown.is_empty() {
        return Err(Failure::new(
            404,
            format!(
                "no {command_type:?} command with id {} for this endpoint",
                unknown.join(", ")
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn results_are_read_like_the_official_client_writes_them() {
        let (id, r) = parse_item(&json!({"id": 3, "statusCode": 200, "payload": {"a": 1}})).unwrap();
        assert_eq!((id, r.status_code, r.payload), (3, 200, Some(json!({"a": 1}))));
        let (_, r) = parse_item(&json!({"id": 1})).unwrap();
        assert_eq!((r.status_code, r.reason_phrase, r.payload), (200, None, None));
        let (_, r) = parse_item(&json!({"id": 1, "statusCode": null, "reasonPhrase": null})).unwrap();
        assert_eq!(r.status_code, 200);
        let (_, r) = parse_item(&json!({"id": 1, "statusCode": 500, "reasonPhrase": "boom"})).unwrap();
        assert_eq!((r.status_code, r.reason_phrase.as_deref()), (500, Some("boom")));
        for bad in [
            json!({"statusCode": 200}),
            json!({"id": 0}),
            json!({"id": "1"}),
            json!(7),
        ] {
            assert!(parse_item(&bad).is_err(), "{bad}");
        }
        assert!(
            parse_item(&json!({"id": 1, "statusCode": "ok"}))
                .unwrap_err()
                .contains("statusCode")
        );
    }
}
