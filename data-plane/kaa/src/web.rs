//! The dashboard: static files compiled into the binary and served at `/` and `/ui/*`.
//!
//! The files hold no data and no secret, so they are open routes (see
//! [`crate::http::OPEN_ROUTES`]); the page asks the user for the admin token and sends it on
//! every REST call it makes, as any other API client does. Nothing is fetched from elsewhere at
//! run time: the Content-Security-Policy allows this origin only.

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

pub mod proxy;

/// Path prefix of the dashboard's assets (the page itself is `/`).
pub const ASSET_PREFIX: &str = "/ui/";

/// One bundled file.
#[derive(Debug)]
pub struct Asset {
    /// Absolute request path.
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static str,
}

macro_rules! asset {
    ($path:literal, $file:literal, $type:literal) => {
        Asset {
            path: $path,
            content_type: $type,
            body: include_str!(concat!("../web/", $file)),
        }
    };
}

/// Every file of the dashboard. No build step: these are the files as written.
pub const ASSETS: &[Asset] = &[
    asset!("/", "index.html", "text/html; charset=utf-8"),
    asset!("/ui/style.css", "style.css", "text/css; charset=utf-8"),
    asset!("/ui/app.js", "app.js", "text/javascript; charset=utf-8"),
    asset!("/ui/api.js", "api.js", "text/javascript; charset=utf-8"),
    asset!("/ui/chart.js", "chart.js", "text/javascript; charset=utf-8"),
    asset!("/ui/favicon.svg", "favicon.svg", "image/svg+xml"),
];

/// Same origin only: no inline script, no third-party anything, not framed by other sites.
const CSP: &str = "default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// The dashboard's routes, ready to merge into the HTTP app.
pub fn router() -> Router {
    ASSETS.iter().fold(Router::new(), |router, asset| {
        // Browsers revalidate on every load (`no-cache`), and get 304 while the binary is the same.
        let digest = format!("{:x}", Sha256::digest(asset.body.as_bytes()));
        let etag = HeaderValue::try_from(format!("\"{}\"", &digest[..16]))
            .unwrap_or(HeaderValue::from_static("\"0\""));
        router.route(
            asset.path,
            get(move |headers: HeaderMap| async move { serve(asset, etag, &headers) }),
        )
    })
}

fn serve(asset: &'static Asset, etag: HeaderValue, request: &HeaderMap) -> Response {
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .is_some_and(|tag| tag.as_bytes() == etag.as_bytes());
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type)),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (header::ETAG, etag),
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
    ];
    match fresh {
        true => (StatusCode::NOT_MODIFIED, headers).into_response(),
        false => (headers, asset.body).into_response(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use axum::body::Body;
    use axum::extract::Request;
    use tower::ServiceExt;

    use super::*;

    /// The README promises < 300 KB compressed; uncompressed is the stricter bound.
    const BUDGET_BYTES: usize = 300 * 1024;

    #[test]
    fn the_bundle_stays_within_its_size_budget() {
        let total: usize = ASSETS.iter().map(|a| a.body.len()).sum();
        assert!(total < BUDGET_BYTES, "{total} bytes");
    }

    #[test]
    fn assets_are_served_from_here_only() {
        for asset in ASSETS {
            // The SVG namespace is an identifier, not a fetch.
            let body = asset.body.replace("http://www.w3.org/2000/svg", "");
            for outside in ["http://", "https://", "@import"] {
                assert!(!body.contains(outside), "{} refers to {outside}", asset.path);
            }
        }
    }

    #[tokio::test]
    async fn every_asset_is_served_with_its_type_and_a_strict_policy() {
        for asset in ASSETS {
            let request = Request::get(asset.path).body(Body::empty()).unwrap();
            let response = router().oneshot(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{}", asset.path);
            let headers = response.headers().clone();
            assert_eq!(headers[header::CONTENT_TYPE], asset.content_type);
            assert!(
                headers[header::CONTENT_SECURITY_POLICY]
                    .to_str()
                    .unwrap()
                    .contains("default-src 'self'")
            );

            let etag = headers[header::ETAG].clone();
            let again = Request::get(asset.path)
                .header(header::IF_NONE_MATCH, etag)
                .body(Body::empty())
                .unwrap();
            let response = router().oneshot(again).await.unwrap();
            assert_eq!(response.status(), StatusCode::NOT_MODIFIED, "{}", asset.path);
        }
    }
}
