//! Serving the HTTP endpoints: the accept loop, TLS, basic auth, extra
//! response headers, and the limits that keep a slow, idle or hostile client
//! from holding a connection or a worker for long.
//!
//! - at most [`MAX_CONNECTIONS`] connections at once; more wait in the
//!   kernel's listen queue until one ends;
//! - a TLS handshake must finish within [`HEADER_TIMEOUT`];
//! - a request's line and headers must arrive within [`HEADER_TIMEOUT`] of
//!   the server starting to wait for them, which also closes a keep-alive
//!   connection idle for that long;
//! - a response must be ready within [`REQUEST_TIMEOUT`] (else `503`), and a
//!   write that cannot progress for [`REQUEST_TIMEOUT`] (a client not
//!   reading) ends the connection.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{header, HeaderName, HeaderValue, Request, Response, StatusCode};
use axum::{BoxError, Router};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tower_service::Service;

use crate::http::auth::BasicAuth;
use crate::http::web_config::WebConfig;
use crate::shutdown::Shutdown;

/// Time allowed for a TLS handshake, and for a request's line and headers;
/// also how long a keep-alive connection may sit idle.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed to produce a response, and for a stalled write to resume.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 512;

/// What every connection shares: the routes and the web configuration.
struct App {
    router: Router,
    auth: Option<Arc<BasicAuth>>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

/// Serves `router` on `listener` as `web` says until `shutdown`; then
/// stops accepting and lets open connections finish their response.
pub async fn serve(listener: TcpListener, router: Router, web: WebConfig, mut shutdown: Shutdown) {
    let tls = web.tls.clone().map(TlsAcceptor::from);
    let app = Arc::new(App {
        router,
        auth: BasicAuth::new(web.users.clone()),
        headers: web.headers.clone(),
    });
    tracing::debug!(
        tls = tls.is_some(),
        basic_auth = app.auth.is_some(),
        max_connections = MAX_CONNECTIONS,
        "serving HTTP"
    );
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot,
            _ = shutdown.recv() => break,
        };
        let Ok(slot) = slot else { break };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.recv() => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: wait a little
                // rather than spin.
                tracing::warn!(error = %e, "cannot accept a connection");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    _ = shutdown.recv() => break,
                }
            }
        };
        let tls = tls.clone();
        let app = app.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            connection(stream, peer, tls, app, shutdown).await;
            drop(slot);
        });
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    app: Arc<App>,
    shutdown: Shutdown,
) {
    let _ = stream.set_nodelay(true);
    let Some(acceptor) = tls else {
        return http(stream, peer, app, shutdown).await;
    };
    match tokio::time::timeout(HEADER_TIMEOUT, handshake(stream, &acceptor)).await {
        Ok(Ok(Some(stream))) => http(stream, peer, app, shutdown).await,
        Ok(Ok(None)) => tracing::debug!(%peer, "plain HTTP on the TLS port; answered 400"),
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
    }
}

/// The TLS handshake; `None` if the client spoke plain HTTP, which gets a
/// `400` saying so rather than a handshake error it cannot show.
async fn handshake(
    mut stream: TcpStream,
    acceptor: &TlsAcceptor,
) -> io::Result<Option<tokio_rustls::server::TlsStream<TcpStream>>> {
    let mut first = [0u8; 1];
    let n = stream.peek(&mut first).await?;
    // Every TLS connection begins with a handshake record (type 22).
    if n == 1 && first[0] != 0x16 {
        // Read the request head first: closing a socket with unread data
        // resets it, and the client might never see the answer.
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while head.len() < 8192 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await? {
                0 => break,
                n => head.extend_from_slice(&buf[..n]),
            }
        }
        let reply = "HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";
        stream.write_all(reply.as_bytes()).await?;
        stream.shutdown().await?;
        return Ok(None);
    }
    acceptor.accept(stream).await.map(Some)
}

/// Serves HTTP/1.1 on one connection until it ends, the client idles too
/// long, or shutdown.
async fn http<I>(io: I, peer: SocketAddr, app: Arc<App>, mut shutdown: Shutdown)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(StallGuard::new(io, REQUEST_TIMEOUT));
    let service = service_fn(move |req| {
        let app = app.clone();
        async move { Ok::<_, Infallible>(app.handle(req).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let ended = tokio::select! {
        ended = conn.as_mut() => ended,
        _ = shutdown.recv() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = ended {
        tracing::debug!(%peer, error = %e, "connection ended");
    }
}

impl App {
    async fn handle<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let mut response = self.respond(req).await;
        let headers = response.headers_mut();
        for (name, value) in &self.headers {
            headers.insert(name.clone(), value.clone());
        }
        response
    }

    async fn respond<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        if let Some(auth) = &self.auth {
            if !auth.check(req.headers().get(header::AUTHORIZATION)).await {
                return plain(StatusCode::UNAUTHORIZED, "unauthorized\n", true);
            }
        }
        let mut router = self.router.clone();
        match tokio::time::timeout(REQUEST_TIMEOUT, router.call(req)).await {
            Ok(Ok(response)) => response,
            Ok(Err(never)) => match never {},
            Err(_) => plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "request timed out\n",
                false,
            ),
        }
    }
}

fn plain(status: StatusCode, body: &'static str, challenge: bool) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if challenge {
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"unitwatch\", charset=\"UTF-8\""),
        );
    }
    response
}

