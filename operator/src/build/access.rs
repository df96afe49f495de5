//! The ServiceAccount, Role and RoleBinding of a service instance that talks to the API server:
//! a `cm` keeping credentials in Secrets (`storage: kubernetes`).
//!
//! Least privilege as far as RBAC goes: the Secrets of the Blueprint's namespace only, and only
//! the verbs the cm's backend uses (a reflector lists and watches; writes create, replace and
//! delete). RBAC cannot narrow a rule to a label (the cm's `kaa-rs.dev/cm=<instance>`) nor
//! `create` to names, so run a Blueprint in a namespace of its own when other Secrets live
//! nearby.

use k8s_openapi::api::{
    core::v1::ServiceAccount,
    rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject},
};

use super::Context;
use crate::validate::Planned;

/// Verbs on Secrets of a cm with Kubernetes storage.
pub const CM_SECRET_VERBS: [&str; 6] = ["get", "list", "watch", "create", "update", "delete"];

pub(super) fn service_account(ctx: &Context, planned: &Planned) -> ServiceAccount {
    ServiceAccount {
        metadata: ctx.meta(planned.object_name.clone(), Some(planned)),
        ..ServiceAccount::default()
    }
}

pub(super) fn role(ctx: &Context, planned: &Planned) -> Role {
    Role {
        metadata: ctx.meta(planned.object_name.clone(), Some(planned)),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["secrets".into()]),
            verbs: CM_SECRET_VERBS.map(String::from).to_vec(),
            ..PolicyRule::default()
        }]),
    }
}

pub(super) fn role_binding(ctx: &Context, planned: &Planned) -> RoleBinding {
    RoleBinding {
        metadata: ctx.meta(planned.object_name.clone(), Some(planned)),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: planned.object_name.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: planned.object_name.clone(),
            namespace: ctx.namespace.clone(),
            ..Subject::default()
        }]),
    }
}
