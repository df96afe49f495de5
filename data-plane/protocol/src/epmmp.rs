//! 19/EPMMP: endpoint metadata requests from a client (EPMX, REST) to the repository (EPR).
//!
//! Requests go to `kaa.v1.service.{repository}.epmmp.{type}` with a `replyTo`; the
//! repository answers there. Metadata travels as JSON bytes: the whole object in
//! [`EndpointMetadataGetResponse::payload`], an RFC 6902 JSON Patch in
//! [`EndpointMetadataPatchRequest::patch`]. Schemas: `schemas/0019/`.

use serde::{Deserialize, Serialize};

use crate::avro::avro_record;

/// NATS message type of [`EndpointMetadataGetRequest`].
pub const GET_REQUEST: &str = "ep-metadata-get-request";
/// NATS message type of [`EndpointMetadataGetResponse`].
pub const GET_RESPONSE: &str = "ep-metadata-get-response";
/// NATS message type of [`EndpointMetadataPatchRequest`].
pub const PATCH_REQUEST: &str = "ep-metadata-patch-request";
/// NATS message type of [`EndpointMetadataPatchResponse`].
pub const PATCH_RESPONSE: &str = "ep-metadata-patch-response";
/// NATS message type of [`EndpointMetadataKeysGetRequest`].
pub const KEYS_GET_REQUEST: &str = "ep-metadata-keys-get-request";
/// NATS message type of [`EndpointMetadataKeysGetResponse`].
pub const KEYS_GET_RESPONSE: &str = "ep-metadata-keys-get-response";

/// Read an endpoint's metadata (all keys, or only those in `include`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointMetadataGetRequest {
    pub correlation_id: String,
    pub timestamp: i64,
    pub timeout: i64,
    pub endpoint_id: String,
    /// Keys to return; empty = all.
    pub include: Vec<String>,
    /// Whether the response should carry the metadata itself (schema default: true).
    pub include_metadata: bool,
}
avro_record!(
    EndpointMetadataGetRequest,
    "0019/0019-endpoint-metadata-get-request.avsc"
);

impl Default for EndpointMetadataGetRequest {
    /// Field defaults as in the schema file (`includeMetadata` defaults to `true`).
    fn default() -> Self {
        Self {
            correlation_id: String::new(),
            timestamp: 0,
            timeout: 0,
            endpoint_id: String::new(),
            include: Vec::new(),
            include_metadata: true,
        }
    }
}

/// An endpoint's metadata as a JSON object, with its version tag.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointMetadataGetResponse {
    pub correlation_id: String,
    pub timestamp: i64,
    pub timeout: i64,
    pub endpoint_id: String,
    /// Version of the metadata, usable as `if_match` in a later patch.
    pub e_tag: Option<String>,
    /// JSON object (UTF-8) of the requested keys.
    #[serde(with = "serde_bytes")]
    pub payload: Option<Vec<u8>>,
    pub status_code: i32,
    pub reason_phrase: Option<String>,
    pub app_version_name: Option<String>,
}
avro_record!(
    EndpointMetadataGetResponse,
    "0019/0019-endpoint-metadata-get-response.avsc"
);

/// Apply an RFC 6902 JSON Patch to an endpoint's metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointMetadataPatchRequest {
    pub correlation_id: String,
    pub timestamp: i64,
    pub timeout: i64,
    pub endpoint_id: String,
    /// Apply only if the current eTag equals this (like HTTP `If-Match`).
    pub if_match: Option<String>,
    /// JSON Patch document (UTF-8 JSON array of operations).
    #[serde(with = "serde_bytes")]
    pub patch: Vec<u8>,
}
avro_record!(
    EndpointMetadataPatchRequest,
    "0019/0019-endpoint-metadata-patch-request.avsc"
);

/// Outcome of a metadata patch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointMetadataPatchResponse {
    pub correlation_id: String,
    pub timestamp: i64,
    pub timeout: i64,
    pub endpoint_id: String,
    pub status_code: i32,
    pub reason_phrase: Option<String>,
}
avro_record!(
    EndpointMetadataPatchResponse,
    "0019/0019-endpoint-metadata-patch-response.avsc"
);

/// List an endpoint's metadata keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointMetadataKeysGetRequest {
    pub correlation_id: String,
    pub timestamp: i64,
    pub timeout: i64,
    pub endpoint_id: String,
}
avro_record!(
    EndpointMetadataKeysGetRequest,
    "0019/0019-endpoint-metadata-keys-get-request.avsc"
);

