//! The HTTP endpoints: `/metrics`, `/healthz`, the JSON API under
//! `/api/v1/` and the status page at `/`.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::sync::Semaphore;

use super::scrape::Scrapes;
use crate::health::Health;
use crate::lane::Lane;
use crate::ledger::Usec;
use crate::render::exposition::{accepts, Format};
use crate::render::metrics::Families;
use crate::render::{api, page};
use crate::snapshot::{Snapshot, Snapshots};

#[derive(Clone)]
struct AppState {
    snapshots: Snapshots,
    health: Health,
    /// Scrapes render one at a time on the blocking pool; reads for people
    /// (API, page) on a lane of their own at a lower priority (or, if its
    /// thread could not start, like scrapes): a flood of page requests
    /// neither starves the owner task of a core nor queues scrapes behind it.
    scrapes: Arc<Semaphore>,
    pages: Option<Lane>,
    /// Scrape bodies, with the parts kept for the latest snapshot.
    bodies: Arc<Scrapes>,
}

/// The routes, reading the latest snapshot from `snapshots` and health from
/// `health`.
pub fn router(snapshots: Snapshots, health: Health, families: Families) -> Router {
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
            pages: Lane::start("unitwatch-pages"),
            bodies: Arc::new(Scrapes::new(&families)),
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
    tokio::task::spawn_blocking(move || f(&snapshot, snapshot.now()))
        .await
        .ok()
}

/// Renders for people: on their lane, else like a scrape.
async fn render_for_people<T: Send + 'static>(
    app: &AppState,
    f: impl FnOnce(&Snapshot, Usec) -> T + Send + 'static,
) -> Option<T> {
    match &app.pages {
        Some(lane) => {
            let snapshot = app.snapshots.latest();
            lane.run(move || f(&snapshot, snapshot.now())).await
        }
        None => render(app, &app.scrapes, f).await,
    }
}

fn unavailable() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
}

/// Whether the client takes gzip (`Accept-Encoding`, not refused by `q=0`).
fn takes_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            accepts(v, |coding| {
                coding.eq_ignore_ascii_case("gzip") || coding == "*"
            })
        })
}

async fn scrape(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let format = Format::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let gzipped = takes_gzip(&headers);
    let bodies = Arc::clone(&app.bodies);
    let rendered = async {
        let _turn = app.scrapes.acquire().await.ok()?;
        let snapshot = app.snapshots.latest();
        // Rendered and compressed on the blocking pool, not on the async workers.
        tokio::task::spawn_blocking(move || bodies.body(&snapshot, snapshot.now(), format, gzipped))
            .await
            .ok()
    }
    .await;
    let Some((body, compressed)) = rendered else {
        return unavailable();
    };
    let mut response = (
        [
            (header::CONTENT_TYPE, format.content_type()),
            (header::VARY, "Accept, Accept-Encoding"),
        ],
        axum::body::Body::new(body),
    )
        .into_response();
    if compressed {
        response.headers_mut().insert(
            header::CONTENT_ENCODING,
            header::HeaderValue::from_static("gzip"),
        );
    }
    response
}

async fn healthz(State(app): State<AppState>) -> Response {
    let journal = match app.health.journal() {
        Some(Ok(())) => "journal: reading".to_owned(),
        Some(Err(why)) => format!("journal: degraded, counting from D-Bus alone ({why})"),
        None => "journal: not yet open".to_owned(),
    };
    // Connected is not yet ready: the units the D-Bus source just read are
    // ready once the owner has applied them and published the snapshot
    // that holds them, which is what a scrape then reads.
    let published = app.snapshots.latest().stats.dbus_up;
    match app.health.status() {
        Ok(units) if published => (
            StatusCode::OK,
            format!("ok: connected to systemd, watching {units} units; {journal}\n"),
        )
            .into_response(),
        Ok(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("unavailable: connected to systemd, accounting its units; {journal}\n"),
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
    let read = |s: &Snapshot, now| serde_json::to_vec(&api::units(&s.ledger, &s.sample, now));
    match render_for_people(&app, read).await {
        Some(Ok(body)) => json(StatusCode::OK, body),
        Some(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        None => unavailable(),
    }
}

/// The value of `name` in a query string (`a=1&user=alice`), percent- and
/// `+`-decoded; `None` if it is not there or does not decode to UTF-8.
fn query_value(query: &str, name: &str) -> Option<String> {
    let raw = query
        .split('&')
        .find_map(|pair| pair.split_once('=').filter(|(k, _)| *k == name))?
        .1;
    let mut bytes = Vec::with_capacity(raw.len());
    let mut rest = raw.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        match b {
            b'+' => bytes.push(b' '),
            b'%' => {
                let hex = rest.get(..2).and_then(|h| std::str::from_utf8(h).ok());
                let byte = hex.and_then(|h| u8::from_str_radix(h, 16).ok())?;
                bytes.push(byte);
                rest = &rest[2..];
            }
            b => bytes.push(b),
        }
    }
    String::from_utf8(bytes).ok()
}

/// `/api/v1/units/{unit}`: a system unit, or with `?user=NAME` a unit of
/// that user's manager.
async fn unit(
    State(app): State<AppState>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let user = query.as_deref().and_then(|q| query_value(q, "user"));
    let (wanted, of) = (name.clone(), user.clone());
    let read = move |s: &Snapshot, now| {
        api::unit_detail(&s.ledger, &s.sample, &wanted, of.as_deref(), now)
            .map(|d| serde_json::to_vec(&d))
    };
    let name = match &user {
        Some(user) => format!("{name} of user {user}"),
        None => name,
    };
    match render_for_people(&app, read).await {
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
    match render_for_people(&app, |s, now| page::render(&s.ledger, &s.sample, now)).await {
        Some(html) => Html(html).into_response(),
        None => unavailable(),
    }
}

#[cfg(test)]
mod tests {
    use super::query_value;

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(query_value("user=alice", "user").as_deref(), Some("alice"));
        assert_eq!(
            query_value("x=1&user=a%20b+c%2Fd", "user").as_deref(),
            Some("a b c/d")
        );
        assert_eq!(query_value("users=alice", "user"), None);
        assert_eq!(query_value("user=%zz", "user"), None);
        assert_eq!(query_value("user=%e2%82", "user"), None);
        assert_eq!(query_value("user=", "user").as_deref(), Some(""));
    }
}
