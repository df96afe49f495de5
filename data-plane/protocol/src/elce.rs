//! 9/ELCE: endpoint connectivity events broadcast by the gateway and endpoint lifecycle
//! events broadcast by the endpoint register.
//!
//! Connectivity: one [`ConnectedEvent`] when endpoints open a session, one
//! [`DisconnectedEvent`] listing every endpoint of a session when it ends (not one event per
//! endpoint). Subjects: [`crate::subject::elce_connected`] / [`crate::subject::elce_disconnected`].
//!
//! Lifecycle: [`RegisteredEvent`] / [`UnregisteredEvent`] when EPR creates / deletes an
//! endpoint, on [`crate::subject::elce_registered`] / [`crate::subject::elce_unregistered`], and
//! [`AppVersionUpdatedEvent`] when it moves one to another version of its application
//! ([`crate::subject::elce_app_version_updated`]). The
//! credential service listens to `unregistered` to delete (and revoke) the endpoint's tokens.
//! Schemas: `schemas/0009/`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::avro::avro_record;

/// Endpoints that opened a communication session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectedEvent {
    pub correlation_id: String,
    pub timestamp: i64,
    pub timeout: i64,
    /// endpointId -> appVersionName.
    pub endpoints: BTreeMap<String, String>,
    /// The gateway replica that holds the session (lets extensions route pushes to it).
    pub originator_replica_id: String,
}
avro_record!(ConnectedEvent, "0009/0009-ep-connected.avsc");

/// Endpoints whose session ended (disconnect, keep-alive timeout, revocation, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DisconnectedEvent {
    pub correlation_id: String,
    pub timestamp: i64,
    pub timeout: i64,
    /// endpointId -> appVersionName.
    pub endpoints: BTreeMap<String, String>,
    pub originator_replica_id: String,
}
avro_record!(DisconnectedEvent, "0009/0009-ep-disconnected.avsc");

/// An endpoint was registered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisteredEvent {
    pub correlation_id: String,
    pub timestamp: i64,
    pub timeout: i64,
    pub app_version_name: String,
    pub endpoint_id: String,
    pub originator_replica_id: String,
}
avro_record!(RegisteredEvent, "0009/0009-ep-registered.avsc");

/// An endpoint was deleted from the register.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnregisteredEvent {
    pub correlation_id: String,
    pub timestamp: i64,
    pub timeout: i64,
    pub app_version_name: String,
    pub endpoint_id: String,
    pub originator_replica_id: String,
}
avro_record!(UnregisteredEvent, "0009/0009-ep-unregistered.avsc");

/// An endpoint was moved to another version of its application.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppVersionUpdatedEvent {
    pub correlation_id: String,
    pub timestamp: i64,
    pub timeout: i64,
    /// The version the endpoint uses from now on.
    pub app_version_name: String,
    pub previous_app_version_name: String,
    pub endpoint_id: String,
    pub originator_replica_id: String,
}
avro_record!(AppVersionUpdatedEvent, "0009/0009-ep-appversion-updated.avsc");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::avro::{
        AvroRecord,
        testing::{assert_rejects_truncation_and_trailing, assert_schema_name, round_trip},
    };

    #[test]
    fn connected_event_wire_layout() {
        let ev = ConnectedEvent {
            correlation_id: "c".into(),
            timestamp: 2,
            timeout: 0,
            endpoints: BTreeMap::from([("e".into(), "v".into())]),
            originator_replica_id: "r".into(),
        };
        // map = block count 1 (zig-zag 2), key, value, end-of-map block 0.
        let expected = [
            0x02, b'c', 0x04, 0x00, 0x02, 0x02, b'e', 0x02, b'v', 0x00, 0x02, b'r',
        ];
        assert_eq!(round_trip(&ev), expected);
        assert_rejects_truncation_and_trailing::<ConnectedEvent>(&expected);
    }

    #[test]
    fn events_with_no_or_many_endpoints_round_trip() {
        round_trip(&DisconnectedEvent {
            originator_replica_id: "kpc-0".into(),
            ..Default::default()
        });
        let many: BTreeMap<String, String> = (0..500)
            .map(|i| (format!("endpoint-{i}"), format!("app-v{}", i % 3)))
            .collect();
        round_trip(&DisconnectedEvent {
            correlation_id: "c".into(),
            timestamp: 1,
            timeout: 0,
            endpoints: many,
            originator_replica_id: "kpc-0".into(),
        });
    }

    #[test]
    fn decodes_a_multi_block_map() {
        // Avro writers may split a map into several blocks, and may use a negative
        // count followed by the block's byte size; both must decode.
        let mut b = vec![0x02, b'c', 0x04, 0x00];
        b.extend_from_slice(&[0x02, 0x02, b'a', 0x02, b'1']); // block of 1
        b.extend_from_slice(&[0x01, 0x08, 0x02, b'b', 0x02, b'2']); // block of -1, 4 bytes
        b.extend_from_slice(&[0x00, 0x02, b'r']);
        let ev = ConnectedEvent::from_avro(&b).unwrap();
        assert_eq!(
            ev.endpoints,
            BTreeMap::from([("a".into(), "1".into()), ("b".into(), "2".into())])
        );
    }

    #[test]
    fn schemas_are_the_rfc_records() {
        assert_schema_name::<ConnectedEvent>("ConnectedEvent");
        assert_schema_name::<DisconnectedEvent>("DisconnectedEvent");
        assert_schema_name::<RegisteredEvent>("RegisteredEvent");
        assert_schema_name::<UnregisteredEvent>("UnregisteredEvent");
        assert_schema_name::<AppVersionUpdatedEvent>("AppVersionUpdatedEvent");
    }

    #[test]
    fn lifecycle_events_wire_layout() {
        let ev = UnregisteredEvent {
            correlation_id: "c".into(),
            timestamp: 1,
            timeout: 0,
            app_version_name: "v".into(),
            endpoint_id: "e".into(),
            originator_replica_id: "r".into(),
        };
        let expected = [0x02, b'c', 0x02, 0x00, 0x02, b'v', 0x02, b'e', 0x02, b'r'];
        assert_eq!(round_trip(&ev), expected);
        assert_rejects_truncation_and_trailing::<UnregisteredEvent>(&expected);
        let ev = RegisteredEvent {
            correlation_id: "c".into(),
            timestamp: 1,
            timeout: 0,
            app_version_name: "v".into(),
            endpoint_id: "e".into(),
            originator_replica_id: "r".into(),
        };
        assert_eq!(round_trip(&ev), expected, "same layout as unregistered");
        let moved = AppVersionUpdatedEvent {
            correlation_id: "c".into(),
            timestamp: 1,
            timeout: 0,
            app_version_name: "v2".into(),
            previous_app_version_name: "v1".into(),
            endpoint_id: "e".into(),
            originator_replica_id: "r".into(),
        };
        let expected = [
            0x02, b'c', 0x02, 0x00, 0x04, b'v', b'2', 0x04, b'v', b'1', 0x02, b'e', 0x02, b'r',
        ];
        assert_eq!(round_trip(&moved), expected);
        assert_rejects_truncation_and_trailing::<AppVersionUpdatedEvent>(&expected);
    }
}
