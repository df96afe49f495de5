//! Blueprint -> the configuration of each service instance. Pure; shared by `kaa up` and the
//! operator so that a Blueprint means the same thing on a laptop and in a cluster.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;

use crate::config::*;
use crate::spec::{Blueprint, ServiceInstance, ServiceKind};
use crate::validate::{Invalid, Problems};

mod telemetry;
mod web;

/// One service instance, ready to run.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedService {
    pub replicas: u32,
    pub config: ServiceConfig,
}

/// Renders every service instance of a Blueprint (which should have passed `validate`).
pub fn render(blueprint: &Blueprint) -> Result<Vec<RenderedService>, Invalid> {
    let mut p = Problems::default();
    let rendered = render_checked(blueprint, &mut p);
    p.into_result().map(|()| rendered)
}

pub(crate) fn render_checked(blueprint: &Blueprint, p: &mut Problems) -> Vec<RenderedService> {
    let spec = &blueprint.spec;
    let epr = spec
        .services
        .iter()
        .find(|s| s.kind == ServiceKind::Epr)
        .map(|s| s.instance_name().to_owned());
    let epr = epr.unwrap_or_else(|| ServiceKind::Epr.as_str().to_owned());
    let cm = spec
        .services
        .iter()
        .find(|s| s.kind == ServiceKind::Cm)
        .map_or_else(
            || ServiceKind::Cm.as_str().to_owned(),
            |s| s.instance_name().to_owned(),
        );
    let kpcs: Vec<String> = spec
        .services
        .iter()
        .filter(|s| s.kind == ServiceKind::Kpc)
        .map(|s| s.instance_name().to_owned())
        .collect();
    let applications: Vec<EprApplication> = spec
        .applications
        .iter()
        .map(|a| EprApplication {
            name: a.name.clone(),
            versions: a.versions.iter().map(|v| v.name.clone()).collect(),
        })
        .collect();
    let app_versions: BTreeMap<String, AppVersionRoute> = spec
        .applications
        .iter()
        .flat_map(|app| {
            app.versions.iter().map(|v| {
                let route = AppVersionRoute {
                    application: app.name.clone(),
                    extensions: v.extensions.clone(),
                };
                (v.name.clone(), route)
            })
        })
        .collect();

    let mut rendered = Vec::new();
    for (i, service) in spec.services.iter().enumerate() {
        let instance = service.instance_name().to_owned();
        let config = match service.kind {
            ServiceKind::Kpc => settings::<KpcSettings>(service, i, p)
                .filter(|s| crate::validate::check_kpc(s, i, p))
                .map(|s| {
                    ServiceConfig::Kpc(KpcConfig {
                        instance,
                        token_provider: cm.clone(),
                        app_versions: app_versions.clone(),
                        mqtt: s.mqtt,
                        mqtts: s.mqtts,
                        ws: s.ws,
                        wss: s.wss,
                        https: s.https,
                        limits: s.limits,
                    })
                }),
            ServiceKind::Epr => settings::<EprSettings>(service, i, p).map(|EprSettings {}| {
                ServiceConfig::Epr(EprConfig {
                    instance,
                    applications: applications.clone(),
                    cm_instance: cm.clone(),
                    ..EprConfig::default()
                })
            }),
            ServiceKind::Cm => settings::<CmSettings>(service, i, p).map(|s| {
                ServiceConfig::Cm(CmConfig {
                    instance,
                    epr_instance: epr.clone(),
                    applications: applications.clone(),
                    request_timeout_ms: s.request_timeout_ms,
                    password_hash: s.password_hash,
                    storage: s.storage,
                })
            }),
            ServiceKind::Epmx => settings::<EpmxSettings>(service, i, p).map(|s| {
                ServiceConfig::Epmx(EpmxConfig {
                    instance,
                    epr_instance: epr.clone(),
                    request_timeout_ms: s.request_timeout_ms,
                    max_in_flight: s.max_in_flight,
                    platform_keys: telemetry::platform_keys(blueprint),
                })
            }),
            ServiceKind::Epl => settings::<EplSettings>(service, i, p).map(|settings| {
                ServiceConfig::Epl(EplConfig {
                    instance,
                    epr_instance: epr.clone(),
                    settings,
                })
            }),
            ServiceKind::Dcx => settings::<DcxSettings>(service, i, p)
                .map(|s| ServiceConfig::Dcx(telemetry::dcx(blueprint, instance, s, i, p))),
            ServiceKind::Epts => settings::<EptsSettings>(service, i, p)
                .map(|s| ServiceConfig::Epts(telemetry::epts(blueprint, instance, s, i, p))),
            ServiceKind::Cmx => settings::<CmxSettings>(service, i, p).map(|s| {
                ServiceConfig::Cmx(CmxConfig {
                    config_name: s
                        .config_name
                        .unwrap_or_else(|| CmxConfig::config_name_of(&instance)),
                    instance,
                    kpc_instances: kpcs.clone(),
                    max_config_bytes: s.max_config_bytes,
                    max_in_flight: s.max_in_flight,
                })
            }),
            ServiceKind::Cex => settings::<CexSettings>(service, i, p).map(|s| {
                ServiceConfig::Cex(CexConfig {
                    instance,
                    kpc_instances: kpcs.clone(),
                    epr_instance: epr.clone(),
                    request_timeout_ms: s.request_timeout_ms,
                    default_command_ttl_ms: s.default_command_ttl_ms,
                    max_await_ms: s.max_await_ms,
                    max_in_flight: s.max_in_flight,
                })
            }),
            ServiceKind::Bcx => settings::<BcxSettings>(service, i, p).map(|s| {
                ServiceConfig::Bcx(BcxConfig {
                    instance,
                    max_upload_bytes: s.max_upload_bytes,
                    token_ttl_ms: s.token_ttl_ms,
                    max_in_flight: s.max_in_flight,
                })
            }),
            ServiceKind::Web => settings::<WebSettings>(service, i, p)
                .map(|s| ServiceConfig::Web(web::web(blueprint, instance, s, i, p))),
        };
        if let Some(ServiceConfig::Kpc(kpc)) = &config {
            for (key, why) in kpc.limits.problems() {
                p.fail(format!("spec.services[{i}].config.limits.{key}"), why);
            }
        }
        if let Some(config) = config {
            rendered.push(RenderedService {
                replicas: service.replicas,
                config,
            });
        }
    }
    check_config_names(&rendered, p);
    rendered
}

