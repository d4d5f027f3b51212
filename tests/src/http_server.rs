//! A scripted HTTP(S) server on loopback for the outbound tests: it records every request,
//! answers with what a closure says (status, headers, body, delays before the headers and
//! before the body), and tracks how many requests it holds at once.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Recorded {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An answer.
#[derive(Debug, Clone)]
pub struct Canned {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Wait before sending the headers.
    pub delay: Duration,
    /// Wait between the headers and the body (the body is then sent without a length).
    pub body_delay: Duration,
}

impl Canned {
    /// `status` with an empty body.
    pub fn status(status: u16) -> Self {
        Canned {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            delay: Duration::ZERO,
            body_delay: Duration::ZERO,
        }
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }

    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }

    pub fn body_delay(mut self, d: Duration) -> Self {
        self.body_delay = d;
        self
    }
}

type Respond = dyn Fn(&Recorded, usize) -> Canned + Send + Sync;

struct Shared {
    respond: Box<Respond>,
    requests: Mutex<Vec<Recorded>>,
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
}

/// A running server; stops when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    tls: bool,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    /// Plain HTTP; `respond` gets each request and its index (0 for the first).
    pub async fn start(
        respond: impl Fn(&Recorded, usize) -> Canned + Send + Sync + 'static,
    ) -> Self {
        Self::serve(respond, None).await
    }

    /// HTTPS with `tests/fixtures/tls/server.pem` (signed by `ca.pem`, for localhost).
    pub async fn start_tls(
        respond: impl Fn(&Recorded, usize) -> Canned + Send + Sync + 'static,
    ) -> Self {
        let dir = crate::repo_root().join("tests/fixtures/tls");
        Self::serve(respond, Some(tls_acceptor(&dir))).await
    }

    async fn serve(
        respond: impl Fn(&Recorded, usize) -> Canned + Send + Sync + 'static,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            respond: Box::new(respond),
            requests: Mutex::new(Vec::new()),
            in_flight: AtomicU64::new(0),
            peak_in_flight: AtomicU64::new(0),
        });
        let s = shared.clone();
        let is_tls = tls.is_some();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let s = s.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| answer(s.clone(), req));
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = http1::Builder::new()
                                    .serve_connection(TokioIo::new(stream), svc)
                                    .await;
                            }
                        }
                        None => {
                            let _ = http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), svc)
                                .await;
                        }
                    }
                });
            }
        });
        TestServer {
            addr,
            tls: is_tls,
            shared,
            task,
        }
    }

    /// `http://127.0.0.1:PORT`, or `https://localhost:PORT` for TLS (the certificate's name).
    pub fn origin(&self) -> String {
        if self.tls {
            format!("https://localhost:{}", self.addr.port())
        } else {
            format!("http://127.0.0.1:{}", self.addr.port())
        }
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Most requests held at once (between receiving one and finishing its answer's headers).
    pub fn peak_in_flight(&self) -> u64 {
        self.shared.peak_in_flight.load(Ordering::SeqCst)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    s: Arc<Shared>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<BoxBody<Bytes, Infallible>>, Infallible> {
    let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    s.peak_in_flight.fetch_max(now, Ordering::SeqCst);
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let rec = Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
        at: Instant::now(),
    };
    let index = {
        let mut r = s.requests.lock().unwrap();
        r.push(rec.clone());
        r.len() - 1
    };
    let canned = (s.respond)(&rec, index);
    // A zero sleep would still wait for the timer's next tick (1 ms).
    if !canned.delay.is_zero() {
        tokio::time::sleep(canned.delay).await;
    }
    s.in_flight.fetch_sub(1, Ordering::SeqCst);
    let body: BoxBody<Bytes, Infallible> = if canned.body_delay.is_zero() {
        Full::new(Bytes::from(canned.body.clone())).boxed()
    } else {
        let (wait, bytes) = (canned.body_delay, Bytes::from(canned.body.clone()));
        let stream = futures::stream::once(async move {
            tokio::time::sleep(wait).await;
            Ok::<_, Infallible>(Frame::data(bytes))
        });
        StreamBody::new(stream).boxed()
    };
    let mut resp = hyper::Response::new(body);
    *resp.status_mut() = hyper::StatusCode::from_u16(canned.status).unwrap();
    for (k, v) in &canned.headers {
        resp.headers_mut().append(
            hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            hyper::header::HeaderValue::from_str(v).unwrap(),
        );
    }
    Ok(resp)
}

fn tls_acceptor(dir: &Path) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}
