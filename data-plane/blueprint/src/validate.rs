//! Every rule a Blueprint must satisfy. All problems are collected, each with the path of the
//! field at fault, so that one run of `kaa up` or one status update tells the user everything.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::{KpcSettings, check_ws_path};
use crate::spec::{API_VERSION, Blueprint, KIND, ServiceKind};

/// One broken rule: the field (`spec.services[2].name`) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for ValidationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// A Blueprint that breaks one or more rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the Blueprint is invalid:{}", list(.0))]
pub struct Invalid(pub Vec<ValidationError>);

fn list(errors: &[ValidationError]) -> String {
    errors.iter().map(|e| format!("\n  - {e}")).collect()
}

/// Collects problems; `fail` records one.
#[derive(Default)]
pub(crate) struct Problems(Vec<ValidationError>);

impl Problems {
    pub(crate) fn fail(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ValidationError {
            path: path.into(),
            message: message.into(),
        });
    }

    pub(crate) fn into_result(self) -> Result<(), Invalid> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Invalid(self.0))
        }
    }
}

/// Names that end up in MQTT topic levels and NATS subject tokens.
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

const NAME_RULE: &str = "must be 1-63 characters of letters, digits, '_' or '-'";

impl Blueprint {
    /// Checks every rule; the error lists all problems found.
    pub fn validate(&self) -> Result<(), Invalid> {
        let mut p = Problems::default();
        if self.api_version != API_VERSION {
            p.fail(
                "apiVersion",
                format!("must be `{API_VERSION}`, not `{}`", self.api_version),
            );
        }
        if self.kind != KIND {
            p.fail("kind", format!("must be `{KIND}`, not `{}`", self.kind));
        }
        if self.metadata.name.is_empty() {
            p.fail("metadata.name", "must not be empty");
        }
        let instances = self.check_services(&mut p);
        self.check_applications(&instances, &mut p);
        if p.0.is_empty() {
            // Kind-specific settings are checked by rendering them.
            crate::render::render_checked(self, &mut p);
        }
        p.into_result()
    }

    /// Service instance names mapped to their kinds, checking names, counts and replicas.
    fn check_services(&self, p: &mut Problems) -> BTreeMap<&str, ServiceKind> {
        let mut instances = BTreeMap::new();
        for (i, service) in self.spec.services.iter().enumerate() {
            let name = service.instance_name();
            if !is_name(name) {
                p.fail(
                    format!("spec.services[{i}].name"),
                    format!("`{name}` {NAME_RULE}"),
                );
            }
            if instances.insert(name, service.kind).is_some() {
                p.fail(
                    format!("spec.services[{i}].name"),
                    format!("duplicate service instance `{name}`"),
                );
            }
            if service.replicas == 0 || service.replicas > 1000 {
                p.fail(
                    format!("spec.services[{i}].replicas"),
                    "must be between 1 and 1000",
                );
            }
            if let Some(a) = &service.autoscaling {
                let at = format!("spec.services[{i}].autoscaling");
                if a.min_replicas == 0 || a.max_replicas > 1000 {
                    p.fail(
                        format!("{at}.minReplicas"),
                        "minReplicas and maxReplicas must be between 1 and 1000",
                    );
                }
                if a.max_replicas < a.min_replicas {
                    p.fail(
                        format!("{at}.maxReplicas"),
                        format!("must be at least minReplicas ({})", a.min_replicas),
                    );
                }
                if a.target_cpu_percent == 0 || a.target_cpu_percent > 100 {
                    p.fail(format!("{at}.targetCpuPercent"), "must be between 1 and 100");
                }
            }
        }
        let count = |kind| self.spec.services.iter().filter(|s| s.kind == kind).count();
        if count(ServiceKind::Kpc) == 0 {
            p.fail(
                "spec.services",
                "needs a `kpc` service: without a gateway no device can connect",
            );
        }
        if count(ServiceKind::Epr) != 1 {
            p.fail(
                "spec.services",
                "needs exactly one `epr` service (the endpoint register)",
            );
        }
        if count(ServiceKind::Cm) != 1 {
            p.fail(
                "spec.services",
                "needs exactly one `cm` service (the credential service: endpoint tokens and client credentials)",
            );
        }
        // One REST API per kind and process: the paths name no instance.
        for (kind, what) in [
            (ServiceKind::Cex, "commands (`/cex/api/v1`)"),
            (ServiceKind::Bcx, "binary uploads (`/bcx/api/v1`)"),
        ] {
            if count(kind) > 1 {
                p.fail(
                    "spec.services",
                    format!("at most one `{kind}` service: its REST API for {what} names no instance"),
                );
            }
        }
        instances
    }

