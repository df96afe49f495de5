//! The `web` instance's config: every instance with a REST API, at the URL its Service answers.

use crate::config::{CmxConfig, CmxSettings, WebConfig, WebSettings, WebUpstream};
use crate::spec::{Blueprint, ServiceKind};
use crate::validate::Problems;

pub(super) fn web(
    blueprint: &Blueprint,
    instance: String,
    settings: WebSettings,
    index: usize,
    p: &mut Problems,
) -> WebConfig {
    if let Err(why) = settings.check() {
        p.fail(format!("spec.services[{index}].config.upstreamUrl"), why);
    }
    let upstreams = blueprint
        .spec
        .services
        .iter()
        .filter(|s| s.kind.serves_rest() && s.kind != ServiceKind::Web)
        .map(|s| {
            let name = s.instance_name();
            // A broken cmx config is reported where the cmx instance is rendered.
            let config_name = (s.kind == ServiceKind::Cmx).then(|| {
                serde_json::from_value::<CmxSettings>(serde_json::Value::Object(s.config.clone()))
                    .ok()
                    .and_then(|c| c.config_name)
                    .unwrap_or_else(|| CmxConfig::config_name_of(name))
            });
            WebUpstream {
                kind: s.kind,
                instance: name.to_owned(),
                url: settings.upstream_url(&blueprint.metadata.name, name),
                config_name,
            }
        })
        .collect();
    WebConfig {
        instance,
        upstreams,
        upstream_timeout_ms: settings.upstream_timeout_ms,
    }
}

#[cfg(test)]
mod tests {
    use crate::config::ServiceConfig;
    use crate::spec::{Blueprint, ServiceKind};

    fn quickstart_with_web(config: &str) -> Blueprint {
        let mut bp = Blueprint::quickstart();
        bp.metadata.name = "My_Platform".into();
        let mut web = bp.spec.services[0].clone();
        (web.kind, web.name) = (ServiceKind::Web, None);
        web.config = serde_json::from_str(config).unwrap();
        bp.spec.services.push(web);
        bp
    }

    #[test]
    fn the_dashboard_reaches_every_rest_api_at_its_service() {
        let bp = quickstart_with_web("{}");
        bp.validate().unwrap();
        let rendered = crate::render(&bp).unwrap();
        let Some(ServiceConfig::Web(web)) = rendered
            .iter()
            .map(|r| &r.config)
            .find(|c| c.kind() == ServiceKind::Web)
        else {
            panic!("no web")
        };
        let upstreams: Vec<(&str, &str, Option<&str>)> = web
            .upstreams
            .iter()
            .map(|u| (u.instance.as_str(), u.url.as_str(), u.config_name.as_deref()))
            .collect();
        assert_eq!(
            upstreams,
            [
                ("epr", "http://my-platform-epr:9000", None),
                ("cm", "http://my-platform-cm:9000", None),
                ("epts", "http://my-platform-epts:9000", None),
                ("cmx", "http://my-platform-cmx:9000", Some("default")),
                ("cmx_ota", "http://my-platform-cmx-ota:9000", Some("cmx_ota")),
                ("cex", "http://my-platform-cex:9000", None),
                ("bcx", "http://my-platform-bcx:9000", None),
            ]
        );
        assert_eq!(web.upstream_timeout_ms, 60_000);
        assert!(!ServiceKind::Web.keeps_state() && ServiceKind::Web.serves_rest());
    }

    #[test]
    fn a_bad_upstream_url_names_its_field() {
        let bp = quickstart_with_web(r#"{"upstreamUrl":"https://{instance}"}"#);
        let errors: Vec<String> = bp
            .validate()
            .unwrap_err()
            .0
            .iter()
            .map(|e| e.to_string())
            .collect();
        let at = format!("spec.services[{}].config.upstreamUrl", bp.spec.services.len() - 1);
        assert_eq!(
            errors,
            [format!("{at}: `https://{{instance}}` must start with `http://`")]
        );
    }
}
