//! Rendering DCX and EPTS, whose configs depend on the rest of the Blueprint: which application
//! versions a DCX serves, which EPTS instances receive its samples, which transmitters an EPTS
//! follows and which applications exist.

use std::collections::BTreeMap;

use crate::config::*;
use crate::spec::{Blueprint, ServiceKind};
use crate::validate::Problems;

/// Instance names of every service of `kind`, in Blueprint order.
fn instances_of(blueprint: &Blueprint, kind: ServiceKind) -> Vec<String> {
    blueprint
        .spec
        .services
        .iter()
        .filter(|s| s.kind == kind)
        .map(|s| s.instance_name().to_owned())
        .collect()
}

/// The metadata keys EPL instances maintain (devices must not overwrite them through EPMX).
pub(super) fn platform_keys(blueprint: &Blueprint) -> Vec<String> {
    let mut keys: Vec<String> = blueprint
        .spec
        .services
        .iter()
        .filter(|s| s.kind == ServiceKind::Epl)
        .flat_map(|s| {
            let settings: EplSettings =
                serde_json::from_value(serde_json::Value::Object(s.config.clone())).unwrap_or_default();
            [settings.connected_key, settings.connectivity_ts_key]
        })
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// DCX: every version that lists this instance gets the defaults, overridden per version.
pub(super) fn dcx(
    blueprint: &Blueprint,
    instance: String,
    s: DcxSettings,
    index: usize,
    p: &mut Problems,
) -> DcxConfig {
    let receivers = s.receivers.unwrap_or_else(|| {
        instances_of(blueprint, ServiceKind::Epts)
            .into_iter()
            .map(|name| DataReceiver { name, reliable: true })
            .collect()
    });
    let served: Vec<&str> = blueprint
        .spec
        .applications
        .iter()
        .flat_map(|a| &a.versions)
        .filter(|v| v.extensions.contains(&instance))
        .map(|v| v.name.as_str())
        .collect();
    for version in s.app_versions.keys() {
        if !served.contains(&version.as_str()) {
            p.fail(
                format!("spec.services[{index}].config.appVersions.{version}"),
                format!("application version `{version}` is not served by `{instance}` (list it in its extensions)"),
            );
        }
    }
    let app_versions: BTreeMap<String, DcxAppVersion> = served
        .into_iter()
        .map(|version| {
            let overrides = s.app_versions.get(version).cloned().unwrap_or_default();
            let settings = DcxAppVersion {
                receivers: overrides.receivers.unwrap_or_else(|| receivers.clone()),
                max_batch: overrides.max_batch.unwrap_or(s.max_batch),
            };
            (version.to_owned(), settings)
        })
        .collect();
    DcxConfig {
        instance,
        app_versions,
        receiver_timeout_ms: s.receiver_timeout_ms,
        max_in_flight: s.max_in_flight,
    }
}

/// EPTS: the applications (with versions) of the Blueprint, and its transmitters.
pub(super) fn epts(
    blueprint: &Blueprint,
    instance: String,
    s: EptsSettings,
    index: usize,
    p: &mut Problems,
) -> EptsConfig {
    for app in s.applications.keys() {
        if !blueprint.spec.applications.iter().any(|a| &a.name == app) {
            p.fail(
                format!("spec.services[{index}].config.applications.{app}"),
                format!("no application `{app}` in spec.applications"),
            );
        }
    }
    let defaults = EptsConfig::default();
    EptsConfig {
        instance,
        app_versions: blueprint
            .spec
            .applications
            .iter()
            .map(|a| EprApplication {
                name: a.name.clone(),
                versions: a.versions.iter().map(|v| v.name.clone()).collect(),
            })
            .collect(),
        data_sample_transmitters: s
            .data_sample_transmitters
            .unwrap_or_else(|| instances_of(blueprint, ServiceKind::Dcx)),
        time_series_transmitters: s
            .time_series_transmitters
            .unwrap_or_else(|| instances_of(blueprint, ServiceKind::Epl)),
        applications: s.applications,
        retention_interval_ms: s.retention_interval_ms.unwrap_or(defaults.retention_interval_ms),
        max_in_flight: s.max_in_flight.unwrap_or(defaults.max_in_flight),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::*;
    use crate::{Blueprint, BlueprintError, render};

    const TELEMETRY: &str = r#"
apiVersion: kaa-rs.dev/v1alpha1
kind: Blueprint
metadata: { name: t }
spec:
  applications:
    - name: meter
      versions:
        - { name: meter_v1, extensions: [dcx] }
        - { name: meter_v2, extensions: [dcx] }
        - { name: meter_v3 }
  services:
    - { kind: kpc }
    - { kind: epr }
    - { kind: cm }
    - { kind: epl }
    - { kind: epts, name: store }
    - kind: dcx
      config:
        maxBatch: 10
        appVersions:
          meter_v2: { maxBatch: 2, receivers: [{ name: other, reliable: false }] }
"#;

    fn configs(yaml: &str) -> Vec<ServiceConfig> {
        render(&Blueprint::from_yaml(yaml).unwrap())
            .unwrap()
            .into_iter()
            .map(|r| r.config)
            .collect()
    }

    #[test]
    fn dcx_gets_the_versions_it_serves_with_their_receivers() {
        let configs = configs(TELEMETRY);
        let dcx = configs
            .iter()
            .find_map(|c| match c {
                ServiceConfig::Dcx(c) => Some(c),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            dcx.app_versions.keys().collect::<Vec<_>>(),
            ["meter_v1", "meter_v2"]
        );
        let v1 = &dcx.app_versions["meter_v1"];
        assert_eq!(v1.max_batch, 10);
        assert_eq!(
            v1.receivers,
            [DataReceiver {
                name: "store".into(),
                reliable: true
            }]
        );
        let v2 = &dcx.app_versions["meter_v2"];
        assert_eq!((v2.max_batch, v2.receivers[0].reliable), (2, false));
    }

    #[test]
    fn epts_follows_the_blueprints_transmitters_and_applications() {
        let configs = configs(TELEMETRY);
        let epts = configs
            .iter()
            .find_map(|c| match c {
                ServiceConfig::Epts(c) => Some(c),
                _ => None,
            })
            .unwrap();
        assert_eq!(epts.instance, "store");
        assert_eq!(epts.data_sample_transmitters, ["dcx"]);
        assert_eq!(epts.time_series_transmitters, ["epl"]);
        assert_eq!(epts.app_versions[0].versions.len(), 3);
        let epl = configs
            .iter()
            .find_map(|c| match c {
                ServiceConfig::Epl(c) => Some(c),
                _ => None,
            })
            .unwrap();
        assert_eq!(epl.epr_instance, "epr");
        let epmx_keys = super::platform_keys(&Blueprint::from_yaml(TELEMETRY).unwrap());
        assert_eq!(epmx_keys, ["connected", "connectivity_ts"]);
        assert_eq!(epl.settings.connected_key, "connected");
    }

    #[test]
    fn settings_for_unknown_versions_and_applications_are_refused() {
        let yaml = TELEMETRY.replace("meter_v2: {", "meter_v3: {").replace(
            "- { kind: epts, name: store }",
            "- { kind: epts, name: store, config: { applications: { lamp: {} } } }",
        );
        let Err(BlueprintError::Invalid(invalid)) = Blueprint::from_yaml(&yaml) else {
            panic!("expected an invalid Blueprint")
        };
        let errors: Vec<String> = invalid.0.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            errors,
            [
                "spec.services[4].config.applications.lamp: no application `lamp` in spec.applications",
                "spec.services[5].config.appVersions.meter_v3: application version `meter_v3` is not served by `dcx` (list it in its extensions)",
            ]
        );
    }
}
