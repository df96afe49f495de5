//! The ConfigMap and Deployment of one service instance.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment},
        core::v1::{
            Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
            EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector, PodSecurityContext, PodSpec,
            PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecretKeySelector,
            SecretVolumeSource, SecurityContext, TopologySpreadConstraint, Volume, VolumeMount,
        },
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{LabelSelector, ObjectMeta},
        util::intstr::IntOrString,
    },
};
use kaa_blueprint::{
    config::{CmStorage, ServiceConfig},
    spec::Quantities,
};

use super::{ADMIN_TOKEN_KEY, Context, HTTP_PORT, exposure};
use crate::validate::Planned;

/// Pod-template annotation: a hash of the config that only a restart applies. Changing it rolls
/// the pods; every other config change reaches running pods through the ConfigMap (17/SCMP).
pub const RESTART_HASH: &str = "kaa-rs.dev/restart-hash";
const CONFIG_DIR: &str = "/etc/kaa";
const CONFIG_FILE: &str = "config.json";
const ADMIN_DIR: &str = "/etc/kaa/admin";
const CONFIG_TOKEN_DIR: &str = "/etc/kaa/config-token";
const DATA_DIR: &str = "/var/lib/kaa";
/// The distroless `nonroot` user of the data-plane image.
const NON_ROOT: i64 = 65532;

pub(super) fn config_map(ctx: &Context, planned: &Planned) -> ConfigMap {
    // Serialising a config of strings, numbers and maps cannot fail; an empty file would be
    // refused by `kaa run`, loudly, rather than run with a wrong config.
    let json = serde_json::to_string_pretty(&planned.config).unwrap_or_default();
    ConfigMap {
        metadata: ctx.meta(planned.object_name.clone(), Some(planned)),
        data: Some(BTreeMap::from([(CONFIG_FILE.to_owned(), json)])),
        ..ConfigMap::default()
    }
}

