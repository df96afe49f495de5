//! The Service of one service instance: its management port and, for a KPC, the device
//! listeners.

use k8s_openapi::{
    api::core::v1::{Service, ServicePort, ServiceSpec},
    apimachinery::pkg::util::intstr::IntOrString,
};

use super::{Context, HTTP_PORT};
use crate::validate::Planned;

pub(super) fn service(ctx: &Context, planned: &Planned) -> Service {
    let ports = std::iter::once(("http", HTTP_PORT))
        .chain(planned.listeners.iter().copied())
        .map(|(name, port)| ServicePort {
            name: Some(name.into()),
            port: i32::from(port),
            target_port: Some(IntOrString::String(name.into())),
            protocol: Some("TCP".into()),
            ..ServicePort::default()
        })
        .collect();
    Service {
        metadata: ctx.meta(planned.object_name.clone(), Some(planned)),
        spec: Some(ServiceSpec {
            selector: Some(ctx.selector(planned)),
            ports: Some(ports),
            type_: Some("ClusterIP".into()),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}