    fn check_applications(&self, instances: &BTreeMap<&str, ServiceKind>, p: &mut Problems) {
        let mut apps = BTreeSet::new();
        let mut versions = BTreeSet::new();
        for (a, app) in self.spec.applications.iter().enumerate() {
            let at = format!("spec.applications[{a}]");
            if !is_name(&app.name) {
                p.fail(format!("{at}.name"), format!("`{}` {NAME_RULE}", app.name));
            }
            if !apps.insert(app.name.as_str()) {
                p.fail(
                    format!("{at}.name"),
                    format!("duplicate application `{}`", app.name),
                );
            }
            if app.versions.is_empty() {
                p.fail(
                    format!("{at}.versions"),
                    "an application needs at least one version",
                );
            }
            for (v, version) in app.versions.iter().enumerate() {
                let at = format!("{at}.versions[{v}]");
                if !is_name(&version.name) {
                    p.fail(format!("{at}.name"), format!("`{}` {NAME_RULE}", version.name));
                }
                if !versions.insert(version.name.as_str()) {
                    p.fail(
                        format!("{at}.name"),
                        format!(
                            "duplicate application version `{}` (versions are unique across applications)",
                            version.name
                        ),
                    );
                }
                for (e, ext) in version.extensions.iter().enumerate() {
                    match instances.get(ext.as_str()) {
                        Some(kind) if kind.is_extension() => {}
                        Some(kind) => p.fail(
                            format!("{at}.extensions[{e}]"),
                            format!("`{ext}` is a `{kind}` service, not an extension devices can use"),
                        ),
                        None => p.fail(
                            format!("{at}.extensions[{e}]"),
                            format!("no service instance named `{ext}` in spec.services"),
                        ),
                    }
                }
            }
        }
    }
}

/// The rules of a kpc service's settings that their types cannot express; whether they hold.
pub(crate) fn check_kpc(settings: &KpcSettings, index: usize, p: &mut Problems) -> bool {
    let paths = [
        ("ws", settings.ws.as_ref().map(|ws| &ws.path)),
        ("wss", settings.wss.as_ref().map(|wss| &wss.path)),
    ];
    let mut ok = true;
    for (listener, path) in paths {
        if let Some(Err(why)) = path.map(|path| check_ws_path(path)) {
            p.fail(format!("spec.services[{index}].config.{listener}.path"), why);
            ok = false;
        }
    }
    ok
}

#[cfg(test)]
mod tests {
    use crate::{Blueprint, BlueprintError};

    fn errors(yaml: &str) -> Vec<String> {
        match Blueprint::from_yaml(yaml) {
            Err(BlueprintError::Invalid(invalid)) => invalid.0.iter().map(|e| e.to_string()).collect(),
            other => panic!("expected an invalid Blueprint, got {other:?}"),
        }
    }

    const GOOD: &str = r#"
apiVersion: kaa-rs.dev/v1alpha1
kind: Blueprint
metadata: { name: t }
spec:
  applications:
    - name: meter
      versions: [{ name: meter_v1, extensions: [epmx] }]
  services:
    - { kind: kpc }
    - { kind: epr }
    - { kind: epmx }
    - { kind: cm }
"#;

    #[test]
    fn a_good_blueprint_passes() {
        let bp = Blueprint::from_yaml(GOOD).unwrap();
        assert_eq!(bp.spec.services[0].instance_name(), "kpc");
    }

