//! 3/ISM NATS subjects: the only place subject strings are spelled out.
//!
//! Three shapes: instance-wide `kaa.v1.service.{instance}.{protocol}.{type}` (targeted,
//! queue group = instance name), replica `kaa.v1.replica.{replica}.{protocol}.{type}`
//! (session affinity / `replyTo`), and broadcast
//! `kaa.v1.events.{originator}.{entity}.{group}.{type}`.
//!
//! Builders do not validate: callers pass names that are valid NATS tokens (see
//! [`is_valid_token`]); names coming from devices are checked by
//! [`crate::topic::RequestTopic::parse`] before they get here.

use crate::{ecap, esp};

const PREFIX: &str = "kaa.v1.";

fn join(parts: &[&str]) -> String {
    let len = PREFIX.len() + parts.iter().map(|p| p.len() + 1).sum::<usize>();
    let mut s = String::with_capacity(len);
    s.push_str(PREFIX);
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            s.push('.');
        }
        s.push_str(p);
    }
    s
}

/// `kaa.v1.service.{instance}.{protocol}.{message_type}`
pub fn service(instance: &str, protocol: &str, message_type: &str) -> String {
    join(&["service", instance, protocol, message_type])
}

/// `kaa.v1.replica.{replica_id}.{protocol}.{message_type}`
pub fn replica(replica_id: &str, protocol: &str, message_type: &str) -> String {
    join(&["replica", replica_id, protocol, message_type])
}

/// `kaa.v1.events.{originator}.{entity}.{group}.{event_type}`
pub fn event(originator: &str, entity: &str, group: &str, event_type: &str) -> String {
    join(&["events", originator, entity, group, event_type])
}

/// Where the gateway sends device data for an extension: `kaa.v1.service.{ext}.esp.ClientData`.
pub fn esp_client_data(extension_instance: &str) -> String {
    service(extension_instance, "esp", esp::CLIENT_DATA)
}

/// The gateway replica's `replyTo` for extension answers:
/// `kaa.v1.replica.{replica}.esp.ExtensionData`.
pub fn esp_extension_data_replica(kpc_replica: &str) -> String {
    replica(kpc_replica, "esp", esp::EXTENSION_DATA)
}

/// `kaa.v1.events.{kpc}.endpoint.connectivity.connected`
pub fn elce_connected(kpc_instance: &str) -> String {
    event(kpc_instance, "endpoint", "connectivity", "connected")
}

/// `kaa.v1.events.{kpc}.endpoint.connectivity.disconnected`
pub fn elce_disconnected(kpc_instance: &str) -> String {
    event(kpc_instance, "endpoint", "connectivity", "disconnected")
}

/// `kaa.v1.events.{epr}.endpoint.lifecycle.registered`
pub fn elce_registered(epr_instance: &str) -> String {
    event(epr_instance, "endpoint", "lifecycle", "registered")
}

/// `kaa.v1.events.{epr}.endpoint.lifecycle.unregistered`
pub fn elce_unregistered(epr_instance: &str) -> String {
    event(epr_instance, "endpoint", "lifecycle", "unregistered")
}

/// `kaa.v1.events.{epr}.endpoint.lifecycle.appversion-updated`
pub fn elce_app_version_updated(epr_instance: &str) -> String {
    event(epr_instance, "endpoint", "lifecycle", "appversion-updated")
}

/// 13/DSTP: `kaa.v1.events.{transmitter}.endpoint.data-collection.data-samples-received`
pub fn dstp_data_samples(transmitter: &str) -> String {
    event(
        transmitter,
        "endpoint",
        "data-collection",
        "data-samples-received",
    )
}

/// 14/TSTP: `kaa.v1.events.{transmitter}.endpoint.data-collection.data-points-received.{series}`
pub fn tstp_data_points(transmitter: &str, time_series: &str) -> String {
    join(&[
        "events",
        transmitter,
        "endpoint",
        "data-collection",
        "data-points-received",
        time_series,
    ])
}

