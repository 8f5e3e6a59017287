//! `POST /alerts` in Data/Metadata mode: raw bytes as the host's invocation envelope, through the real
//! router (path normalisation, body limit, envelope walk, the same processing). The host must always get
//! a 200 envelope.
#![no_main]

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt as _;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt as _;

fn router() -> axum::Router {
    static ROUTER: OnceLock<axum::Router> = OnceLock::new();
    ROUTER
        .get_or_init(|| portcullis::app(portcullis_fuzz::state()))
        .clone()
}

fuzz_target!(|data: &[u8]| {
    let request = Request::post("/alerts")
        .header("content-type", "application/json")
        .body(Body::from(data.to_vec()))
        .expect("a request");
    portcullis_fuzz::runtime().block_on(async {
        let response = router().oneshot(request).await.expect("infallible");
        assert_eq!(response.status().as_u16(), 200);
        let body = response
            .into_body()
            .collect()
            .await
            .expect("a body")
            .to_bytes();
        assert!(body.starts_with(b"{"), "not a JSON envelope");
    });
});
