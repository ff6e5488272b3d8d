//! The HTTP endpoints: `/metrics`, `/healthz`, the JSON API under
//! `/api/v1/` and the status page at `/`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::sync::Semaphore;

use crate::clock;
use crate::health::Health;
use crate::ledger::Usec;
use crate::render::metrics::{self, CONTENT_TYPE};
use crate::render::{api, page};
use crate::snapshot::{Snapshot, Snapshots};

#[derive(Clone)]
struct AppState {
    snapshots: Snapshots,
    health: Health,
    /// Scrapes, and reads for people (API, page), each render one at a time
    /// on the blocking pool: a flood of page requests neither starves the
    /// owner task of a core nor queues scrapes behind it.
    scrapes: Arc<Semaphore>,
    pages: Arc<Semaphore>,
}

/// The routes, reading the latest snapshot from `snapshots` and health from
/// `health`.
pub fn router(snapshots: Snapshots, health: Health) -> Router {
    Router::new()
        .route("/", get(status_page))
        .route("/metrics", get(scrape))
        .route("/healthz", get(healthz))
        .route("/api/v1/units", get(units))
        .route("/api/v1/units/{unit}", get(unit))
        .with_state(AppState {
            snapshots,
            health,
            scrapes: Arc::new(Semaphore::new(1)),
            pages: Arc::new(Semaphore::new(1)),
        })
}

/// Renders the latest snapshot as of now with `f`, off the async workers;
/// `None` if the render could not run.
async fn render<T: Send + 'static>(
    app: &AppState,
    lane: &Semaphore,
    f: impl FnOnce(&Snapshot, Usec) -> T + Send + 'static,
) -> Option<T> {
    let _turn = lane.acquire().await.ok()?;
    let snapshot = app.snapshots.latest();
    tokio::task::spawn_blocking(move || f(&snapshot, clock::now()))
        .await
        .ok()
}

fn unavailable() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
}

async fn scrape(State(app): State<AppState>) -> Response {
    match render(&app, &app.scrapes, metrics::render).await {
        Some(body) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
        None => unavailable(),
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

fn json(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn units(State(app): State<AppState>) -> Response {
    let read = |s: &Snapshot, now| serde_json::to_vec(&api::units(&s.ledger, now));
    match render(&app, &app.pages, read).await {
        Some(Ok(body)) => json(StatusCode::OK, body),
        Some(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        None => unavailable(),
    }
}

async fn unit(State(app): State<AppState>, Path(name): Path<String>) -> Response {
    let wanted = name.clone();
    let read = move |s: &Snapshot, now| {
        api::unit_detail(&s.ledger, &wanted, now).map(|d| serde_json::to_vec(&d))
    };
    match render(&app, &app.pages, read).await {
        Some(Some(Ok(body))) => json(StatusCode::OK, body),
        Some(Some(Err(e))) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        Some(None) => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({ "error": format!("no watched unit {name}") })
                .to_string()
                .into_bytes(),
        ),
        None => unavailable(),
    }
}

async fn status_page(State(app): State<AppState>) -> Response {
    match render(&app, &app.pages, |s, now| page::render(&s.ledger, now)).await {
        Some(html) => Html(html).into_response(),
        None => unavailable(),
    }
}
