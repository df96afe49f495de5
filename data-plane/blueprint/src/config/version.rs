//! Config versions: what a replica reports it runs (17/SCMP), and what only a restart applies.
//!
//! Both are content hashes, so the provider that renders a config and the replica that loads it
//! from a file compute the same version without talking to each other.

use sha2::{Digest, Sha256};

use super::ServiceConfig;

impl ServiceConfig {
    /// The config's version: 12 hex digits of the SHA-256 of its JSON form (object keys sorted,
    /// so equal configs have equal versions however they were written).
    pub fn version(&self) -> String {
        short_hash(&serde_json::to_value(self).unwrap_or_default(), 6)
    }

    /// The part of a config a running service reads only at start, so that only a restart
    /// applies a change to it: listeners (ports, TLS files, WebSocket paths), where state lives,
    /// names that key stored data or routes, worker pool sizes, the gateways a service follows,
    /// and KPC's authentication timings. Everything else applies live.
    pub fn restart_relevant(&self) -> serde_json::Value {
        let value = serde_json::to_value(self).unwrap_or_default();
        let mut fixed = serde_json::Map::new();
        for key in FIXED_AT_START {
            if let Some(v) = value.get(key) {
                fixed.insert(key.to_owned(), v.clone());
            }
        }
        if let ServiceConfig::Kpc(_) = self {
            for key in KPC_LIMITS_FIXED_AT_START {
                if let Some(v) = value.get("limits").and_then(|limits| limits.get(key)) {
                    fixed.insert(format!("limits.{key}"), v.clone());
                }
            }
        }
        serde_json::Value::Object(fixed)
    }

    /// A short, stable hash of [`ServiceConfig::restart_relevant`] (the operator puts it on the pod
    /// template: a change rolls the pods).
    pub fn restart_hash(&self) -> String {
        short_hash(&self.restart_relevant(), 8)
    }

    /// Whether `next` can replace this config in a running service: same kind, same instance,
    /// same restart-relevant part. `Err` says what differs.
    pub fn live_change_to(&self, next: &ServiceConfig) -> Result<(), String> {
        if self.kind() != next.kind() || self.instance() != next.instance() {
            return Err(format!(
                "the config is for `{}` ({}), this service is `{}` ({})",
                next.instance(),
                next.kind(),
                self.instance(),
                self.kind()
            ));
        }
        if self.restart_relevant() != next.restart_relevant() {
            return Err("a setting read only at start changed (listeners, storage, names, worker pools, followed gateways, KPC authentication timings): applied by a restart".to_owned());
        }
        Ok(())
    }
}

/// The first `bytes` bytes of the SHA-256 of `value`'s JSON text, in hex.
/// Top-level config keys (of any kind) that a running instance reads only at start.
const FIXED_AT_START: [&str; 10] = [
    "mqtt",
    "mqtts",
    "ws",
    "wss",
    "https",
    "storage",
    "configName",
    "upstreams",
    "maxInFlight",
    "kpcInstances",
];

/// KPC `limits` that its token cache and connection guard read only at start.
const KPC_LIMITS_FIXED_AT_START: [&str; 4] = [
    "tokenTimeoutMs",
    "tokenCacheTtlMs",
    "authTimeoutMs",
    "failedConnectsPerMinute",
];

fn short_hash(value: &serde_json::Value, bytes: usize) -> String {
    // `serde_json::Value` keeps object keys sorted (no `preserve_order`), so the text is canonical.
    let digest = Sha256::digest(value.to_string().as_bytes());
    digest.iter().take(bytes).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use crate::config::ServiceConfig;

    fn kpc() -> ServiceConfig {
        let json =
            serde_json::json!({"kind": "kpc", "instance": "kpc", "tokenProvider": "cm", "appVersions": {}});
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn equal_configs_have_equal_versions_and_a_change_changes_it() {
        let a = kpc();
        let text = serde_json::to_string(&a).unwrap();
        let reloaded: ServiceConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(a.version(), reloaded.version());
        assert_eq!(a.version().len(), 12);

        let ServiceConfig::Kpc(mut changed) = kpc() else {
            unreachable!()
        };
        changed.limits.max_connections += 1;
        let changed = ServiceConfig::Kpc(changed);
        assert_ne!(a.version(), changed.version());
        assert_eq!(a.restart_hash(), changed.restart_hash(), "limits apply live");
        assert_eq!(a.live_change_to(&changed), Ok(()));
    }

    #[test]
    fn a_listener_change_needs_a_restart() {
        let a = kpc();
        let ServiceConfig::Kpc(mut moved) = kpc() else {
            unreachable!()
        };
        moved.mqtt.listen = "0.0.0.0:1884".into();
        let moved = ServiceConfig::Kpc(moved);
        assert_ne!(a.restart_hash(), moved.restart_hash());
        assert!(a.live_change_to(&moved).unwrap_err().contains("restart"));
    }

    #[test]
    fn settings_read_at_start_need_a_restart_and_others_do_not() {
        let a = kpc();
        let ServiceConfig::Kpc(mut slower) = kpc() else {
            unreachable!()
        };
        slower.limits.token_timeout_ms += 1;
        let slower = ServiceConfig::Kpc(slower);
        assert!(
            a.live_change_to(&slower).is_err(),
            "the token cache reads it at start"
        );

        let epmx = |max_in_flight: usize, timeout: u64| -> ServiceConfig {
            let json = serde_json::json!({"kind": "epmx", "instance": "epmx", "eprInstance": "epr",
                "maxInFlight": max_in_flight, "requestTimeoutMs": timeout});
            serde_json::from_value(json).unwrap()
        };
        assert!(
            epmx(8, 100).live_change_to(&epmx(16, 100)).is_err(),
            "a worker pool size"
        );
        assert_eq!(
            epmx(8, 100).live_change_to(&epmx(8, 200)),
            Ok(()),
            "a timeout applies live"
        );
    }
}
