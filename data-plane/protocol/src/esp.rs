//! 4/ESP: the data plane between the gateway (KPC) and extension services.
//!
//! [`ClientData`] carries a device's request to an extension on
//! `kaa.v1.service.{ext}.esp.ClientData`; [`ExtensionData`] carries the extension's
//! answer (or an unsolicited push) back, normally on the KPC replica subject given as
//! `replyTo`. Schemas: `schemas/0004/`.

use serde::{Deserialize, Serialize};

use crate::avro::avro_record;

/// NATS message type of [`ClientData`] (last subject token).
pub const CLIENT_DATA: &str = "ClientData";
/// NATS message type of [`ExtensionData`] (last subject token).
pub const EXTENSION_DATA: &str = "ExtensionData";

/// Client-originated message from the gateway to an extension service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientData {
    pub correlation_id: String,
    /// Creation time, ms since the UNIX epoch.
    pub timestamp: i64,
    /// ms after `timestamp` until the message expires; 0 = never.
    pub timeout: i64,
    /// Application version from the topic.
    pub app_version_name: String,
    /// Resolved endpoint; `None` for endpoint-unaware extensions.
    pub endpoint_id: Option<String>,
    /// Extension-specific path after the token, with a leading `/`, e.g. `/json`.
    pub resource_path: String,
    /// The 1/KP request id, if the topic had one.
    pub request_id: Option<i32>,
    /// Raw device payload.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    /// Named configuration (7/CMP); `None` means `default`.
    pub config_name: Option<String>,
}
avro_record!(ClientData, "0004/0004-client-data.avsc");

