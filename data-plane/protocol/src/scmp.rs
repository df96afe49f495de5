//! 17/SCMP: service configuration update announcements, and kaa-rs's report of the version each
//! replica runs.
//!
//! The config provider (the operator; Tekton in Kaa) publishes a [`ServiceSpecificConfigurationUpdateEvent`]
//! on [`crate::subject::scmp_service_configuration`] for every service instance whose config changed, and a
//! [`BroadcastConfigurationUpdateEvent`] on [`crate::subject::scmp_broadcast_configuration`]. Consumers
//! never acknowledge: they re-fetch their config from the provider and apply it.
//!
//! [`ConfigAppliedEvent`] is ours (the RFC does not say how a provider learns what runs): every replica
//! publishes one on [`crate::subject::scmp_config_applied`] after start, after every apply attempt and
//! periodically, so that the provider can tell how many replicas run which version.
//! Schemas: `schemas/0017/`, `schemas/kaa-rs/config-applied.avsc`.

use serde::{Deserialize, Serialize};

use crate::avro::avro_record;

/// `upsert`: a config was created or changed; `delete`: it was removed.
pub const UPSERT: &str = "upsert";
pub const DELETE: &str = "delete";
/// The provider name of the broadcast subject, and the tenant id kaa-rs announces (it has one
/// tenant per Blueprint).
pub const PROVIDER: &str = "kaa-operator";
pub const DEFAULT_TENANT: &str = "default";

/// Many service instances' configs changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BroadcastConfigurationUpdateEvent {
    pub correlation_id: String,
    pub timestamp: i64,
    pub originator_replica_id: String,
    #[serde(rename = "tenantID")]
    pub tenant_id: Option<String>,
    pub app_name: Option<String>,
    pub app_ver_name: Option<String>,
}
avro_record!(
    BroadcastConfigurationUpdateEvent,
    "0017/0017-broadcast_configuration_update.avsc"
);

/// One service instance's config changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpecificConfigurationUpdateEvent {
    pub correlation_id: String,
    pub timestamp: i64,
    #[serde(rename = "tenantID")]
    pub tenant_id: String,
    pub app_name: Option<String>,
    pub app_ver_name: Option<String>,
}
avro_record!(
    ServiceSpecificConfigurationUpdateEvent,
    "0017/0017-service_specific_configuration_update.avsc"
);

/// A replica's report of the config version it runs (kaa-rs extension).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigAppliedEvent {
    pub correlation_id: String,
    pub timestamp: i64,
    pub service_instance_name: String,
    pub originator_replica_id: String,
    /// The version of the config the replica runs.
    pub version: String,
    /// Why the latest config offered was not applied; `None` when the replica runs the latest.
    pub error: Option<String>,
    /// The version that was not applied, when `error` is set.
    pub rejected_version: Option<String>,
}
avro_record!(ConfigAppliedEvent, "kaa-rs/config-applied.avsc");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::avro::AvroRecord;

    #[test]
    fn records_round_trip_through_their_rfc_schemas() {
        let broadcast = BroadcastConfigurationUpdateEvent {
            correlation_id: "c1".into(),
            timestamp: 1,
            originator_replica_id: "op-0".into(),
            tenant_id: Some(DEFAULT_TENANT.into()),
            app_name: None,
            app_ver_name: None,
        };
        let decoded = BroadcastConfigurationUpdateEvent::from_avro(&broadcast.to_avro()).unwrap();
        assert_eq!(decoded, broadcast);

        let targeted = ServiceSpecificConfigurationUpdateEvent {
            correlation_id: "c2".into(),
            timestamp: 2,
            tenant_id: DEFAULT_TENANT.into(),
            app_name: Some("smart_meter".into()),
            app_ver_name: Some("smart_meter_v1".into()),
        };
        let decoded = ServiceSpecificConfigurationUpdateEvent::from_avro(&targeted.to_avro()).unwrap();
        assert_eq!(decoded, targeted);

        let applied = ConfigAppliedEvent {
            correlation_id: "c3".into(),
            timestamp: 3,
            service_instance_name: "kpc".into(),
            originator_replica_id: "kpc-abc".into(),
            version: "0123456789ab".into(),
            error: Some("limits.maxConnections: must be at least 1".into()),
            rejected_version: Some("ba9876543210".into()),
        };
        assert_eq!(
            ConfigAppliedEvent::from_avro(&applied.to_avro()).unwrap(),
            applied
        );
    }
}
