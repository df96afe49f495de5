//! `kaa run web` in cluster mode: a real nats-server, one `kaa run` process per service of the
//! quickstart plus a `web` instance, and plain HTTP requests through the web service (the browser
//! walk is in dashboard.rs).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use kaa_e2e::{Platform, quickstart_with_web};
use reqwest::{Client, Method, StatusCode, header};
use serde_json::{Value, json};

const VERSION: &str = "demo_application_v1";

/// The web service of a cluster, with the admin token.
struct Web {
    base: String,
    token: String,
    client: Client,
}

impl Web {
    fn of(platform: &Platform) -> Web {
        Web {
            base: platform.service_http["web"].clone(),
            token: platform.admin_token.clone(),
            client: Client::new(),
        }
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    async fn json(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        (response.status(), response.json().await.unwrap_or(Value::Null))
    }

    /// The list the dashboard polls, asked with `If-None-Match: etag` when given: status and ETag.
    async fn poll_list(&self, etag: Option<&str>) -> (StatusCode, String) {
        let mut request = self.request(
            Method::GET,
            &format!("/epr/api/v1/endpoints?applicationVersionName={VERSION}&include=metadata&limit=25"),
        );
        if let Some(etag) = etag {
            request = request.header(header::IF_NONE_MATCH, etag);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let tag = response.headers()[header::ETAG].to_str().unwrap().to_owned();
        let body = response.bytes().await.unwrap();
        if status == StatusCode::NOT_MODIFIED {
            assert!(body.is_empty(), "a 304 has no body");
        }
        (status, tag)
    }
}

#[tokio::test]
async fn the_web_service_serves_the_dashboard_and_forwards_each_api_to_its_instance() {
    let platform = Platform::cluster_with(&quickstart_with_web(), 1).await;
    let web = Web::of(&platform);

    // The page is open; the APIs behind it need the admin token, checked before forwarding.
    let page = web.client.get(format!("{}/", web.base)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("<html"));
    let anonymous = web
        .client
        .get(format!("{}/epr/api/v1/applications", web.base))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);

    // Register through the web service: the endpoint is in EPR's own process.
    let (status, created) = web
        .json(
            Method::POST,
            "/epr/api/v1/endpoints",
            Some(json!({"appVersion": {"name": VERSION}, "endpointToken": "web-meter", "metadata": {"model": "A300"}})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["endpointId"].as_str().unwrap();
    let (_, listed) = web
        .json(
            Method::GET,
            &format!("/epr/api/v1/endpoints?applicationVersionName={VERSION}&include=metadata"),
            None,
        )
        .await;
    assert_eq!(listed["content"][0]["endpointId"], id, "{listed}");
    assert_eq!(listed["content"][0]["metadata"]["model"], "A300");
    let (status, direct) = platform.get(&format!("/epr/api/v1/endpoints/{id}")).await;
    assert_eq!((status, direct["endpointId"].as_str()), (200, Some(id)));
    // Its token went to the credential service, through the proxy's /cm route too.
    let (status, tokens) = web
        .json(Method::GET, &format!("/cm/api/v1/endpoints/{id}/tokens"), None)
        .await;
    assert_eq!(status, 200, "{tokens}");

    // Configurations: `?name=` picks the CMX instance; what one holds, the other does not.
    let ota = format!("/ecr/api/v1/app-versions/{VERSION}?name=cmx_ota");
    let (status, put) = web
        .json(Method::PUT, &ota, Some(json!({"firmware": "2.0"})))
        .await;
    assert!(status.is_success(), "{status} {put}");
    let direct = format!("{}{ota}", platform.service_http["cmx_ota"]);
    let held = Client::new()
        .get(direct)
        .bearer_auth(&platform.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(held.status(), 200);
    let (status, _) = web
        .json(Method::GET, &format!("/ecr/api/v1/app-versions/{VERSION}"), None)
        .await;
    assert_eq!(status, 404, "the default configuration's instance holds none");
    let (status, unknown) = web
        .json(
            Method::GET,
            &format!("/ecr/api/v1/statuses?name=nope&endpointId={id}"),
            None,
        )
        .await;
    assert_eq!(status, 404);
    assert!(
        unknown["message"].as_str().unwrap().contains("cmx_ota"),
        "{unknown}"
    );
}

#[tokio::test]
async fn the_endpoint_list_etag_changes_exactly_when_the_list_does() {
    let platform = Platform::cluster_with(&quickstart_with_web(), 1).await;
    let web = Web::of(&platform);

    let (status, empty) = web.poll_list(None).await;
    assert_eq!(status, 200);
    assert_eq!(
        web.poll_list(Some(&empty)).await,
        (StatusCode::NOT_MODIFIED, empty.clone())
    );

    // A registration changes the list.
    let id = platform.register(VERSION, "etag-meter").await;
    let (status, one) = web.poll_list(Some(&empty)).await;
    assert_eq!(status, 200);
    assert_ne!(one, empty);
    assert_eq!(web.poll_list(Some(&one)).await.0, StatusCode::NOT_MODIFIED);

    // A metadata change changes it; writing the same metadata again does not.
    let metadata = format!("/epr/api/v1/endpoints/{id}/metadata");
    let (status, _) = platform
        .request(Method::PUT, &metadata, Some(&json!({"model": "A300"})))
        .await;
    assert_eq!(status, 200);
    let (status, changed) = web.poll_list(Some(&one)).await;
    assert_eq!(status, 200);
    assert_ne!(changed, one);
    let (status, _) = platform
        .request(Method::PUT, &metadata, Some(&json!({"model": "A300"})))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        web.poll_list(Some(&changed)).await,
        (StatusCode::NOT_MODIFIED, changed.clone())
    );
    // Any of several tags, weak or strong, matches.
    assert_eq!(
        web.poll_list(Some(&format!("\"old\", W/{changed}"))).await.0,
        StatusCode::NOT_MODIFIED
    );

    // Deleting the endpoint changes it back to what an empty list is.
    let (status, _) = platform
        .request(Method::DELETE, &format!("/epr/api/v1/endpoints/{id}"), None)
        .await;
    assert_eq!(status, 204);
    assert_eq!(web.poll_list(Some(&changed)).await, (StatusCode::OK, empty));
}