pub(super) fn deployment(ctx: &Context, planned: &Planned) -> Deployment {
    let selector = ctx.selector(planned);
    let mut annotations = BTreeMap::from([
        ("prometheus.io/scrape".to_owned(), "true".to_owned()),
        ("prometheus.io/port".to_owned(), HTTP_PORT.to_string()),
        ("prometheus.io/path".to_owned(), "/metrics".to_owned()),
        (RESTART_HASH.to_owned(), planned.config.restart_hash()),
    ]);
    if let Some(secret) = &planned.spec.tls_secret {
        annotations.insert(exposure::TLS_SECRET_ANNOTATION.to_owned(), secret.clone());
    }
    let pod = PodSpec {
        containers: vec![container(ctx, planned)],
        volumes: Some(volumes(ctx, planned)),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(NON_ROOT),
            run_as_group: Some(NON_ROOT),
            fs_group: Some(NON_ROOT),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        // Spread replicas over nodes, but still schedule when there is only one.
        topology_spread_constraints: Some(vec![TopologySpreadConstraint {
            max_skew: 1,
            topology_key: "kubernetes.io/hostname".into(),
            when_unsatisfiable: "ScheduleAnyway".into(),
            label_selector: Some(LabelSelector {
                match_labels: Some(selector.clone()),
                ..LabelSelector::default()
            }),
            ..TopologySpreadConstraint::default()
        }]),
        automount_service_account_token: Some(needs_api(planned)),
        // Its own account, bound to a Role on Secrets (access.rs).
        service_account_name: needs_api(planned).then(|| planned.object_name.clone()),
        ..PodSpec::default()
    };
    Deployment {
        metadata: ctx.meta(planned.object_name.clone(), Some(planned)),
        spec: Some(DeploymentSpec {
            // With an autoscaler the HPA owns replicas: never written, so never fought over.
            replicas: planned
                .spec
                .autoscaling
                .is_none()
                .then(|| i32::try_from(planned.spec.replicas).unwrap_or(i32::MAX)),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..LabelSelector::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::Int(1)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(ctx.labels(Some(planned))),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// A CM keeping credentials in Kubernetes Secrets talks to the API server.
pub(super) fn needs_api(planned: &Planned) -> bool {
    matches!(&planned.config, ServiceConfig::Cm(cm) if cm.storage == CmStorage::Kubernetes)
}

fn keeps_state_in_database(planned: &Planned) -> bool {
    planned.spec.kind.keeps_state() && !needs_api(planned)
}

fn container(ctx: &Context, planned: &Planned) -> Container {
    let kind = planned.spec.kind.as_str();
    let mut env = vec![EnvVar {
        name: "KAA_NAMESPACE".into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "metadata.namespace".into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }];
    let mut mounts = vec![VolumeMount {
        name: "config".into(),
        mount_path: CONFIG_DIR.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    }];
    if planned.spec.kind.serves_rest() {
        env.push(value(
            "KAA_ADMIN_TOKEN_FILE",
            format!("{ADMIN_DIR}/{ADMIN_TOKEN_KEY}"),
        ));
        mounts.push(VolumeMount {
            name: "admin-token".into(),
            mount_path: ADMIN_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    // Config changes reach running pods from the provider (17/SCMP), not through a restart.
    env.push(value(
        "KAA_CONFIG_URL",
        format!(
            "{}{}",
            ctx.provider_url.trim_end_matches('/'),
            crate::provider::config_path(planned.spec.instance_name())
        ),
    ));
    env.push(value(
        "KAA_CONFIG_TOKEN_FILE",
        format!("{CONFIG_TOKEN_DIR}/{ADMIN_TOKEN_KEY}"),
    ));
    mounts.push(VolumeMount {
        name: "config-token".into(),
        mount_path: CONFIG_TOKEN_DIR.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    });
    if keeps_state_in_database(planned) {
        match &ctx.database_secret {
            // The URL carries a password: from the Secret, never in the pod spec.
            Some(secret) => env.push(EnvVar {
                name: "KAA_DATABASE".into(),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: secret.clone(),
                        key: "url".into(),
                        ..SecretKeySelector::default()
                    }),
                    ..EnvVarSource::default()
                }),
                ..EnvVar::default()
            }),
            None => {
                env.push(value(
                    "KAA_DATABASE",
                    format!("{DATA_DIR}/{}.db", planned.component),
                ));
                mounts.push(VolumeMount {
                    name: "data".into(),
                    mount_path: DATA_DIR.into(),
                    ..VolumeMount::default()
                });
            }
        }
    }
    if let Some((_, mount)) = exposure::tls_volume(planned) {
        mounts.push(mount);
    }
    let mut ports = vec![port("http", HTTP_PORT)];
    ports.extend(planned.listeners.iter().map(|(name, p)| port(name, *p)));
    let probe = |initial_delay, period| Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/health".into()),
            port: IntOrString::String("http".into()),
            ..HTTPGetAction::default()
        }),
        initial_delay_seconds: Some(initial_delay),
        period_seconds: Some(period),
        ..Probe::default()
    };
    Container {
        name: kind.to_owned(),
        image: Some(ctx.image.clone()),
        command: Some(vec!["kaa".into()]),
        args: Some(
            [
                "run",
                kind,
                "--config",
                &format!("{CONFIG_DIR}/{CONFIG_FILE}"),
                "--nats-url",
                &ctx.nats_url,
                "--http-addr",
                &format!("0.0.0.0:{HTTP_PORT}"),
            ]
            .map(String::from)
            .to_vec(),
        ),
        env: Some(env),
        ports: Some(ports),
        readiness_probe: Some(probe(2, 5)),
        liveness_probe: Some(probe(10, 10)),
        resources: Some(resources(planned)),
        volume_mounts: Some(mounts),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

fn value(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value),
        ..EnvVar::default()
    }
}

fn port(name: &str, port: u16) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: i32::from(port),
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }
}

fn volumes(ctx: &Context, planned: &Planned) -> Vec<Volume> {
    let mut volumes = vec![Volume {
        name: "config".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: planned.object_name.clone(),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }];
    if planned.spec.kind.serves_rest() {
        volumes.push(Volume {
            name: "admin-token".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(ctx.admin_secret.clone()),
                default_mode: Some(0o400),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    volumes.push(Volume {
        name: "config-token".into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(ctx.config_token_secret.clone()),
            default_mode: Some(0o400),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    });
    if let Some((volume, _)) = exposure::tls_volume(planned) {
        volumes.push(volume);
    }
    if keeps_state_in_database(planned) {
        volumes.push(Volume {
            name: "data".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        });
    }
    volumes
}

/// The Blueprint's requests and limits, else small defaults: a CPU request is what an HPA
/// measures utilisation against, and a memory limit keeps one instance from starving a node.
fn resources(planned: &Planned) -> ResourceRequirements {
    let given = planned.spec.resources.clone().unwrap_or_default();
    let requests = given.requests.unwrap_or(Quantities {
        cpu: Some("50m".into()),
        memory: Some("64Mi".into()),
    });
    let limits = given.limits.unwrap_or(Quantities {
        cpu: None,
        memory: Some("256Mi".into()),
    });
    ResourceRequirements {
        requests: Some(quantities(requests)),
        limits: Some(quantities(limits)),
        ..ResourceRequirements::default()
    }
}

fn quantities(q: Quantities) -> BTreeMap<String, Quantity> {
    [("cpu", q.cpu), ("memory", q.memory)]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k.to_owned(), Quantity(v))))
        .collect()
}
