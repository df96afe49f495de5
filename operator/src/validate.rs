//! Step 1 of a reconcile: the custom resource -> a Blueprint that passed every rule `kaa up`
//! applies (kaa-blueprint's `validate`), plus the rules only a cluster has (object names, ports,
//! state shared between replicas). Every problem names its field.

use kaa_blueprint::{
    Invalid, ValidationError,
    config::{CmStorage, ServiceConfig},
    spec::{API_VERSION, KIND, Metadata, ServiceInstance},
};

use crate::crd::Blueprint;

/// The longest Kubernetes object name a Service may have (a DNS-1035 label).
const MAX_NAME: usize = 63;

/// A Blueprint ready to build: each service instance with its rendered config.
#[derive(Debug, Clone)]
pub struct Validated {
    pub services: Vec<Planned>,
}

/// One service instance as the operator will run it.
#[derive(Debug, Clone)]
pub struct Planned {
    pub spec: ServiceInstance,
    pub config: ServiceConfig,
    /// Name of every object built for the instance: `<blueprint>-<instance>`, DNS-safe.
    pub object_name: String,
    /// The instance name as a label value and DNS label (`cmx_ota` -> `cmx-ota`).
    pub component: String,
    /// Ports the instance's listeners take, by name (`mqtt`, `ws`, ...).
    pub listeners: Vec<(&'static str, u16)>,
}

/// The kaa-blueprint view of the custom resource (what `kaa up` would read from a file).
pub fn as_blueprint(resource: &Blueprint) -> kaa_blueprint::Blueprint {
    kaa_blueprint::Blueprint {
        api_version: API_VERSION.to_owned(),
        kind: KIND.to_owned(),
        metadata: Metadata {
            name: resource.metadata.name.clone().unwrap_or_default(),
            namespace: resource.metadata.namespace.clone(),
            labels: resource.metadata.labels.clone().unwrap_or_default(),
        },
        spec: resource.spec.blueprint.clone(),
    }
}

pub fn validate(resource: &Blueprint) -> Result<Validated, Invalid> {
    let mut blueprint = as_blueprint(resource);
    let tls_problems = crate::build::exposure::use_tls_secrets(&mut blueprint.spec);
    if !tls_problems.is_empty() {
        return Err(Invalid(tls_problems));
    }
    blueprint.validate()?;
    let rendered = kaa_blueprint::render(&blueprint)?;
    let mut problems = Vec::new();
    let mut fail = |path: String, message: String| problems.push(ValidationError { path, message });
    let spec = &blueprint.spec;
    let has_database = spec.cluster.as_ref().is_some_and(|c| c.database_secret.is_some());
    let mut services: Vec<Planned> = Vec::new();
    // `render` returns one config per instance, in spec order, once `validate` passed.
    for (i, (service, rendered)) in spec.services.iter().zip(rendered).enumerate() {
        let component = dns_label(service.instance_name());
        let object_name = format!("{}-{component}", dns_label(&blueprint.metadata.name));
        if object_name.len() > MAX_NAME || !object_name.starts_with(|c: char| c.is_ascii_lowercase()) {
            fail(
                format!("spec.services[{i}].name"),
                format!(
                    "the object name `{object_name}` (Blueprint name, `-`, instance name) must start \
                     with a letter and be at most {MAX_NAME} characters"
                ),
            );
        }
        if let Some(other) = services.iter().find(|p| p.object_name == object_name) {
            fail(
                format!("spec.services[{i}].name"),
                format!(
                    "`{}` and `{}` both become the Kubernetes name `{object_name}`",
                    service.instance_name(),
                    other.spec.instance_name()
                ),
            );
        }
        let listeners = listeners(&rendered.config, i, &mut fail);
        crate::build::exposure::check(service, i, &object_name, &listeners, &mut fail);
        let shared_state = service.kind.keeps_state()
            && !matches!(&rendered.config, ServiceConfig::Cm(cm) if cm.storage == CmStorage::Kubernetes)
            && (service.replicas > 1 || service.autoscaling.is_some());
        if shared_state && !has_database {
            fail(
                format!("spec.services[{i}].replicas"),
                format!(
                    "more than one replica of a `{}` service share state: set spec.cluster.databaseSecret \
                     (a PostgreSQL URL) or keep 1 replica without autoscaling",
                    service.kind
                ),
            );
        }
        services.push(Planned {
            spec: service.clone(),
            config: rendered.config,
            object_name,
            component,
            listeners,
        });
    }
    crate::credentials::check(spec, &services, &mut fail);
    if problems.is_empty() {
        Ok(Validated { services })
    } else {
        Err(Invalid(problems))
    }
}

/// `cmx_ota` -> `cmx-ota`: instance names allow `_` and capitals, Kubernetes names do not.
pub fn dns_label(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

/// The ports of a KPC's listeners; other kinds listen on the management port only.
fn listeners(
    config: &ServiceConfig,
    index: usize,
    fail: &mut impl FnMut(String, String),
) -> Vec<(&'static str, u16)> {
    let ServiceConfig::Kpc(kpc) = config else {
        return Vec::new();
    };
    let declared = [
        ("mqtt", Some(&kpc.mqtt.listen)),
        ("mqtts", kpc.mqtts.as_ref().map(|l| &l.listen)),
        ("ws", kpc.ws.as_ref().map(|l| &l.listen)),
        ("wss", kpc.wss.as_ref().map(|l| &l.listen)),
        ("https", kpc.https.as_ref().map(|l| &l.listen)),
    ];
    let mut ports: Vec<(&'static str, u16)> = Vec::new();
    for (name, listen) in declared {
        let Some(listen) = listen else { continue };
        let at = format!("spec.services[{index}].config.{name}.listen");
        let port = listen
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse::<u16>().ok())
            .filter(|port| *port != 0);
        match port {
            None => fail(
                at,
                format!("`{listen}` must be `host:port` with a port from 1 to 65535"),
            ),
            Some(port) if port == crate::build::HTTP_PORT => fail(
                at,
                format!("port {port} is the management port (/health, /metrics) of every pod"),
            ),
            Some(port) => match ports.iter().find(|(_, p)| *p == port) {
                Some((other, _)) => fail(at, format!("port {port} is taken by `{other}` already")),
                None => ports.push((name, port)),
            },
        }
    }
    ports
}
