//! What keeps enough replicas up: a PodDisruptionBudget when more than one must run, and an
//! autoscaler (autoscaling/v2, CPU) when the Blueprint asks for one.

use k8s_openapi::{
    api::{
        autoscaling::v2::{
            CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
            MetricTarget, ResourceMetricSource,
        },
        policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec},
    },
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};

use super::Context;
use crate::validate::Planned;

/// The fewest replicas the instance runs with.
fn min_replicas(planned: &Planned) -> u32 {
    planned
        .spec
        .autoscaling
        .as_ref()
        .map_or(planned.spec.replicas, |a| a.min_replicas)
}

/// One replica at a time may be evicted (node drains, upgrades) while more than one runs.
pub(super) fn pod_disruption_budget(ctx: &Context, planned: &Planned) -> Option<PodDisruptionBudget> {
    (min_replicas(planned) > 1).then(|| PodDisruptionBudget {
        metadata: ctx.meta(planned.object_name.clone(), Some(planned)),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(ctx.selector(planned)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    })
}

pub(super) fn autoscaler(ctx: &Context, planned: &Planned) -> Option<HorizontalPodAutoscaler> {
    let scaling = planned.spec.autoscaling.as_ref()?;
    let replicas = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
    Some(HorizontalPodAutoscaler {
        metadata: ctx.meta(planned.object_name.clone(), Some(planned)),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: planned.object_name.clone(),
            },
            min_replicas: Some(replicas(scaling.min_replicas)),
            max_replicas: replicas(scaling.max_replicas),
            metrics: Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(replicas(scaling.target_cpu_percent)),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            ..HorizontalPodAutoscalerSpec::default()
        }),
        ..HorizontalPodAutoscaler::default()
    })
}
