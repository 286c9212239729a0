//! The HTTP listener (hyper): GET /metrics, read and encoded per request.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context as _, Result};
use http_body_util::Full;
use hyper::{
    body::{Bytes, Incoming},
    header::{ALLOW, CONTENT_TYPE},
    server::conn::http1,
    service::service_fn,
    Method, Request, Response, StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::Semaphore};

use super::{collect, encode};

/// Scrapes served at once; more connections wait in the backlog (a
/// scraper needs one; this bounds what a flood of them can hold).
const MAX_CONNECTIONS: usize = 16;
/// Longest a connection may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a connection lives, keep-alive included.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(120);

/// Binds `addr` and serves it on the current tokio runtime; returns the
/// bound address.
pub async fn start(addr: SocketAddr, sources: Arc<collect::Sources>) -> Result<SocketAddr> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics listener to tcp/{addr}"))?;
    let local = listener.local_addr()?;
    tokio::spawn(serve(listener, sources));
    Ok(local)
}

async fn serve(listener: TcpListener, sources: Arc<collect::Sources>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                log::warn!("metrics: accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let sources = sources.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let svc = service_fn(move |req| respond(req, sources.clone()));
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc);
            match tokio::time::timeout(CONNECTION_LIFETIME, conn).await {
                Ok(Err(e)) => log::debug!("metrics: connection: {e}"),
                Err(_) => log::debug!("metrics: connection open too long, closed"),
                Ok(Ok(())) => {}
            }
        });
    }
}

fn plain(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

async fn respond(
    req: Request<Incoming>,
    sources: Arc<collect::Sources>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() != "/metrics" {
        return Ok(plain(
            StatusCode::NOT_FOUND,
            "not found: the metrics are at /metrics\n",
        ));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "GET /metrics\n");
        r.headers_mut()
            .insert(ALLOW, hyper::header::HeaderValue::from_static("GET, HEAD"));
        return Ok(r);
    }
    // Map reads are system calls: off the runtime's worker threads.
    let page = tokio::task::spawn_blocking(move || {
        let samples = collect::gather(&sources)?;
        encode::encode(&samples).map_err(|e| anyhow::anyhow!("encoding: {e}"))
    })
    .await;
    Ok(match page {
        Ok(Ok(page)) => {
            let mut r = Response::new(Full::new(Bytes::from(page)));
            r.headers_mut().insert(
                CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(encode::CONTENT_TYPE),
            );
            r
        }
        Ok(Err(e)) => {
            log::warn!("metrics: {e:#}");
            plain(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e:#}\n"))
        }
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
    })
}