/// CMX configuration names are what REST callers select (`?name=`): valid and one instance each.
fn check_config_names(rendered: &[RenderedService], p: &mut Problems) {
    let mut seen = std::collections::BTreeSet::new();
    for r in rendered {
        if let ServiceConfig::Cmx(c) = &r.config {
            let name = &c.config_name;
            let valid = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !valid {
                p.fail(
                    format!("service `{}` config.configName", c.instance),
                    format!("`{name}` must be 1 or more letters, digits, '_' or '-'"),
                );
            }
            if !seen.insert(name.clone()) {
                p.fail(
                    format!("service `{}` config.configName", c.instance),
                    format!("configuration name `{name}` is served by another cmx instance too"),
                );
            }
        }
    }
}

fn settings<T: DeserializeOwned>(service: &ServiceInstance, index: usize, p: &mut Problems) -> Option<T> {
    serde_json::from_value(serde_json::Value::Object(service.config.clone()))
        .map_err(|e| p.fail(format!("spec.services[{index}].config"), e.to_string()))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quickstart_renders_one_config_per_instance() {
        let rendered = render(&Blueprint::quickstart()).unwrap();
        let kpc = rendered
            .iter()
            .find_map(|r| match &r.config {
                ServiceConfig::Kpc(c) => Some(c),
                _ => None,
            })
            .unwrap();
        assert_eq!(kpc.token_provider, "cm");
        let route = &kpc.app_versions["demo_application_v1"];
        assert_eq!(route.application, "demo_application");
        assert!(route.extensions.contains(&"epmx".to_owned()));
        assert_eq!(kpc.limits, KpcLimits::default());
        let ws = kpc
            .ws
            .as_ref()
            .expect("the quickstart serves MQTT over WebSocket");
        assert_eq!(
            (ws.listen.as_str(), ws.path.as_str(), ws.auth),
            ("0.0.0.0:8080", "/mqtt", ClientAuthMode::None)
        );
        assert_eq!((&kpc.wss, &kpc.https), (&None, &None));
        let kinds: Vec<_> = rendered.iter().map(|r| r.config.kind()).collect();
        assert!(kinds.contains(&ServiceKind::Epr) && kinds.contains(&ServiceKind::Epmx));
        assert!(kinds.contains(&ServiceKind::Cm));
    }

    #[test]
    fn cm_is_wired_to_kpc_epr_and_gets_its_settings() {
        let mut bp = Blueprint::quickstart();
        let cm = bp
            .spec
            .services
            .iter_mut()
            .find(|s| s.kind == ServiceKind::Cm)
            .unwrap();
        cm.name = Some("creds".into());
        cm.config = serde_json::from_str(
            r#"{"passwordHash":{"memoryKib":64,"iterations":1},"storage":"kubernetes"}"#,
        )
        .unwrap();
        let rendered = render(&bp).unwrap();
        let configs: Vec<&ServiceConfig> = rendered.iter().map(|r| &r.config).collect();
        let Some(ServiceConfig::Cm(c)) = configs.iter().find(|c| c.kind() == ServiceKind::Cm) else {
            panic!("no cm")
        };
        assert_eq!((c.instance.as_str(), c.epr_instance.as_str()), ("creds", "epr"));
        assert_eq!((c.password_hash.memory_kib, c.password_hash.iterations), (64, 1));
        assert_eq!(c.storage, crate::config::CmStorage::Kubernetes);
        assert_eq!(c.application_of("demo_application_v1"), Some("demo_application"));
        let Some(ServiceConfig::Kpc(k)) = configs.iter().find(|c| c.kind() == ServiceKind::Kpc) else {
            panic!("no kpc")
        };
        assert_eq!(k.token_provider, "creds");
        let Some(ServiceConfig::Epr(e)) = configs.iter().find(|c| c.kind() == ServiceKind::Epr) else {
            panic!("no epr")
        };
        assert_eq!(e.cm_instance, "creds");
    }

    #[test]
    fn rendered_configs_survive_a_round_trip_through_json() {
        for r in render(&Blueprint::quickstart()).unwrap() {
            let json = serde_json::to_string(&r.config).unwrap();
            let back: ServiceConfig = serde_json::from_str(&json).unwrap();
            assert_eq!(back, r.config);
        }
    }

    #[test]
    fn settings_reach_the_config() {
        let mut bp = Blueprint::quickstart();
        let kpc = bp
            .spec
            .services
            .iter_mut()
            .find(|s| s.kind == ServiceKind::Kpc)
            .unwrap();
        kpc.config = serde_json::from_str(
            r#"{"limits":{"maxPayloadBytes":1000},"mqtt":{"listen":"127.0.0.1:0"},
                "https":{"listen":"127.0.0.1:1","certFile":"c","keyFile":"k"}}"#,
        )
        .unwrap();
        let rendered = render(&bp).unwrap();
        let Some(ServiceConfig::Kpc(c)) = rendered
            .iter()
            .map(|r| &r.config)
            .find(|c| c.kind() == ServiceKind::Kpc)
        else {
            panic!("no kpc")
        };
        assert_eq!(c.limits.max_payload_bytes, 1000);
        assert_eq!(
            c.limits.request_timeout_ms,
            KpcLimits::default().request_timeout_ms
        );
        assert_eq!(c.mqtt.listen, "127.0.0.1:0");
        let https = c.https.as_ref().unwrap();
        assert_eq!(
            (https.listen.as_str(), https.tls.key_file.as_str()),
            ("127.0.0.1:1", "k")
        );
        assert_eq!(c.ws, None, "no WebSocket unless asked");
    }

    /// The KPC of the quickstart with `config` as its settings.
    fn quickstart_with_kpc(config: &str) -> Blueprint {
        let mut bp = Blueprint::quickstart();
        let kpc = bp
            .spec
            .services
            .iter_mut()
            .find(|s| s.kind == ServiceKind::Kpc)
            .unwrap();
        kpc.config = serde_json::from_str(config).unwrap();
        bp
    }

    #[test]
    fn gateway_limits_are_camel_case_and_reach_the_config() {
        let bp = quickstart_with_kpc(
            r#"{"limits":{"maxConnections":5,"maxInFlightPerConnection":6,"maxPublishesPerSecond":0,
                "publishBurst":7,"maxTokensPerConnection":8,"maxKeepaliveSecs":9,
                "maxHttpRequestsInFlight":10}}"#,
        );
        let rendered = render(&bp).unwrap();
        let Some(ServiceConfig::Kpc(c)) = rendered
            .iter()
            .map(|r| &r.config)
            .find(|c| c.kind() == ServiceKind::Kpc)
        else {
            panic!("no kpc")
        };
        let l = &c.limits;
        assert_eq!(
            (
                l.max_connections,
                l.max_in_flight_per_connection,
                l.max_publishes_per_second
            ),
            (5, 6, 0)
        );
        assert_eq!((l.publish_burst, l.max_tokens_per_connection), (7, 8));
        assert_eq!((l.max_keepalive_secs, l.max_http_requests_in_flight), (9, 10));
    }

    #[test]
    fn limits_that_refuse_everyone_are_named_in_the_error() {
        let bp =
            quickstart_with_kpc(r#"{"limits":{"maxConnections":0,"maxKeepaliveSecs":0,"publishBurst":0}}"#);
        let errors: Vec<String> = render(&bp).unwrap_err().0.iter().map(|e| e.to_string()).collect();
        let path = "spec.services[0].config.limits";
        assert_eq!(
            errors,
            [
                format!("{path}.maxConnections: must be at least 1"),
                format!("{path}.maxKeepaliveSecs: must be at least 1"),
                format!(
                    "{path}.publishBurst: must be at least 1 while maxPublishesPerSecond is on (0 refuses every request)"
                ),
            ]
        );
        let off = quickstart_with_kpc(r#"{"limits":{"maxPublishesPerSecond":0,"publishBurst":0}}"#);
        assert!(
            render(&off).is_ok(),
            "a burst of 0 is fine while the rate limit is off"
        );
    }

    #[test]
    fn control_extensions_follow_every_gateway_and_name_their_configs() {
        let rendered = render(&Blueprint::quickstart()).unwrap();
        let cmx: Vec<&CmxConfig> = rendered
            .iter()
            .filter_map(|r| match &r.config {
                ServiceConfig::Cmx(c) => Some(c),
                _ => None,
            })
            .collect();
        let names: Vec<(&str, &str)> = cmx
            .iter()
            .map(|c| (c.instance.as_str(), c.config_name.as_str()))
            .collect();
        assert_eq!(names, [("cmx", "default"), ("cmx_ota", "cmx_ota")]);
        assert!(cmx.iter().all(|c| c.kpc_instances == ["kpc"]));
        let Some(ServiceConfig::Cex(cex)) = rendered
            .iter()
            .map(|r| &r.config)
            .find(|c| c.kind() == ServiceKind::Cex)
        else {
            panic!("no cex")
        };
        assert_eq!((cex.epr_instance.as_str(), cex.kpc_instances.len()), ("epr", 1));
        assert!(rendered.iter().any(|r| r.config.kind() == ServiceKind::Bcx));
    }

    #[test]
    fn epmx_settings_reach_the_config() {
        let mut bp = Blueprint::quickstart();
        let epmx = bp
            .spec
            .services
            .iter_mut()
            .find(|s| s.kind == ServiceKind::Epmx)
            .unwrap();
        epmx.config = serde_json::from_str(r#"{"maxInFlight":8}"#).unwrap();
        let rendered = render(&bp).unwrap();
        let Some(ServiceConfig::Epmx(c)) = rendered
            .iter()
            .map(|r| &r.config)
            .find(|c| c.kind() == ServiceKind::Epmx)
        else {
            panic!("no epmx")
        };
        assert_eq!(c.max_in_flight, 8);
        assert_eq!(c.request_timeout_ms, EpmxSettings::default().request_timeout_ms);
        assert_eq!(c.epr_instance, "epr");
    }
}
