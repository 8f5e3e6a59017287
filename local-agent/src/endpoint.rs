//! The optional HTTP endpoint (`[metrics] listen`): `/metrics` (OpenMetrics text from [`Metrics`]) and
//! `/healthz` (200 or 503 with the [`Healthz`] body).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};

use crate::health::Health;
use crate::metrics::Metrics;
use crate::status::Healthz;

#[derive(Clone)]
struct HttpState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    unhealthy_after: Duration,
}

async fn metrics_handler(State(s): State<HttpState>) -> impl IntoResponse {
    (
        [("content-type", Metrics::CONTENT_TYPE)],
        s.metrics.render(),
    )
}

async fn healthz_handler(State(s): State<HttpState>) -> impl IntoResponse {
    let body = Healthz::of(&s.health, s.unhealthy_after);
    let status = if body.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

/// The `/metrics` and `/healthz` router.
pub fn router(metrics: Arc<Metrics>, health: Arc<Health>, unhealthy_after: Duration) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz_handler))
        .with_state(HttpState {
            metrics,
            health,
            unhealthy_after,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    #[tokio::test]
    async fn healthz_turns_unhealthy_after_the_threshold() {
        let health = Arc::new(Health::default());
        let app = router(
            Arc::new(Metrics::default()),
            Arc::clone(&health),
            Duration::ZERO,
        );
        let status = |app: Router| async move {
            app.oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
                .await
                .unwrap()
                .status()
        };
        assert_eq!(status(app.clone()).await, StatusCode::OK);
        health.queue_failed("denied");
        assert_eq!(status(app.clone()).await, StatusCode::SERVICE_UNAVAILABLE);
        health.queue_ok();
        assert_eq!(status(app.clone()).await, StatusCode::OK);
        let metrics = app
            .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(metrics.status(), StatusCode::OK);
    }

    fn healthz(health: &Arc<Health>) -> impl std::future::Future<Output = StatusCode> {
        let app = router(
            Arc::new(Metrics::default()),
            Arc::clone(health),
            Duration::ZERO,
        );
        async move {
            app.oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
                .await
                .unwrap()
                .status()
        }
    }

    #[tokio::test]
    async fn failing_commits_stay_unhealthy_until_a_commit_succeeds() {
        let health = Arc::new(Health::default());
        health.backend_reachable();
        assert_eq!(healthz(&health).await, StatusCode::OK);
        health.commit_failed("nft: Operation not permitted");
        assert_eq!(healthz(&health).await, StatusCode::SERVICE_UNAVAILABLE);
        // A reconcile that finds no drift (no write) proves nothing about commits.
        health.backend_reachable();
        let problems = health.problems(Duration::ZERO);
        assert!(
            problems.iter().any(|p| p.contains("commits failing")),
            "{problems:?}"
        );
        assert_eq!(healthz(&health).await, StatusCode::SERVICE_UNAVAILABLE);
        health.commit_succeeded();
        assert_eq!(healthz(&health).await, StatusCode::OK);
        // A rejection pinned on one message does not make the firewall unhealthy.
        health.commit_failed("bad element");
        health.commit_rejected_for_content();
        assert_eq!(healthz(&health).await, StatusCode::OK);
    }

    #[tokio::test]
    async fn a_failing_poison_queue_stays_reported_until_a_send_succeeds() {
        let health = Arc::new(Health::default());
        health.poison_failed("QueueNotFound");
        assert_eq!(healthz(&health).await, StatusCode::SERVICE_UNAVAILABLE);
        // Receiving from the main queue says nothing about the poison queue.
        health.queue_ok();
        assert_eq!(healthz(&health).await, StatusCode::SERVICE_UNAVAILABLE);
        health.poison_ok();
        assert_eq!(healthz(&health).await, StatusCode::OK);
    }

    #[tokio::test]
    async fn backend_notices_are_problems_at_once() {
        let health = Arc::new(Health::default());
        health.set_notices(vec!["add portcullis-v4-1 to the drop rule".to_owned()]);
        assert_eq!(healthz(&health).await, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            health.problems(Duration::from_secs(3600)),
            ["add portcullis-v4-1 to the drop rule"]
        );
        health.set_notices(Vec::new());
        assert_eq!(healthz(&health).await, StatusCode::OK);
    }
}
