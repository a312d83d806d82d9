//! Client ID Metadata Documents fetched over real sockets: a small HTTPS server on loopback
//! (hyper + tokio-rustls, a private CA made with the openssl CLI) serves good and bad
//! documents, and `CimdFetcher` must take exactly the good ones — with the test-only
//! `allow_private_addresses` override, since the server is on loopback — and must refuse the
//! very same URL without it.

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use mcp_auth_gateway::authorization_server::cimd::{CimdError, CimdFetcher, CimdSettings};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// How long the slow path sleeps before answering; far above the test timeout.
const SLOW: Duration = Duration::from_secs(5);
const MAX_BYTES: usize = 4096;

/// A private CA (`ca.pem`) and a leaf for localhost / 127.0.0.1 signed by it
/// (`cert.pem`, `key.pem`), made with the openssl CLI (as in tests/tls.rs).
fn make_certificates(dir: &Path) -> bool {
    if common::external::require("openssl").is_none() {
        return false;
    }
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"],
        &ec[..],
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=cimd-test-ca",
        ],
    ]
    .concat());
    run(&[
        &["req", "-new"],
        &ec[..],
        &[
            "-keyout",
            "key.pem",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=localhost",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("leaf.ext"),
        "basicConstraints=critical,CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "cert.pem",
        "-days",
        "2",
        "-extfile",
        "leaf.ext",
    ]);
    true
}

fn tempdir(name: &str) -> common::TempDir {
    common::TempDir::new(&format!("cimd-{name}"))
}