/// 13/DSTP: where a transmitter replica wants receivers' `DataSamplesProcessed` answers:
/// `kaa.v1.replica.{replica}.dstp.DataSamplesProcessed`.
pub fn dstp_processed_replica(transmitter_replica: &str) -> String {
    replica(transmitter_replica, "dstp", "DataSamplesProcessed")
}

/// Every KPC instance's 9/ELCE connectivity events: `kaa.v1.events.*.endpoint.connectivity.*`
/// (a subscription pattern, not a subject to publish on).
pub fn elce_connectivity_any() -> String {
    event("*", "endpoint", "connectivity", "*")
}

/// `kaa.v1.service.{provider}.ecap.ep-token-request`
pub fn ecap_token_request(provider: &str) -> String {
    ecap_request(provider, ecap::EP_TOKEN_REQUEST)
}

/// `kaa.v1.service.{provider}.ecap.{message_type}`, e.g. with
/// [`crate::ecap::CLIENT_USERNAME_PASSWORD_REQUEST`].
pub fn ecap_request(provider: &str, message_type: &str) -> String {
    service(provider, "ecap", message_type)
}

/// Endpoint token revocations broadcast by the credential service:
/// `kaa.v1.events.{cm}.endpoint.token.revoked`.
pub fn ecap_token_revoked(cm: &str) -> String {
    event(cm, "endpoint", "token", "revoked")
}

/// Client credential revocations broadcast by the credential service:
/// `kaa.v1.events.{cm}.client.credential.revoked`.
pub fn ecap_credential_revoked(cm: &str) -> String {
    event(cm, "client", "credential", "revoked")
}

/// `kaa.v1.service.{repository}.epmmp.{message_type}`, e.g. with [`crate::epmmp::GET_REQUEST`].
pub fn epmmp_request(repository: &str, message_type: &str) -> String {
    service(repository, "epmmp", message_type)
}

/// 17/SCMP, to one instance: `kaa.v1.service.{instance}.scmp.configuration.{upsert|delete}`.
pub fn scmp_service_configuration(instance: &str, update_type: &str) -> String {
    join(&["service", instance, "scmp", "configuration", update_type])
}

/// 17/SCMP, to every service: `kaa.v1.events.{provider}.service.configuration.{upsert|delete}`.
pub fn scmp_broadcast_configuration(provider: &str, update_type: &str) -> String {
    event(provider, "service", "configuration", update_type)
}

/// A replica's applied-version report (kaa-rs): `kaa.v1.events.{instance}.service.config.applied`.
/// The provider follows every instance with [`scmp_config_applied_any`].
pub fn scmp_config_applied(instance: &str) -> String {
    event(instance, "service", "config", "applied")
}

/// `kaa.v1.events.*.service.config.applied`
pub fn scmp_config_applied_any() -> String {
    scmp_config_applied("*")
}

