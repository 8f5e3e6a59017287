//! The plumbing every fake shares: a self-signed certificate (rcgen), an HTTPS server on loopback
//! (tokio-rustls behind axum's `Listener`), one fallback handler that routes by hand so unknown paths are
//! real 404s, write counters, and faults: failing writes, an HTML login page instead of JSON, 404 after a
//! "firmware update", cut-off bodies. Also the few test steps every vendor's tests share: starting a fake
//! ([`start`]), faults and counting before routing ([`admit`]), checking HTTP Basic credentials, reading a
//! fake's entries ([`targets`]) and staging a block ([`entry`], [`add`]).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use portcullis_agent::backends::{Backend, BlockEntry};
use queue_message::Target;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// A certificate for `localhost` and `127.0.0.1`, as appliances ship: self-signed.
#[derive(Debug, Clone)]
pub struct TestCert {
    /// PEM of the certificate (usable as `ca_file`).
    pub pem: String,
    /// DER of the certificate.
    pub der: Vec<u8>,
    /// DER of the private key (PKCS#8).
    key_der: Vec<u8>,
}

impl TestCert {
    /// A fresh self-signed certificate.
    pub fn new() -> Self {
        let key = rcgen::KeyPair::generate().expect("key pair");
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("certificate params");
        params.is_ca = rcgen::IsCa::ExplicitNoCa;
        let cert = params.self_signed(&key).expect("self-signed certificate");
        Self {
            pem: cert.pem(),
            der: cert.der().to_vec(),
            key_der: key.serialize_der(),
        }
    }

    /// `sha256:AB:CD:…` of the certificate, as `openssl x509 -fingerprint -sha256` prints it.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(&self.der);
        let hex: Vec<String> = digest.iter().map(|b| format!("{b:02X}")).collect();
        format!("sha256:{}", hex.join(":"))
    }

    /// Writes the PEM into `dir` and returns the path.
    pub fn write_pem(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("appliance.pem");
        std::fs::write(&path, &self.pem).expect("write PEM");
        path
    }
}

struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else {
                continue;
            };
            // A client that rejects our certificate (a pin mismatch test) just fails its handshake.
            if let Ok(tls) = self.acceptor.accept(stream).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// Faults a test switches on.
#[derive(Debug, Default)]
pub struct Faults {
    /// The next N writes answer 503.
    pub fail_writes: AtomicUsize,
    /// Every API call answers 200 with an HTML login page.
    pub html: AtomicBool,
    /// Every API call answers 404, as after a firmware update that moved the API.
    pub not_found: AtomicBool,
    /// Reads answer a JSON body cut off in the middle.
    pub truncated: AtomicBool,
}

impl Faults {
    /// Makes the next `n` writes answer 503; the fakes' `Device::fail_writes`.
    pub fn fail_next_writes(&self, n: usize) -> bool {
        self.fail_writes.store(n, Ordering::SeqCst);
        true
    }
}

/// What a fake counts.
#[derive(Debug, Default)]
pub struct Counters {
    /// Calls that change the device (PUT, POST, PATCH, DELETE on its objects; not logins).
    pub writes: AtomicUsize,
    /// Request body bytes of those calls.
    pub write_bytes: AtomicUsize,
    /// Everything else (reads, logins).
    pub other: AtomicUsize,
}

impl Counters {
    /// Counts one write of `bytes` body bytes.
    pub fn write(&self, bytes: usize) {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.write_bytes.fetch_add(bytes, Ordering::SeqCst);
    }

    /// Writes so far.
    pub fn writes(&self) -> usize {
        self.writes.load(Ordering::SeqCst)
    }

    /// Write body bytes so far.
    pub fn write_bytes(&self) -> usize {
        self.write_bytes.load(Ordering::SeqCst)
    }
}

/// One request as the fakes see it.
#[derive(Debug)]
pub struct Request {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Request {
    /// The path split at `/`, without empty segments.
    pub fn segments(&self) -> Vec<&str> {
        self.path.split('/').filter(|s| !s.is_empty()).collect()
    }