/// An endpoint's metadata keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointMetadataKeysGetResponse {
    pub correlation_id: String,
    pub timestamp: i64,
    pub timeout: i64,
    pub endpoint_id: String,
    pub keys: Vec<String>,
    pub status_code: i32,
    pub reason_phrase: Option<String>,
}
avro_record!(
    EndpointMetadataKeysGetResponse,
    "0019/0019-endpoint-metadata-keys-get-response.avsc"
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::avro::{
        AvroRecord,
        testing::{assert_rejects_truncation_and_trailing, assert_schema_name, round_trip},
    };

    #[test]
    fn get_request_wire_layout() {
        let req = EndpointMetadataGetRequest {
            correlation_id: "c".into(),
            endpoint_id: "e".into(),
            include: vec!["k1".into(), "k2".into()],
            ..Default::default()
        };
        // array: block count 2 (zig-zag 4), items, end block 0; boolean true = 0x01.
        let expected = [
            0x02, b'c', 0x00, 0x00, 0x02, b'e', 0x04, 0x04, b'k', b'1', 0x04, b'k', b'2', 0x00, 0x01,
        ];
        assert_eq!(round_trip(&req), expected);
        assert_rejects_truncation_and_trailing::<EndpointMetadataGetRequest>(&expected);
        // An empty array is a single 0 block.
        let all = EndpointMetadataGetRequest {
            include: vec![],
            include_metadata: false,
            ..req
        };
        assert_eq!(round_trip(&all), [0x02, b'c', 0x00, 0x00, 0x02, b'e', 0x00, 0x00]);
    }

    #[test]
    fn get_response_null_first_unions() {
        let resp = EndpointMetadataGetResponse {
            correlation_id: "c".into(),
            endpoint_id: "e".into(),
            e_tag: Some("t".into()),
            payload: Some(b"{}".to_vec()),
            status_code: 200,
            reason_phrase: None,
            app_version_name: Some("v".into()),
            ..Default::default()
        };
        // eTag, payload, reasonPhrase and appVersionName are all ["null", X]: X = branch 1.
        let expected = [
            0x02, b'c', 0x00, 0x00, 0x02, b'e', 0x02, 0x02, b't', 0x02, 0x04, b'{', b'}', 0x90, 0x03, 0x00,
            0x02, 0x02, b'v',
        ];
        assert_eq!(round_trip(&resp), expected);
        assert_rejects_truncation_and_trailing::<EndpointMetadataGetResponse>(&expected);
        let not_found = EndpointMetadataGetResponse {
            e_tag: None,
            payload: None,
            status_code: 404,
            reason_phrase: Some("Endpoint not found".into()),
            app_version_name: None,
            ..resp
        };
        round_trip(&not_found);
    }

    #[test]
    fn patch_request_and_response_round_trip() {
        let req = EndpointMetadataPatchRequest {
            correlation_id: "c".into(),
            timestamp: 5,
            timeout: 1000,
            endpoint_id: "e".into(),
            if_match: None,
            patch: br#"[{"op":"add","path":"/k","value":1}]"#.to_vec(),
        };
        let bytes = round_trip(&req);
        // ifMatch null (branch 0) directly precedes the patch length (36 -> 0x48).
        assert_eq!(
            &bytes[..10],
            &[0x02, b'c', 0x0a, 0xd0, 0x0f, 0x02, b'e', 0x00, 0x48, b'[']
        );
        assert_rejects_truncation_and_trailing::<EndpointMetadataPatchRequest>(&bytes);
        round_trip(&EndpointMetadataPatchRequest {
            if_match: Some("etag-1".into()),
            ..req
        });
        round_trip(&EndpointMetadataPatchResponse {
            correlation_id: "c".into(),
            endpoint_id: "e".into(),
            status_code: 412,
            reason_phrase: Some("eTag mismatch".into()),
            ..Default::default()
        });
    }

    #[test]
    fn keys_get_round_trip() {
        let req = EndpointMetadataKeysGetRequest {
            correlation_id: "c".into(),
            endpoint_id: "e".into(),
            ..Default::default()
        };
        assert_eq!(round_trip(&req), [0x02, b'c', 0x00, 0x00, 0x02, b'e']);
        let resp = EndpointMetadataKeysGetResponse {
            correlation_id: "c".into(),
            endpoint_id: "e".into(),
            keys: vec!["name".into(), "location".into()],
            status_code: 200,
            ..Default::default()
        };
        let bytes = round_trip(&resp);
        assert_rejects_truncation_and_trailing::<EndpointMetadataKeysGetResponse>(&bytes);
    }

    #[test]
    fn schemas_are_the_rfc_records() {
        assert_schema_name::<EndpointMetadataGetRequest>("EndpointMetadataGetRequest");
        assert_schema_name::<EndpointMetadataGetResponse>("EndpointMetadataGetResponse");
        assert_schema_name::<EndpointMetadataPatchRequest>("EndpointMetadataPatchRequest");
        assert_schema_name::<EndpointMetadataPatchResponse>("EndpointMetadataPatchResponse");
        assert_schema_name::<EndpointMetadataKeysGetRequest>("EndpointMetadataKeysGetRequest");
        assert_schema_name::<EndpointMetadataKeysGetResponse>("EndpointMetadataKeysGetResponse");
        assert!(EndpointMetadataGetRequest::SCHEMA_JSON.contains("\"includeMetadata\""));
    }
}