/// Whether `s` can be used as one subject token: non-empty, and free of the separator
/// `.`, the wildcards `*` and `>`, whitespace and control characters (NATS splits or
/// rejects subjects containing them).
pub fn is_valid_token(s: &str) -> bool {
    !s.is_empty()
        && !s
            .chars()
            .any(|c| matches!(c, '.' | '*' | '>') || c.is_whitespace() || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::epmmp;

    #[test]
    fn generic_shapes() {
        assert_eq!(service("epr", "epmmp", "x"), "kaa.v1.service.epr.epmmp.x");
        assert_eq!(
            replica("kpc-7f9", "esp", "ExtensionData"),
            "kaa.v1.replica.kpc-7f9.esp.ExtensionData"
        );
        assert_eq!(
            event("epr", "endpoint", "lifecycle", "registered"),
            "kaa.v1.events.epr.endpoint.lifecycle.registered"
        );
    }

    #[test]
    fn protocol_subjects() {
        assert_eq!(esp_client_data("epmx"), "kaa.v1.service.epmx.esp.ClientData");
        assert_eq!(
            esp_extension_data_replica("kpc-1"),
            "kaa.v1.replica.kpc-1.esp.ExtensionData"
        );
        assert_eq!(
            elce_connected("kpc"),
            "kaa.v1.events.kpc.endpoint.connectivity.connected"
        );
        assert_eq!(
            elce_disconnected("kpc"),
            "kaa.v1.events.kpc.endpoint.connectivity.disconnected"
        );
        assert_eq!(
            elce_registered("epr"),
            "kaa.v1.events.epr.endpoint.lifecycle.registered"
        );
        assert_eq!(
            elce_unregistered("epr"),
            "kaa.v1.events.epr.endpoint.lifecycle.unregistered"
        );
        assert_eq!(
            elce_app_version_updated("epr"),
            "kaa.v1.events.epr.endpoint.lifecycle.appversion-updated"
        );
        assert_eq!(
            dstp_data_samples("dcx"),
            "kaa.v1.events.dcx.endpoint.data-collection.data-samples-received"
        );
        assert_eq!(
            tstp_data_points("epl", "connectivity"),
            "kaa.v1.events.epl.endpoint.data-collection.data-points-received.connectivity"
        );
        assert_eq!(
            dstp_processed_replica("dcx-0"),
            "kaa.v1.replica.dcx-0.dstp.DataSamplesProcessed"
        );
        assert_eq!(elce_connectivity_any(), "kaa.v1.events.*.endpoint.connectivity.*");
        assert_eq!(
            tstp_data_points("epl", "*"),
            "kaa.v1.events.epl.endpoint.data-collection.data-points-received.*"
        );
        assert_eq!(
            ecap_token_request("cm"),
            "kaa.v1.service.cm.ecap.ep-token-request"
        );
        assert_eq!(
            ecap_request("cm", ecap::EP_TOKEN_STATUS_TRANSITION_REQUEST),
            "kaa.v1.service.cm.ecap.ep-token-status-transition-request"
        );
        assert_eq!(
            ecap_request("cm", ecap::CLIENT_USERNAME_PASSWORD_REQUEST),
            "kaa.v1.service.cm.ecap.client-username-password-request"
        );
        assert_eq!(
            ecap_request("cm", ecap::CLIENT_CERTIFICATE_REQUEST),
            "kaa.v1.service.cm.ecap.client-certificate-request"
        );
        assert_eq!(
            ecap_request("cm", ecap::EP_TOKEN_REQUEST),
            ecap_token_request("cm")
        );
        assert_eq!(
            ecap_token_revoked("cm"),
            "kaa.v1.events.cm.endpoint.token.revoked"
        );
        assert_eq!(
            ecap_credential_revoked("cm"),
            "kaa.v1.events.cm.client.credential.revoked"
        );
        assert_eq!(
            epmmp_request("epr", epmmp::PATCH_REQUEST),
            "kaa.v1.service.epr.epmmp.ep-metadata-patch-request"
        );
        assert_eq!(
            replica("epmx-0", "epmmp", epmmp::KEYS_GET_RESPONSE),
            "kaa.v1.replica.epmx-0.epmmp.ep-metadata-keys-get-response"
        );
        assert_eq!(
            replica("kpc-0", "ecap", ecap::EP_TOKEN_RESPONSE),
            "kaa.v1.replica.kpc-0.ecap.ep-token-response"
        );
    }

    #[test]
    fn token_validity() {
        for ok in ["epmx", "cmx_ota", "kpc-0", "ümlaut"] {
            assert!(is_valid_token(ok), "{ok}");
        }
        for bad in ["", "a.b", "*", "a>", "a b", "a\tb", "a\u{0}"] {
            assert!(!is_valid_token(bad), "{bad:?}");
        }
    }
}