    /// A query parameter.
    pub fn query_param(&self, name: &str) -> Option<String> {
        url::form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    /// The body as JSON (`Null` when empty or not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// True for methods that change something.
    pub fn is_write(&self) -> bool {
        self.method != Method::GET
    }

    /// True when the request carries HTTP Basic credentials `user:password`.
    pub fn has_basic_auth(&self, user: &str, password: &str) -> bool {
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        self.headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            == Some(expected.as_str())
    }
}

/// A JSON response.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response {
    (
        status,
        [("content-type", "application/json")],
        value.to_string(),
    )
        .into_response()
}

/// The faults every fake honours, checked before its own routing. `write` says whether the request
/// changes the device.
pub fn injected(faults: &Faults, write: bool) -> Option<Response> {
    if faults.not_found.load(Ordering::SeqCst) {
        return Some((StatusCode::NOT_FOUND, "Not Found").into_response());
    }
    if faults.html.load(Ordering::SeqCst) {
        // What a console behind a captive login or a moved API answers (Teifun2/cs-unifi-bouncer#65, #81).
        return Some(
            (
                StatusCode::OK,
                [("content-type", "text/html; charset=utf-8")],
                "<!DOCTYPE html><html><head><title>Login</title></head><body><form action=\"/login\">\
                 </form></body></html>",
            )
                .into_response(),
        );
    }
    if write
        && faults
            .fail_writes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    {
        return Some((StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable").into_response());
    }
    None
}

/// What a fake does with every API request before routing it: answer with an injected fault (see
/// [`injected`]), or count it and let it through (`None`). `write` says whether it changes the device.
pub fn admit(faults: &Faults, counters: &Counters, req: &Request, write: bool) -> Option<Response> {
    if let Some(fault) = injected(faults, write) {
        return Some(fault);
    }
    if write {
        counters.write(req.body.len());
    } else {
        counters.other.fetch_add(1, Ordering::SeqCst);
    }
    None
}

/// Cuts a JSON answer in half when the `truncated` fault is on.
pub fn maybe_truncate(faults: &Faults, response: Response) -> Response {
    if !faults.truncated.load(Ordering::SeqCst) {
        return response;
    }
    let text = r#"{"meta":{"rc":"ok"},"data":[{"_id":"65a1b2c3d4e5f60718293a4b","name":"portc"#;
    (StatusCode::OK, [("content-type", "application/json")], text).into_response()
}

/// A running fake; stops when dropped.
#[derive(Debug)]
pub struct Running {
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    /// The certificate it serves.
    pub cert: TestCert,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `handler` over HTTPS on a free loopback port.
pub async fn serve<F, Fut>(handler: F) -> Running
where
    F: Fn(Request) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response> + Send + 'static,
{
    let cert = TestCert::new();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der.clone().into()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_der.clone().into()),
    )
    .expect("server certificate");
    let tcp = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = tcp.local_addr().expect("local address");
    let listener = TlsListener {
        tcp,
        acceptor: TlsAcceptor::from(Arc::new(config)),
    };
    let app = axum::Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let handler = handler.clone();
            async move {
                handler(Request {
                    method,
                    path: uri.path().to_owned(),
                    query: uri.query().unwrap_or("").to_owned(),
                    headers,
                    body,
                })
                .await
            }
        },
    );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Running {
        url: format!("https://127.0.0.1:{}", addr.port()),
        cert,
        task,
    }
}

/// Serves a fake over HTTPS: `handle` answers each request from the fake's own state, for as long as the
/// returned [`Running`] lives.
pub async fn start<T>(fake: &Arc<T>, handle: fn(&T, &Request) -> Response) -> Running
where
    T: Send + Sync + 'static,
{
    let fake = Arc::clone(fake);
    serve(move |req| {
        let fake = Arc::clone(&fake);
        async move { handle(&fake, &req) }
    })
    .await
}

/// The targets a fake holds as text (every one must parse).
pub fn targets<T: AsRef<str>>(texts: impl IntoIterator<Item = T>) -> BTreeSet<Target> {
    texts
        .into_iter()
        .map(|t| Target::parse(t.as_ref()).unwrap())
        .collect()
}

/// A block of `text` until `expires_at`.
pub fn entry(text: &str, expires_at: DateTime<Utc>) -> BlockEntry {
    BlockEntry {
        target: Target::parse(text).unwrap(),
        expires_at,
    }
}

/// Stages a one-hour block of `text`.
pub fn add(b: &mut dyn Backend, text: &str) {
    b.stage_add(entry(text, Utc::now() + Duration::hours(1)));
}
