//! The HTTP endpoints: `/metrics`, `/healthz`, the JSON API under
//! `/api/v1/` and the status page at `/`.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::sync::{mpsc, oneshot};

use crate::health::Health;
use crate::ledger::{Ledger, Usec};
use crate::message::{Input, Reader};
use crate::render::metrics::CONTENT_TYPE;
use crate::render::{api, page};

#[derive(Clone)]
struct AppState {
    ledger: mpsc::Sender<Input>,
    health: Health,
}

/// The routes, reading the ledger through its task and health from `health`.
pub fn router(ledger: mpsc::Sender<Input>, health: Health) -> Router {
    Router::new()
        .route("/", get(status_page))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/api/v1/units", get(units))
        .route("/api/v1/units/{unit}", get(unit))
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

/// Runs `read` in the ledger task and returns what it made; `None` once
/// unitwatch is shutting down.
async fn read<T: Send + 'static>(
    app: &AppState,
    read: impl FnOnce(&Ledger, Usec) -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = oneshot::channel();
    let reader = Reader(Box::new(move |ledger, now| {
        let _ = tx.send(read(ledger, now));
    }));
    app.ledger.send(Input::Read(reader)).await.ok()?;
    rx.await.ok()
}

fn shutting_down() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
}

fn json(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn units(State(app): State<AppState>) -> Response {
    match read(&app, |l, now| serde_json::to_vec(&api::units(l, now))).await {
        Some(Ok(body)) => json(StatusCode::OK, body),
        Some(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        None => shutting_down(),
    }
}

async fn unit(State(app): State<AppState>, Path(name): Path<String>) -> Response {
    let wanted = name.clone();
    match read(&app, move |l, now| {
        api::unit_detail(l, &wanted, now).map(|d| serde_json::to_vec(&d))
    })
    .await
    {
        Some(Some(Ok(body))) => json(StatusCode::OK, body),
        Some(Some(Err(e))) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        Some(None) => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({ "error": format!("no watched unit {name}") })
                .to_string()
                .into_bytes(),
        ),
        None => shutting_down(),
    }
}

async fn status_page(State(app): State<AppState>) -> Response {
    match read(&app, page::render).await {
        Some(html) => Html(html).into_response(),
        None => shutting_down(),
    }
}