/// Fails a write, flush or shutdown that has made no progress for `limit`,
/// so a client that stops reading cannot hold its connection forever.
struct StallGuard<I> {
    inner: I,
    limit: Duration,
    stall: Pin<Box<Sleep>>,
    armed: bool,
}

impl<I> StallGuard<I> {
    fn new(inner: I, limit: Duration) -> StallGuard<I> {
        StallGuard {
            inner,
            limit,
            stall: Box::pin(tokio::time::sleep(limit)),
            armed: false,
        }
    }

    /// After the inner write returned `Pending`: an error once the stall
    /// has lasted `limit`, `Pending` before.
    fn pending<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        if !self.armed {
            self.stall.as_mut().reset(Instant::now() + self.limit);
            self.armed = true;
        }
        match self.stall.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "client stopped reading",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn guard<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Pending => self.pending(cx),
            ready => {
                self.armed = false;
                ready
            }
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for StallGuard<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for StallGuard<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.guard(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.guard(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.guard(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.guard(cx, polled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use base64::Engine;
    use std::collections::BTreeMap;
    use tokio::io::AsyncWriteExt;

    fn app(users: BTreeMap<String, String>) -> App {
        let router = Router::new()
            .route("/fast", get(|| async { "fast" }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(REQUEST_TIMEOUT * 2).await;
                    "slow"
                }),
            );
        App {
            router,
            auth: BasicAuth::new(users),
            headers: vec![(
                HeaderName::from_static("x-frame-options"),
                HeaderValue::from_static("deny"),
            )],
        }
    }

    fn get_req(path: &str, auth: Option<&str>) -> Request<Body> {
        let mut req = Request::get(path);
        if let Some(a) = auth {
            let encoded = base64::engine::general_purpose::STANDARD.encode(a);
            req = req.header(header::AUTHORIZATION, format!("Basic {encoded}"));
        }
        req.body(Body::empty()).expect("request")
    }

    /// A handler that does not answer in time gets a 503, with the
    /// configured headers.
    #[tokio::test(start_paused = true)]
    async fn slow_handler_times_out() {
        let app = app(BTreeMap::new());
        let response = app.handle(get_req("/slow", None)).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()["x-frame-options"], "deny");
        let response = app.handle(get_req("/fast", None)).await;
        assert_eq!(response.status(), StatusCode::OK);
    }

    /// With users configured, no or wrong credentials get 401 and a
    /// challenge before routing; right ones reach the routes.
    #[tokio::test]
    async fn basic_auth_comes_first() {
        let mut users = BTreeMap::new();
        users.insert("alice".to_owned(), bcrypt::hash("pw", 4).expect("hash"));
        let app = app(users);
        for (path, auth) in [
            ("/fast", None),
            ("/nope", None),
            ("/fast", Some("alice:no")),
        ] {
            let response = app.handle(get_req(path, auth)).await;
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{path} {auth:?}"
            );
            assert!(response.headers()[header::WWW_AUTHENTICATE]
                .to_str()
                .is_ok_and(|v| v.starts_with("Basic ")));
            assert_eq!(response.headers()["x-frame-options"], "deny");
        }
        let response = app.handle(get_req("/fast", Some("alice:pw"))).await;
        assert_eq!(response.status(), StatusCode::OK);
        let response = app.handle(get_req("/nope", Some("alice:pw"))).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }

    /// A peer that never reads: the guarded writer fails instead of
    /// waiting forever.
    #[tokio::test(start_paused = true)]
    async fn stalled_write_fails_after_the_limit() {
        let (writer, _reader) = tokio::io::duplex(64);
        let mut guarded = StallGuard::new(writer, Duration::from_secs(5));
        let err = guarded
            .write_all(&[0u8; 1024])
            .await
            .expect_err("a write nobody reads must fail");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    /// A reader that keeps up: every write completes.
    #[tokio::test(start_paused = true)]
    async fn progressing_write_succeeds() {
        use tokio::io::AsyncReadExt;
        let (writer, mut reader) = tokio::io::duplex(64);
        let drain = tokio::spawn(async move {
            let mut all = Vec::new();
            reader.read_to_end(&mut all).await.map(|_| all.len())
        });
        let mut guarded = StallGuard::new(writer, Duration::from_secs(5));
        guarded.write_all(&[1u8; 4096]).await.expect("write");
        guarded.shutdown().await.expect("shutdown");
        drop(guarded);
        assert_eq!(drain.await.expect("join").expect("read"), 4096);
    }
}
