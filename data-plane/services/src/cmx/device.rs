//! The device's 7/CMP requests (resource paths after the endpoint token):
//!
//! | Path | Payload | Answer |
//! |---|---|---|
//! | `/config/json` | empty or `{"configId"?: string, "observe"?: bool}` | `{"configId","config"}`, or `{}` when `configId` is the current one; no configuration: `{"configId":"","config":null}` |
//! | `/applied/json` | `{"configId": string, "statusCode"?: number, "reasonPhrase"?: string}` | empty 200 |
//!
//! `null` `statusCode` / `reasonPhrase` count as absent (status 200), as the official client
//! sends them (digest 10.3 item 5); a `configId` this instance never issued is recorded as
//! reported (item 6). `observe` is accepted and ignored: CMX always pushes changes. Named
//! configurations inside one instance (`/config/json/<name>`) are not served: each name is its
//! own instance (`cmx_ota`).

use kaa_protocol::esp::{ClientData, ExtensionData};
use kaa_store::cmx::ConfigStatus;
use serde_json::{Value, json};

use super::{CmxState, config_json};
use crate::extension::{self, Failure, is_blank};

/// Answers one device request.
pub async fn handle(state: &CmxState, reply_to: Option<&str>, data: ClientData) -> ExtensionData {
    let outcome = match &data.endpoint_id {
        None => Err(Failure::new(
            400,
            "7/CMP is endpoint-aware: the request carries no endpoint (token)",
        )),
        Some(endpoint_id) => {
            state.presence.seen(endpoint_id, &data.app_version_name, reply_to);
            match data.resource_path.as_str() {
                "/config/json" => pull(state, endpoint_id, &data.app_version_name, &data.payload).await,
                "/applied/json" => applied(state, endpoint_id, &data.app_version_name, &data.payload)
                    .await
                    .map(|()| None),
                other => Err(Failure::new(
                    404,
                    format!("unknown 7/CMP resource path {other:?}; supported: /config/json, /applied/json"),
                )),
            }
        }
    };
    extension::answer(data, &state.config().instance, outcome)
}

fn internal(e: impl std::fmt::Display) -> Failure {
    tracing::error!(error = %e, "CMX storage failed");
    Failure::new(500, "internal error")
}

fn invalid(path: &str, why: impl std::fmt::Display) -> Failure {
    Failure::new(400, format!("invalid {path} payload: {why}"))
}

/// The `configId` the device says it has, if any.
fn parse_pull(payload: &[u8]) -> Result<Option<String>, Failure> {
    const PATH: &str = "/config/json";
    if is_blank(payload) {
        return Ok(None);
    }
    let Value::Object(o) =
        serde_json::from_slice(payload).map_err(|e| invalid(PATH, format!("not valid JSON ({e})")))?
    else {
        return Err(invalid(PATH, "expected an object like {\"configId\": \"...\"}"));
    };
    let mut config_id = None;
    for (key, value) in o {
        match (key.as_str(), value) {
            ("configId", Value::String(id)) => config_id = Some(id),
            ("observe", Value::Bool(_)) => {}
            ("configId" | "observe", v) => {
                return Err(invalid(PATH, format!("{key:?} has the wrong type: {v}")));
            }
            _ => return Err(invalid(PATH, format!("unexpected property {key:?}"))),
        }
    }
    Ok(config_id)
}

async fn pull(
    state: &CmxState,
    endpoint_id: &str,
    app_version: &str,
    payload: &[u8],
) -> Result<Option<Vec<u8>>, Failure> {
    let known = parse_pull(payload)?;
    let doc = state
        .store
        .effective_config(state.name(), app_version, endpoint_id)
        .await
        .map_err(internal)?;
    let current_id = doc.as_ref().map_or("", |d| d.config_id.as_str());
    if known.as_deref() == Some(current_id) {
        return Ok(Some(b"{}".to_vec()));
    }
    let Some(doc) = doc else {
        return Ok(Some(
            json!({"configId": "", "config": null}).to_string().into_bytes(),
        ));
    };
    state
        .store
        .config_dispatched(state.name(), endpoint_id, app_version, &doc.config_id)
        .await
        .map_err(internal)?;
    Ok(Some(config_json(&doc)))
}

/// `(configId, statusCode, reasonPhrase)` of an applied report.
fn parse_applied(payload: &[u8]) -> Result<(String, i64, Option<String>), Failure> {
    const PATH: &str = "/applied/json";
    let Value::Object(o) =
        serde_json::from_slice(payload).map_err(|e| invalid(PATH, format!("not valid JSON ({e})")))?
    else {
        return Err(invalid(
            PATH,
            "expected an object like {\"configId\": \"...\", \"statusCode\": 200}",
        ));
    };
    let Some(Value::String(config_id)) = o.get("configId") else {
        return Err(invalid(PATH, "\"configId\" (a string) is required"));
    };
    let status_code = match o.get("statusCode") {
        None | Some(Value::Null) => 200,
        Some(Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| invalid(PATH, "\"statusCode\" must be an integer"))?,
        Some(v) => return Err(invalid(PATH, format!("\"statusCode\" must be a number, not {v}"))),
    };
    let reason_phrase = match o.get("reasonPhrase") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(v) => {
            return Err(invalid(
                PATH,
                format!("\"reasonPhrase\" must be a string, not {v}"),
            ));
        }
    };
    Ok((config_id.clone(), status_code, reason_phrase))
}

async fn applied(
    state: &CmxState,
    endpoint_id: &str,
    app_version: &str,
    payload: &[u8],
) -> Result<(), Failure> {
    let (config_id, status_code, reason_phrase) = parse_applied(payload)?;
    let status = ConfigStatus {
        config_name: state.name().to_owned(),
        endpoint_id: endpoint_id.to_owned(),
        app_version: app_version.to_owned(),
        dispatched_config_id: None,
        dispatched_at: None,
        applied_config_id: Some(config_id),
        applied_at: None,
        status_code: Some(status_code),
        reason_phrase,
    };
    state.store.config_applied(&status).await.map_err(internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_requests() {
        assert_eq!(parse_pull(b"").unwrap(), None);
        assert_eq!(parse_pull(b"{}").unwrap(), None);
        assert_eq!(
            parse_pull(br#"{"configId":"a","observe":true}"#)
                .unwrap()
                .as_deref(),
            Some("a")
        );
        for bad in [&br#"{"configId":1}"#[..], b"[]", b"{nope", br#"{"x":1}"#] {
            assert_eq!(parse_pull(bad).unwrap_err().status_code, 400);
        }
    }

    #[test]
    fn applied_reports_tolerate_nulls() {
        assert_eq!(
            parse_applied(br#"{"configId":"a","statusCode":null,"reasonPhrase":null}"#).unwrap(),
            ("a".into(), 200, None)
        );
        assert_eq!(
            parse_applied(br#"{"configId":"a","statusCode":400,"reasonPhrase":"bad"}"#).unwrap(),
            ("a".into(), 400, Some("bad".into()))
        );
        assert_eq!(parse_applied(br#"{"configId":"v1.2"}"#).unwrap().1, 200);
        for bad in [
            &br#"{}"#[..],
            br#"{"configId":null}"#,
            b"",
            br#"{"configId":"a","statusCode":"x"}"#,
        ] {
            assert_eq!(parse_applied(bad).unwrap_err().status_code, 400);
        }
    }
}