    #[test]
    fn the_quickstart_is_valid() {
        let bp = Blueprint::quickstart();
        assert!(
            bp.spec
                .applications
                .iter()
                .flat_map(|a| &a.versions)
                .any(|v| v.name == "demo_application_v1")
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let yaml = GOOD
            .replace("kaa-rs.dev/v1alpha1", "v1")
            .replace("extensions: [epmx]", "extensions: [epmx, dcx, epr]")
            .replace("- { kind: kpc }", "- { kind: epr, replicas: 0 }")
            .replace("- { kind: cm }", "- { kind: cm }\n    - { kind: cm, name: cm2 }");
        let errs = errors(&yaml);
        let expected = [
            "apiVersion: must be `kaa-rs.dev/v1alpha1`, not `v1`",
            "spec.services[1].name: duplicate service instance `epr`",
            "spec.services[0].replicas: must be between 1 and 1000",
            "spec.services: needs a `kpc` service: without a gateway no device can connect",
            "spec.services: needs exactly one `epr` service (the endpoint register)",
            "spec.services: needs exactly one `cm` service (the credential service: endpoint tokens and client credentials)",
            "spec.applications[0].versions[0].extensions[1]: no service instance named `dcx` in spec.services",
            "spec.applications[0].versions[0].extensions[2]: `epr` is a `epr` service, not an extension devices can use",
        ];
        for e in expected {
            assert!(errs.iter().any(|x| x == e), "missing `{e}` in {errs:#?}");
        }
    }

    #[test]
    fn autoscaling_bounds_are_checked() {
        let yaml = GOOD.replace(
            "- { kind: kpc }",
            "- { kind: kpc, autoscaling: { minReplicas: 3, maxReplicas: 2, targetCpuPercent: 0 } }",
        );
        assert_eq!(
            errors(&yaml),
            [
                "spec.services[0].autoscaling.maxReplicas: must be at least minReplicas (3)",
                "spec.services[0].autoscaling.targetCpuPercent: must be between 1 and 100",
            ]
        );
    }

    #[test]
    fn duplicate_versions_across_applications_are_refused() {
        let yaml = GOOD.replace(
            "  services:",
            "    - name: other\n      versions: [{ name: meter_v1 }]\n  services:",
        );
        assert_eq!(
            errors(&yaml),
            [
                "spec.applications[1].versions[0].name: duplicate application version `meter_v1` (versions are unique across applications)"
            ]
        );
    }

    #[test]
    fn unknown_fields_and_kinds_are_parse_errors() {
        for bad in [
            GOOD.replace("kind: epmx", "kind: nope"),
            GOOD.replace("metadata: { name: t }", "metadata: { name: t }\nspecs: {}"),
        ] {
            assert!(
                matches!(Blueprint::from_yaml(&bad), Err(BlueprintError::Parse(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn control_extensions_need_distinct_rest_apis() {
        let yaml = GOOD.replace(
            "- { kind: cm }",
            "- { kind: cm }\n    - { kind: cex }\n    - { kind: cex, name: cex2 }\n    - { kind: cmx }\n    - { kind: cmx, name: cmx2, config: { configName: default } }",
        );
        let errs = errors(&yaml);
        assert!(
            errs.iter().any(|e| e.contains("at most one `cex` service")),
            "{errs:?}"
        );
        let yaml = GOOD.replace(
            "- { kind: cm }",
            "- { kind: cm }\n    - { kind: cmx }\n    - { kind: cmx, name: cmx2, config: { configName: default } }",
        );
        assert_eq!(
            errors(&yaml),
            [
                "service `cmx2` config.configName: configuration name `default` is served by another cmx instance too"
            ]
        );
    }

    #[test]
    fn bad_settings_name_the_service() {
        let yaml = GOOD.replace(
            "- { kind: kpc }",
            "- { kind: kpc, config: { mqtt: { port: 1 } } }",
        );
        let errs = errors(&yaml);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].starts_with("spec.services[0].config: "), "{errs:?}");
        assert!(errs[0].contains("port"), "{errs:?}");
    }

    #[test]
    fn websocket_paths_must_start_with_a_slash() {
        let yaml = GOOD.replace(
            "- { kind: kpc }",
            "- { kind: kpc, config: { ws: { path: mqtt }, wss: { path: /ok, certFile: c, keyFile: k } } }",
        );
        assert_eq!(
            errors(&yaml),
            ["spec.services[0].config.ws.path: `mqtt` must start with `/`"]
        );
    }
}
