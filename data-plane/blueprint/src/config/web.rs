//! Config of the `web` kind: the dashboard in a cluster. It serves the dashboard's files and
//! forwards the browser's REST calls to the instances that own them, so that the browser talks to
//! one origin while every service runs in its own Deployment behind its own Service.
//! Re-exported by [`crate::config`].

use serde::{Deserialize, Serialize};

use crate::ServiceKind;

/// The rendered config of a `web` instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebConfig {
    pub instance: String,
    /// The instances with a REST API (`epr`, `cm`, `epts`, `cmx`, `cex`, `bcx`), each with the
    /// base URL it answers at.
    pub upstreams: Vec<WebUpstream>,
    /// How long to wait for an upstream's answer (then 504).
    #[serde(default = "default_upstream_timeout_ms")]
    pub upstream_timeout_ms: u64,
}

/// One instance the dashboard's calls are forwarded to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebUpstream {
    pub kind: ServiceKind,
    pub instance: String,
    /// Base URL without a path, e.g. `http://smart-energy-epr:9000`.
    pub url: String,
    /// A `cmx` instance's configuration name: `/ecr/api/v1/...?name=` selects the instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_name: Option<String>,
}

/// What a Blueprint may set on a `web` service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebSettings {
    /// Base URL of every upstream; `{blueprint}` and `{instance}` become the Blueprint's and the
    /// instance's names as Kubernetes spells them (lower case, `_` -> `-`). The default names the
    /// Services the operator creates, on their management port.
    #[serde(default = "default_upstream_url")]
    pub upstream_url: String,
    #[serde(default = "default_upstream_timeout_ms")]
    pub upstream_timeout_ms: u64,
}

impl Default for WebSettings {
    fn default() -> Self {
        WebSettings {
            upstream_url: default_upstream_url(),
            upstream_timeout_ms: default_upstream_timeout_ms(),
        }
    }
}

fn default_upstream_url() -> String {
    "http://{blueprint}-{instance}:9000".to_owned()
}

fn default_upstream_timeout_ms() -> u64 {
    // Longer than CEX's longest `awaitTimeout` wait a dashboard asks for.
    60_000
}

impl WebSettings {
    /// The base URL of `instance` of the Blueprint `blueprint`.
    pub fn upstream_url(&self, blueprint: &str, instance: &str) -> String {
        self.upstream_url
            .replace("{blueprint}", &dns_label(blueprint))
            .replace("{instance}", &dns_label(instance))
    }

    /// Whether the URL template is usable: `http://` and a host (no TLS towards in-cluster Services).
    pub(crate) fn check(&self) -> Result<(), String> {
        let rest = self
            .upstream_url
            .strip_prefix("http://")
            .ok_or_else(|| format!("`{}` must start with `http://`", self.upstream_url))?;
        match rest.split(['/', '?', '#']).next() {
            Some(host) if !host.is_empty() && !rest[host.len()..].contains(['?', '#']) => Ok(()),
            _ => Err(format!(
                "`{}` must be `http://host[:port]` (no query, no fragment)",
                self.upstream_url
            )),
        }
    }
}

/// `cmx_ota` -> `cmx-ota`: a name as a Kubernetes object name (DNS label) spells it.
pub fn dns_label(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls_name_the_kubernetes_services() {
        let s = WebSettings::default();
        assert_eq!(
            s.upstream_url("Smart_Energy", "cmx_ota"),
            "http://smart-energy-cmx-ota:9000"
        );
        assert!(s.check().is_ok());
        let mine: WebSettings =
            serde_json::from_str(r#"{"upstreamUrl":"http://{instance}.kaa.svc:9000"}"#).unwrap();
        assert_eq!(mine.upstream_url("x", "epr"), "http://epr.kaa.svc:9000");
        for bad in ["https://{instance}", "{instance}:9000", "http://", "http://x?y"] {
            let s = WebSettings {
                upstream_url: bad.into(),
                ..WebSettings::default()
            };
            assert!(s.check().is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<WebSettings>(r#"{"upstream":"x"}"#).is_err());
    }
}