/// Extension-originated message for a device, sent to the gateway.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionData {
    pub correlation_id: String,
    pub timestamp: i64,
    pub timeout: i64,
    /// Must be set for endpoint-unaware extensions; `None` only if the extension does not
    /// know the endpoint's application version.
    pub app_version_name: Option<String>,
    /// The originating extension instance (topic level 3).
    pub extension_instance_name: Option<String>,
    /// Target endpoint; `None` for endpoint-unaware extensions.
    pub endpoint_id: Option<String>,
    pub resource_path: String,
    /// Echo of the request id; `None` for unsolicited pushes.
    pub request_id: Option<i32>,
    #[serde(with = "serde_bytes")]
    pub payload: Option<Vec<u8>>,
    /// HTTP-style status: 2xx goes to `/status`, anything else to `/error`.
    pub status_code: i32,
    pub reason_phrase: Option<String>,
}
avro_record!(ExtensionData, "0004/0004-extension-data.avsc");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::avro::{
        AvroError, AvroRecord,
        testing::{assert_rejects_truncation_and_trailing, assert_schema_name, round_trip},
    };

    /// Avro length-prefixed string/bytes: zig-zag varint length, then the bytes.
    fn avro_str(out: &mut Vec<u8>, s: &[u8]) {
        assert!(s.len() < 64, "single-byte length prefix only");
        out.push((s.len() as u8) << 1);
        out.extend_from_slice(s);
    }

    fn small() -> ClientData {
        ClientData {
            correlation_id: "c1".into(),
            timestamp: 1,
            timeout: 0,
            app_version_name: "av".into(),
            endpoint_id: Some("ep".into()),
            resource_path: "/json".into(),
            request_id: Some(42),
            payload: b"{}".to_vec(),
            config_name: None,
        }
    }

    /// Hand-assembled wire bytes for [`small`], field by field, from the Avro spec:
    /// longs/ints are zig-zag varints, a union is its branch index (zig-zag) then the value.
    fn small_bytes(endpoint_branch: Option<&[u8]>, config_branch: Option<&[u8]>) -> Vec<u8> {
        let mut b = Vec::new();
        avro_str(&mut b, b"c1"); // correlationId
        b.push(0x02); // timestamp 1
        b.push(0x00); // timeout 0
        avro_str(&mut b, b"av"); // appVersionName
        match endpoint_branch {
            // endpointId is ["string","null"]: string is branch 0, null is branch 1
            Some(ep) => {
                b.push(0x00);
                avro_str(&mut b, ep);
            }
            None => b.push(0x02),
        }
        avro_str(&mut b, b"/json"); // resourcePath
        b.extend_from_slice(&[0x00, 0x54]); // requestId ["int","null"]: branch 0, 42 -> 84
        avro_str(&mut b, b"{}"); // payload: plain bytes, no union
        match config_branch {
            // configName is ["null","string"]: null is branch 0, string is branch 1
            None => b.push(0x00),
            Some(c) => {
                b.push(0x02);
                avro_str(&mut b, c);
            }
        }
        b
    }

    #[test]
    fn client_data_encodes_to_hand_computed_bytes() {
        assert_eq!(small().to_avro(), small_bytes(Some(b"ep"), None));
        assert_eq!(
            small().to_avro(),
            [
                0x04, b'c', b'1', 0x02, 0x00, 0x04, b'a', b'v', 0x00, 0x04, b'e', b'p', 0x0a, b'/', b'j',
                b's', b'o', b'n', 0x00, 0x54, 0x04, b'{', b'}', 0x00,
            ]
        );
    }

    #[test]
    fn client_data_union_branch_order_follows_the_schema() {
        let unaware = ClientData {
            endpoint_id: None,
            config_name: Some("ota".into()),
            ..small()
        };
        assert_eq!(unaware.to_avro(), small_bytes(None, Some(b"ota")));
        let no_rid = ClientData {
            request_id: None,
            ..small()
        };
        let bytes = no_rid.to_avro();
        // requestId null = branch 1 (zig-zag 0x02), directly followed by the payload length.
        assert_eq!(&bytes[18..20], &[0x02, 0x04]);
    }

    #[test]
    fn client_data_decodes_hand_written_bytes() {
        assert_eq!(
            ClientData::from_avro(&small_bytes(Some(b"ep"), None)).unwrap(),
            small()
        );
        let decoded = ClientData::from_avro(&small_bytes(None, Some(b"ota"))).unwrap();
        assert_eq!(decoded.endpoint_id, None);
        assert_eq!(decoded.config_name.as_deref(), Some("ota"));
    }

    #[test]
    fn client_data_rejects_bad_input_without_panicking() {
        let good = small_bytes(Some(b"ep"), None);
        assert_rejects_truncation_and_trailing::<ClientData>(&good);

        // union branch index 2 does not exist in ["string","null"]
        let mut bad_branch = good.clone();
        bad_branch[8] = 0x04;
        assert!(matches!(
            ClientData::from_avro(&bad_branch),
            Err(AvroError::Decode { .. })
        ));

        // invalid UTF-8 in correlationId
        let mut bad_utf8 = good.clone();
        bad_utf8[1] = 0xff;
        let err = ClientData::from_avro(&bad_utf8).unwrap_err();
        assert!(
            err.to_string().starts_with("invalid Avro ClientData message"),
            "{err}"
        );

        // a length prefix far larger than the message
        let huge = [0xfe, 0xff, 0xff, 0xff, 0x0f];
        assert!(ClientData::from_avro(&huge).is_err());
        // a negative length prefix
        assert!(ClientData::from_avro(&[0x01]).is_err());
    }

    #[test]
    fn client_data_empty_and_binary_payloads_survive() {
        round_trip(&ClientData {
            payload: Vec::new(),
            ..small()
        });
        round_trip(&ClientData {
            payload: (0..=255).collect(),
            request_id: Some(i32::MAX),
            timestamp: i64::MIN,
            timeout: i64::MAX,
            ..small()
        });
    }

    fn extension_data() -> ExtensionData {
        ExtensionData {
            correlation_id: "c1".into(),
            timestamp: 1,
            timeout: 0,
            app_version_name: Some("av".into()),
            extension_instance_name: Some("cmx".into()),
            endpoint_id: Some("ep".into()),
            resource_path: "/config/json".into(),
            request_id: Some(42),
            payload: Some(b"{}".to_vec()),
            status_code: 200,
            reason_phrase: None,
        }
    }

    #[test]
    fn extension_data_nullable_bytes_and_trailing_reason_phrase() {
        let bytes = round_trip(&extension_data());
        // ... payload ["bytes","null"] branch 0 + len 2 + "{}", statusCode 200 (zig-zag
        // 400 = 0x90 0x03), reasonPhrase ["null","string"] null = branch 0.
        assert!(
            bytes.ends_with(&[0x00, 0x04, b'{', b'}', 0x90, 0x03, 0x00]),
            "{bytes:02x?}"
        );

        let empty = ExtensionData {
            payload: None,
            reason_phrase: Some("Not Found".into()),
            status_code: 404,
            ..extension_data()
        };
        let bytes = round_trip(&empty);
        // payload null = branch 1; 404 -> 808 = 0xa8 0x06; reasonPhrase string = branch 1.
        let mut tail = vec![0x02, 0xa8, 0x06, 0x02, 0x12];
        tail.extend_from_slice(b"Not Found");
        assert!(bytes.ends_with(&tail), "{bytes:02x?}");
        assert_rejects_truncation_and_trailing::<ExtensionData>(&bytes);
    }

    #[test]
    fn extension_data_empty_payload_differs_from_no_payload() {
        let some_empty = ExtensionData {
            payload: Some(Vec::new()),
            ..extension_data()
        };
        let none = ExtensionData {
            payload: None,
            ..extension_data()
        };
        assert_ne!(round_trip(&some_empty), round_trip(&none));
    }

    #[test]
    fn schemas_are_the_rfc_records() {
        assert_schema_name::<ClientData>("ClientData");
        assert_schema_name::<ExtensionData>("ExtensionData");
        assert!(ClientData::SCHEMA_JSON.contains("org.kaaproject.ipc.esp.gen.v1"));
    }
}