/// A client configuration trusting only the test CA.
fn client_tls(dir: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(dir.join("ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    // As a shared outbound configuration might: the fetcher must still speak HTTP/1.1.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

fn settings(allow_private_addresses: bool) -> CimdSettings {
    CimdSettings {
        enabled: true,
        allowed_domains: Vec::new(),
        min_cache: Duration::from_secs(60),
        max_cache: Duration::from_secs(3600),
        timeout: Duration::from_millis(1500),
        max_bytes: MAX_BYTES,
        allow_private_addresses,
    }
}

/// A response body: sent with a `Content-Length` when `sized`, chunked otherwise.
struct TestBody {
    chunks: Vec<Bytes>,
    sized: bool,
}

impl TestBody {
    fn sized(body: String) -> TestBody {
        TestBody {
            chunks: vec![Bytes::from(body)],
            sized: true,
        }
    }
}

impl http_body::Body for TestBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.chunks.is_empty() {
            Poll::Ready(None)
        } else {
            let chunk = self.chunks.remove(0);
            Poll::Ready(Some(Ok(Frame::data(chunk))))
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        if self.sized {
            let length = self.chunks.iter().map(|c| c.len() as u64).sum();
            http_body::SizeHint::with_exact(length)
        } else {
            http_body::SizeHint::default()
        }
    }
}

/// The HTTPS document server; counts requests per path.
struct DocServer {
    addr: SocketAddr,
    hits: Arc<Mutex<HashMap<String, usize>>>,
}

impl DocServer {
    async fn start(dir: &Path) -> DocServer {
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(dir.join("cert.pem"))
                .unwrap()
                .map(Result::unwrap)
                .collect();
        let key = PrivateKeyDer::from_pem_file(dir.join("key.pem")).unwrap();
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let counter = hits.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |request: Request<Incoming>| {
                        let counter = counter.clone();
                        async move {
                            let path = request.uri().path().to_string();
                            *counter.lock().unwrap().entry(path.clone()).or_default() += 1;
                            Ok::<_, Infallible>(answer(&path, addr, &request).await)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        DocServer { addr, hits }
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

fn document(client_id: &str) -> String {
    serde_json::json!({
        "client_id": client_id,
        "client_name": "Test Client",
        "redirect_uris": ["http://127.0.0.1:33418/callback", "https://client.example/cb"],
        "grant_types": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_method": "none",
        "scope": "mcp:read",
    })
    .to_string()
}

fn json(status: StatusCode, content_type: &str, body: String) -> Response<TestBody> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("cache-control", "public, max-age=600")
        .body(TestBody::sized(body))
        .unwrap()
}

/// What the server answers for each path. Documents name the URL they were asked for
/// (`localhost` or `127.0.0.1`), as a real client's document names its own URL.
async fn answer(path: &str, addr: SocketAddr, request: &Request<Incoming>) -> Response<TestBody> {
    // The fetcher must send these; a request without them gets a 400.
    let headers = request.headers();
    let host = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let port = addr.port();
    if (host != format!("localhost:{port}") && host != format!("127.0.0.1:{port}"))
        || headers.get("accept").and_then(|v| v.to_str().ok()) != Some("application/json")
        || headers.get("user-agent").is_none()
    {
        return json(StatusCode::BAD_REQUEST, "text/plain", "bad headers".into());
    }
    let own_url = format!("https://{host}{path}");
    match path {
        "/good.json" | "/cached.json" => {
            json(StatusCode::OK, "application/json", document(&own_url))
        }
        "/vendor.json" => json(
            StatusCode::OK,
            "application/oauth-client-metadata+json; charset=utf-8",
            document(&own_url),
        ),
        "/redirect.json" => Response::builder()
            .status(StatusCode::FOUND)
            .header("location", "/good.json")
            .body(TestBody::sized(String::new()))
            .unwrap(),
        "/missing.json" => json(StatusCode::NOT_FOUND, "application/json", "{}".into()),
        "/big.json" => {
            // Valid JSON, only too long: the size cap, not the parser, must refuse it.
            let padded = format!("{}{}", document(&own_url), " ".repeat(MAX_BYTES * 4));
            json(StatusCode::OK, "application/json", padded)
        }
        "/big-chunked.json" => {
            // No Content-Length: the cap must hold while reading.
            let chunk = Bytes::from(" ".repeat(1024));
            let mut chunks = vec![Bytes::from(document(&own_url))];
            chunks.extend(std::iter::repeat_n(chunk, 16));
            Response::builder()
                .header("content-type", "application/json")
                .body(TestBody {
                    chunks,
                    sized: false,
                })
                .unwrap()
        }
        "/slow.json" => {
            tokio::time::sleep(SLOW).await;
            json(StatusCode::OK, "application/json", document(&own_url))
        }
        "/mismatch.json" => json(
            StatusCode::OK,
            "application/json",
            document("https://other.example/client.json"),
        ),
        "/html.json" => json(StatusCode::OK, "text/html", document(&own_url)),
        _ => json(StatusCode::NOT_FOUND, "text/plain", "no".into()),
    }
}

/// The server and a client configuration trusting it, or `None` when openssl is missing
/// (a recorded skip locally, a failure under CI).
async fn setup(name: &str) -> Option<(DocServer, Arc<rustls::ClientConfig>)> {
    let dir = tempdir(name);
    if !make_certificates(&dir) {
        return None;
    }
    Some((DocServer::start(&dir).await, client_tls(&dir)))
}

#[tokio::test]
async fn fetches_and_validates_a_document() {
    let Some((server, tls)) = setup("good").await else {
        return;
    };
    let fetcher = CimdFetcher::new();
    for path in ["/good.json", "/vendor.json"] {
        let url = server.url(path);
        let document = fetcher
            .get(&url, &settings(true), tls.clone())
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(document.client_id, url);
        assert_eq!(document.client_name, "Test Client");
        assert_eq!(
            document.redirect_uris,
            [
                "http://127.0.0.1:33418/callback",
                "https://client.example/cb"
            ]
        );
        assert_eq!(
            document.grant_types,
            ["authorization_code", "refresh_token"]
        );
        assert_eq!(document.token_endpoint_auth_method, "none");
        assert_eq!(document.scope.as_deref(), Some("mcp:read"));
    }
}

#[tokio::test]
async fn loopback_is_refused_without_the_dangerous_override() {
    let Some((server, tls)) = setup("private").await else {
        return;
    };
    let fetcher = CimdFetcher::new();
    // By name: refused after the lookup, before connecting.
    let error = fetcher
        .get(&server.url("/good.json"), &settings(false), tls.clone())
        .await
        .unwrap_err();
    assert!(matches!(error, CimdError::NonPublicAddress), "{error:?}");
    // As an IP literal: refused without a lookup.
    let literal = format!("https://127.0.0.1:{}/good.json", server.addr.port());
    let error = fetcher
        .get(&literal, &settings(false), tls.clone())
        .await
        .unwrap_err();
    assert!(matches!(error, CimdError::NonPublicAddress), "{error:?}");
    assert_eq!(server.hits("/good.json"), 0, "the server was contacted");

    // The same IP literal is fine with the override (and TLS checks the IP SAN).
    let document = fetcher.get(&literal, &settings(true), tls).await.unwrap();
    assert_eq!(document.client_id, literal);
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let Some((server, tls)) = setup("redirect").await else {
        return;
    };
    let error = CimdFetcher::new()
        .get(&server.url("/redirect.json"), &settings(true), tls)
        .await
        .unwrap_err();
    assert!(matches!(error, CimdError::Redirect(302)), "{error:?}");
    assert!(error.to_string().contains("302"));
    assert_eq!(server.hits("/good.json"), 0, "the redirect was followed");
}

#[tokio::test]
async fn other_statuses_are_refused() {
    let Some((server, tls)) = setup("status").await else {
        return;
    };
    let error = CimdFetcher::new()
        .get(&server.url("/missing.json"), &settings(true), tls)
        .await
        .unwrap_err();
    assert!(matches!(error, CimdError::Status(404)), "{error:?}");
}

#[tokio::test]
async fn oversized_documents_are_refused() {
    let Some((server, tls)) = setup("big").await else {
        return;
    };
    let fetcher = CimdFetcher::new();
    for path in ["/big.json", "/big-chunked.json"] {
        let error = fetcher
            .get(&server.url(path), &settings(true), tls.clone())
            .await
            .unwrap_err();
        assert!(
            matches!(error, CimdError::TooLarge(MAX_BYTES)),
            "{path}: {error:?}"
        );
    }
}

#[tokio::test]
async fn a_slow_server_times_out() {
    let Some((server, tls)) = setup("slow").await else {
        return;
    };
    let short = CimdSettings {
        timeout: Duration::from_millis(300),
        ..settings(true)
    };
    let error = CimdFetcher::new()
        .get(&server.url("/slow.json"), &short, tls)
        .await
        .unwrap_err();
    assert!(matches!(error, CimdError::Timeout(_)), "{error:?}");
}

#[tokio::test]
async fn a_document_for_another_client_id_is_refused() {
    let Some((server, tls)) = setup("mismatch").await else {
        return;
    };
    let error = CimdFetcher::new()
        .get(&server.url("/mismatch.json"), &settings(true), tls)
        .await
        .unwrap_err();
    assert!(matches!(error, CimdError::ClientIdMismatch), "{error:?}");
}

#[tokio::test]
async fn a_wrong_content_type_is_refused() {
    let Some((server, tls)) = setup("ctype").await else {
        return;
    };
    let error = CimdFetcher::new()
        .get(&server.url("/html.json"), &settings(true), tls)
        .await
        .unwrap_err();
    assert!(matches!(error, CimdError::ContentType), "{error:?}");
}

#[tokio::test]
async fn documents_are_cached_and_errors_are_not() {
    let Some((server, tls)) = setup("cache").await else {
        return;
    };
    let fetcher = CimdFetcher::new();
    let url = server.url("/cached.json");
    let first = fetcher
        .get(&url, &settings(true), tls.clone())
        .await
        .unwrap();
    let second = fetcher
        .get(&url, &settings(true), tls.clone())
        .await
        .unwrap();
    assert!(
        Arc::ptr_eq(&first, &second),
        "the second get was not served from the cache"
    );
    assert_eq!(server.hits("/cached.json"), 1);

    // A document fetched under the dangerous override is not served once it is off.
    assert!(fetcher
        .get(&url, &settings(false), tls.clone())
        .await
        .is_err());

    // Failures are fetched again every time.
    let failing = server.url("/mismatch.json");
    for _ in 0..2 {
        assert!(fetcher
            .get(&failing, &settings(true), tls.clone())
            .await
            .is_err());
    }
    assert_eq!(server.hits("/mismatch.json"), 2);
}

#[tokio::test]
async fn an_untrusted_certificate_is_refused() {
    let Some((server, _)) = setup("untrusted").await else {
        return;
    };
    // Trusting only an unrelated CA: the handshake must fail.
    let other = tempdir("untrusted-other");
    assert!(make_certificates(&other));
    let error = CimdFetcher::new()
        .get(
            &server.url("/good.json"),
            &settings(true),
            client_tls(&other),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, CimdError::Tls(_)), "{error:?}");
}

#[tokio::test]
async fn disabled_means_no_fetch() {
    let Some((server, tls)) = setup("disabled").await else {
        return;
    };
    let off = CimdSettings {
        enabled: false,
        ..settings(true)
    };
    let error = CimdFetcher::new()
        .get(&server.url("/good.json"), &off, tls)
        .await
        .unwrap_err();
    assert!(matches!(error, CimdError::Disabled), "{error:?}");
    assert_eq!(server.hits("/good.json"), 0);
}
