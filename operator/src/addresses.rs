//! The addresses devices should use to reach a `kpc`, for its status: from the Service in front
//! of it (the `-devices` Service with `expose`, else the instance's ClusterIP Service).
//!
//! | Service | host | port |
//! |---|---|---|
//! | `expose.host` set | that host | the Service port (`nodePort` for NodePort) |
//! | LoadBalancer | the ingress IP or host name, once the cloud assigned one | the Service port |
//! | NodePort | `<node>` (any node's address) | the node port, once assigned |
//! | ClusterIP | `<service>.<namespace>.svc` (in-cluster clients) | the Service port |
//!
//! As `mqtt://host:1883`, `mqtts://host:8883`, `ws://host:80/mqtt`, `wss://host:443/mqtt`,
//! `https://host:8444/kp1`. Nothing is listed while a load balancer or node port is pending.

use k8s_openapi::api::core::v1::Service;
use kaa_blueprint::config::ServiceConfig;

use crate::{build::exposure::devices_service_name, validate::Planned};

/// Which Service to read for `planned` (`None`: not a kpc).
pub fn service_name(planned: &Planned) -> Option<String> {
    matches!(planned.config, ServiceConfig::Kpc(_)).then(|| match planned.spec.expose {
        Some(_) => devices_service_name(planned),
        None => planned.object_name.clone(),
    })
}

/// The device addresses of a kpc, given its Service as the API server has it.
pub fn device_addresses(planned: &Planned, service: Option<&Service>, namespace: &str) -> Vec<String> {
    let (ServiceConfig::Kpc(kpc), Some(service)) = (&planned.config, service) else {
        return Vec::new();
    };
    let spec = service.spec.clone().unwrap_or_default();
    let type_ = spec.type_.as_deref().unwrap_or("ClusterIP");
    let given = planned.spec.expose.as_ref().and_then(|e| e.host.clone());
    let ingress = || {
        service
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .and_then(|i| i.first())
            .and_then(|i| i.hostname.clone().or_else(|| i.ip.clone()))
    };
    let name = service.metadata.name.clone().unwrap_or_default();
    let host = match (given, type_) {
        (Some(host), _) => host,
        (None, "LoadBalancer") => match ingress() {
            Some(host) => host,
            None => return Vec::new(),
        },
        (None, "NodePort") => "<node>".to_owned(),
        (None, _) => format!("{name}.{namespace}.svc"),
    };
    let paths = [
        ("mqtt", "mqtt", String::new()),
        ("mqtts", "mqtts", String::new()),
        (
            "ws",
            "ws",
            kpc.ws.as_ref().map(|l| l.path.clone()).unwrap_or_default(),
        ),
        (
            "wss",
            "wss",
            kpc.wss.as_ref().map(|l| l.path.clone()).unwrap_or_default(),
        ),
        ("https", "https", "/kp1".to_owned()),
    ];
    let ports = spec.ports.unwrap_or_default();
    paths
        .into_iter()
        .filter_map(|(listener, scheme, path)| {
            let port = ports.iter().find(|p| p.name.as_deref() == Some(listener))?;
            let number = match type_ {
                "NodePort" => port.node_port?,
                _ => port.port,
            };
            Some(format!("{scheme}://{host}:{number}{path}"))
        })
        .collect()
}
