//! How devices reach a `kpc`: `expose` (the Service's type, ports, node ports, annotations) and
//! `tlsSecret` (the server certificate of its mqtts, wss and https listeners).
//!
//! With `expose`, a second Service `<name>-devices` carries the device listeners only, with the
//! declared type and annotations: the management port (`/metrics`, `/health`) never reaches a
//! load balancer. The instance's own ClusterIP Service stays as it is for in-cluster clients.
//!
//! With `tlsSecret`, the Secret is mounted at [`TLS_DIR`] and every TLS listener's `certFile`,
//! `keyFile` (and `clientCaFile`, when set) point into it. Kubernetes updates a mounted Secret's
//! files in place, so a certificate renewed in the same Secret (cert-manager) is picked up by the
//! listeners' reloadable TLS without a restart; naming another Secret changes the pod template
//! ([`TLS_SECRET_ANNOTATION`]) and rolls the pods.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{SecretVolumeSource, Service, ServicePort, ServiceSpec, Volume, VolumeMount},
    apimachinery::pkg::util::intstr::IntOrString,
};
use kaa_blueprint::{
    ValidationError,
    spec::{BlueprintSpec, ServiceInstance, ServiceType},
};
use serde_json::Value;

use super::Context;
use crate::validate::Planned;

/// Where the TLS Secret is mounted.
pub const TLS_DIR: &str = "/etc/kaa/tls";
/// Pod-template annotation naming the TLS Secret: another Secret rolls the pods.
pub const TLS_SECRET_ANNOTATION: &str = "kaa-rs.dev/tls-secret";
/// Suffix of the Service for devices.
pub const DEVICES_SUFFIX: &str = "-devices";
const LISTENERS: [&str; 5] = ["mqtt", "mqtts", "ws", "wss", "https"];

/// At validation: checks `expose` and `tlsSecret` against the instance's listeners.
pub fn check(
    service: &ServiceInstance,
    index: usize,
    object_name: &str,
    listeners: &[(&'static str, u16)],
    fail: &mut impl FnMut(String, String),
) {
    let at = format!("spec.services[{index}]");
    let declared = |name: &str| listeners.iter().any(|(n, _)| *n == name);
    if let Some(expose) = &service.expose {
        if object_name.len() + DEVICES_SUFFIX.len() > 63 {
            fail(
                format!("{at}.name"),
                format!(
                    "`{object_name}{DEVICES_SUFFIX}` (the devices' Service) is longer than 63 characters"
                ),
            );
        }
        let mut taken: BTreeMap<u16, &str> = BTreeMap::new();
        for name in LISTENERS {
            let port = expose.ports.as_ref().and_then(|p| p.get(name));
            let node_port = expose.node_ports.as_ref().and_then(|p| p.get(name));
            if (port.is_some() || node_port.is_some()) && !declared(name) {
                let field = if port.is_some() { "ports" } else { "nodePorts" };
                fail(
                    format!("{at}.expose.{field}.{name}"),
                    format!("the kpc has no `{name}` listener (declare it in config.{name})"),
                );
                continue;
            }
            let Some(own) = listeners.iter().find(|(n, _)| *n == name).map(|(_, p)| *p) else {
                continue;
            };
            let port = port.unwrap_or(own);
            if let Some(other) = taken.insert(port, name) {
                fail(
                    format!("{at}.expose.ports.{name}"),
                    format!("port {port} is taken by `{other}` already"),
                );
            }
        }
        let cluster_ip = expose.type_.is_none_or(|t| t == ServiceType::ClusterIP);
        if cluster_ip && expose.node_ports.is_some() {
            fail(
                format!("{at}.expose.nodePorts"),
                "node ports need type NodePort or LoadBalancer".into(),
            );
        }
    }
}

/// Before rendering: every TLS listener of a kpc with `tlsSecret` reads its certificate, key (and
/// client CA, when it checks client certificates) from the mounted Secret, whatever file paths
/// the config names (those are for `kaa up`). A TLS listener without `tlsSecret` is refused: in
/// a pod, no certificate file exists.
pub fn use_tls_secrets(spec: &mut BlueprintSpec) -> Vec<ValidationError> {
    let mut problems = Vec::new();
    for (i, service) in spec.services.iter_mut().enumerate() {
        let tls: Vec<&str> = ["mqtts", "wss", "https"]
            .into_iter()
            .filter(|name| service.config.get(*name).is_some_and(Value::is_object))
            .collect();
        if tls.is_empty() {
            continue;
        }
        if service.tls_secret.is_none() {
            problems.push(ValidationError {
                path: format!("spec.services[{i}].tlsSecret"),
                message: format!(
                    "TLS listeners ({}) need a certificate in a cluster: name a kubernetes.io/tls Secret",
                    tls.join(", ")
                ),
            });
            continue;
        }
        for name in tls {
            let Some(Value::Object(listener)) = service.config.get_mut(name) else {
                continue;
            };
            listener.insert("certFile".into(), format!("{TLS_DIR}/tls.crt").into());
            listener.insert("keyFile".into(), format!("{TLS_DIR}/tls.key").into());
            if listener.contains_key("clientCaFile") {
                listener.insert("clientCaFile".into(), format!("{TLS_DIR}/ca.crt").into());
            }
        }
    }
    problems
}

/// The TLS Secret's volume and mount, when the instance has one.
pub(super) fn tls_volume(planned: &Planned) -> Option<(Volume, VolumeMount)> {
    let secret = planned.spec.tls_secret.clone()?;
    Some((
        Volume {
            name: "tls".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret),
                default_mode: Some(0o400),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        },
        VolumeMount {
            name: "tls".into(),
            mount_path: TLS_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
    ))
}

/// The devices' Service, when the instance has `expose`.
pub(super) fn devices_service(ctx: &Context, planned: &Planned) -> Option<Service> {
    let expose = planned.spec.expose.as_ref()?;
    let ports = planned
        .listeners
        .iter()
        .map(|(name, own)| ServicePort {
            name: Some((*name).into()),
            port: i32::from(expose.ports.as_ref().and_then(|p| p.get(name)).unwrap_or(*own)),
            target_port: Some(IntOrString::String((*name).into())),
            node_port: expose
                .node_ports
                .as_ref()
                .and_then(|p| p.get(name))
                .map(i32::from),
            protocol: Some("TCP".into()),
            ..ServicePort::default()
        })
        .collect();
    let mut metadata = ctx.meta(devices_service_name(planned), Some(planned));
    if !expose.annotations.is_empty() {
        metadata.annotations = Some(expose.annotations.clone());
    }
    let type_ = expose.type_.unwrap_or(ServiceType::ClusterIP);
    Some(Service {
        metadata,
        spec: Some(ServiceSpec {
            selector: Some(ctx.selector(planned)),
            ports: Some(ports),
            type_: Some(type_.as_str().into()),
            // Keep client source addresses (the kpc's per-address connect limits need them); the
            // load balancer's health checks send traffic only to nodes running a kpc.
            external_traffic_policy: (type_ == ServiceType::LoadBalancer).then(|| "Local".into()),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

pub fn devices_service_name(planned: &Planned) -> String {
    format!("{}{DEVICES_SUFFIX}", planned.object_name)
}
