//! The HTTP endpoints: `/metrics`, `/healthz` and a landing page at `/`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::sync::{mpsc, oneshot};

use crate::health::Health;
use crate::owner::Input;
use crate::sink::metrics::CONTENT_TYPE;

#[derive(Clone)]
struct AppState {
    ledger: mpsc::Sender<Input>,
    health: Health,
}

/// The routes, reading the ledger through its task and health from `health`.
pub fn router(ledger: mpsc::Sender<Input>, health: Health) -> Router {
    Router::new()
        .route("/", get(landing))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(AppState { ledger, health })
}

async fn metrics(State(app): State<AppState>) -> Response {
    let (tx, rx) = oneshot::channel();
    if app.ledger.send(Input::Scrape(tx)).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    match rx.await {
        Ok(body) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response(),
    }
}

async fn healthz(State(app): State<AppState>) -> Response {
    let journal = match app.health.journal() {
        Some(Ok(())) => "journal: reading".to_owned(),
        Some(Err(why)) => format!("journal: degraded, counting from D-Bus alone ({why})"),
        None => "journal: not yet open".to_owned(),
    };
    match app.health.status() {
        Ok(units) => (
            StatusCode::OK,
            format!("ok: connected to systemd, watching {units} units; {journal}\n"),
        )
            .into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("unavailable: {reason}; {journal}\n"),
        )
            .into_response(),
    }
}

async fn landing() -> Html<String> {
    Html(format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>unitwatch</title></head>\n\
         <body><h1>unitwatch {}</h1>\n<p>Uptime, downtime and restarts of systemd units.</p>\n\
         <ul><li><a href=\"metrics\">Metrics</a></li><li><a href=\"healthz\">Health</a></li></ul>\n\
         </body></html>\n",
        env!("CARGO_PKG_VERSION")
    ))
}
