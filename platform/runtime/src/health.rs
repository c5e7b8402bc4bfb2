//! Health and readiness over HTTP: `GET /health` is 200 while the service makes progress and
//! 503 (with the reason) while it cannot, e.g. its database or broker is down.

use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Shared health state: components report problems and recoveries.
#[derive(Clone, Default)]
pub struct Health {
    problems: Arc<Mutex<std::collections::BTreeMap<String, String>>>,
}

impl Health {
    pub fn new() -> Self {
        Health::default()
    }

    /// `component` cannot make progress because of `reason`.
    pub fn degraded(&self, component: &str, reason: impl Into<String>) {
        self.problems
            .lock()
            .expect("health lock")
            .insert(component.to_owned(), reason.into());
    }

    /// `component` works again.
    pub fn recovered(&self, component: &str) {
        self.problems.lock().expect("health lock").remove(component);
    }

    pub fn is_healthy(&self) -> bool {
        self.problems.lock().expect("health lock").is_empty()
    }

    pub fn problems(&self) -> Vec<(String, String)> {
        self.problems
            .lock()
            .expect("health lock")
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The `/health` route, to merge into a service's HTTP router.
    pub fn router(&self) -> Router {
        let health = self.clone();
        Router::new().route(
            "/health",
            get(move || {
                let health = health.clone();
                async move {
                    let problems = health.problems();
                    let status = if problems.is_empty() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                    let body = serde_json::json!({
                        "status": if problems.is_empty() { "ok" } else { "degraded" },
                        "problems": problems.into_iter().map(|(c, r)| serde_json::json!({"component": c, "reason": r})).collect::<Vec<_>>(),
                    });
                    (status, Json(body))
                }
            }),
        )
    }

    /// Serves `/health` (plus `extra` routes) on `listener` until `shutdown`.
    pub async fn serve(
        &self,
        listener: TcpListener,
        extra: Router,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        tracing::info!(addr = %listener.local_addr()?, "admin endpoint listening");
        axum::serve(listener, self.router().merge(extra))
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await?;
        Ok(())
    }
}
