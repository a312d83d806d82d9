//! TLS on both sides: the gateway terminating HTTPS (HTTP/1.1 and HTTP/2 via ALPN), and a
//! gateway calling an HTTPS upstream signed by a private CA (`[outbound] ca_files`) with its
//! own upstream credential instead of the client's token.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use bytes::Bytes;
use common::gateway::{api_key_toml, standard_config};
use common::http::get;
use common::{TestGateway, Upstream, API_KEY};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// A private CA (`ca.pem`) and a leaf for localhost / 127.0.0.1 signed by it
/// (`cert.pem` with the chain, `key.pem`), made with the openssl CLI.
fn self_signed(dir: &Path) -> bool {
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
            "/CN=test-ca",
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

fn tls_config(upstream_url: &str) -> String {
    standard_config(upstream_url, "", "").replace(
        "[server.limits]",
        "[server.tls]\ncert_file = \"cert.pem\"\nkey_file = \"key.pem\"\n\n[server.limits]",
    )
}

async fn tls_stream(
    dir: &Path,
    addr: std::net::SocketAddr,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(dir.join("ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake")
}

#[tokio::test]
async fn https_listener_speaks_http1_and_http2() {
    let dir = tempdir("listener");
    if !self_signed(&dir) {
        return;
    }
    let upstream = Upstream::start().await;
    let gateway = TestGateway::start_in(&tls_config(&upstream.url("/mcp")), &dir).await;

    // HTTP/2 over TLS (ALPN h2).
    let stream = tls_stream(&dir, gateway.addr, b"h2").await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = http::Request::get(format!("https://127.0.0.1:{}/mcp", gateway.addr.port()))
        .header("authorization", format!("Bearer {API_KEY}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let _ = response.into_body().collect().await.unwrap();
    let seen = upstream.last();
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(seen.header("x-user-id"), Some("alice"));

    // HTTP/1.1 over TLS, unauthenticated: the challenge still comes back.
    let stream = tls_stream(&dir, gateway.addr, b"http/1.1").await;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = http::Request::get("/mcp")
        .header("host", format!("localhost:{}", gateway.addr.port()))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn https_upstream_with_private_ca_and_gateway_credential() {
    let dir = tempdir("upstream");
    if !self_signed(&dir) {
        return;
    }
    let upstream = Upstream::start().await;
    // Inner gateway: TLS, accepts only its own API key (subject "edge-gateway").
    let inner_config = tls_config(&upstream.url("/mcp")).replace(
        &api_key_toml("alice", &["mcp:tools"]),
        &api_key_toml("edge-gateway", &["mcp:tools"]),
    );
    let inner = TestGateway::start_in(&inner_config, &dir).await;

    // Outer gateway: plain HTTP for clients; presents its own credential to the inner one.
    std::env::set_var("TLS_TEST_UPSTREAM_AUTH", format!("Bearer {API_KEY}"));
    let outer_config = standard_config(
        &format!("https://localhost:{}/mcp", inner.addr.port()),
        "[routes.upstream_headers]\n\"Authorization\" = { env = \"TLS_TEST_UPSTREAM_AUTH\" }\n",
        "[outbound]\nca_files = [\"ca.pem\"]\n",
    );
    let outer = TestGateway::start_in(&outer_config, &dir).await;

    let answer = get(
        outer.addr,
        "/mcp",
        &[("authorization", &format!("Bearer {API_KEY}"))],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    // The inner gateway saw the outer gateway's credential, not the client's, and says so.
    assert_eq!(upstream.last().header("x-user-id"), Some("edge-gateway"));

    // Without the CA the outer gateway refuses the inner one's certificate: 502.
    let untrusting = TestGateway::start_in(
        &outer_config.replace("ca_files = [\"ca.pem\"]", "ca_files = []"),
        &dir,
    )
    .await;
    let answer = get(
        untrusting.addr,
        "/mcp",
        &[("authorization", &format!("Bearer {API_KEY}"))],
    )
    .await;
    assert_eq!(answer.status, 502);
}

/// An HTTPS upstream speaking HTTP/2 (ALPN), recording the trailers of each request.
async fn h2_upstream(
    dir: &Path,
) -> (
    std::net::SocketAddr,
    Arc<std::sync::Mutex<Vec<Option<http::HeaderMap>>>>,
) {
    use rustls::pki_types::PrivateKeyDer;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("cert.pem"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(dir.join("key.pem")).unwrap();
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let Ok(stream) = acceptor.accept(tcp).await else {
                continue;
            };
            let record = record.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: http::Request<hyper::body::Incoming>| {
                        let record = record.clone();
                        async move {
                            let collected = request.into_body().collect().await;
                            let trailers = collected.ok().and_then(|c| c.trailers().cloned());
                            record.lock().unwrap().push(trailers);
                            Ok::<_, std::convert::Infallible>(http::Response::new(
                                http_body_util::Full::new(Bytes::from_static(b"{}")),
                            ))
                        }
                    },
                );
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

/// A request body that yields the given frames, then ends.
struct Frames(std::collections::VecDeque<http_body::Frame<Bytes>>);

impl http_body::Body for Frames {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(Ok))
    }
}

#[tokio::test]
async fn request_trailers_do_not_reach_an_http2_upstream() {
    // HTTP/2 carries request trailers end to end; they come after the identity headers were
    // set, so a client could append `x-user-id` there. The gateway drops them.
    let dir = tempdir("trailers");
    if !self_signed(&dir) {
        return;
    }
    let (upstream_addr, seen) = h2_upstream(&dir).await;
    let config = standard_config(
        &format!("https://localhost:{}/mcp", upstream_addr.port()),
        "",
        "[outbound]\nca_files = [\"ca.pem\"]\n",
    );
    let gateway = TestGateway::start_in(&config, &dir).await;
    let tcp = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-user-id", "admin".parse().unwrap());
    let body = Frames(
        [
            http_body::Frame::data(Bytes::from_static(b"{}")),
            http_body::Frame::trailers(trailers),
        ]
        .into(),
    );
    let request = http::Request::post(format!("http://{}/mcp", gateway.addr))
        .header("authorization", format!("Bearer {API_KEY}"))
        .header("content-type", "application/json")
        .body(body)
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let recorded = seen.lock().unwrap().clone();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0], None, "request trailers reached the upstream");
}

fn tempdir(name: &str) -> common::TempDir {
    common::TempDir::new(&format!("tls-{name}"))
}
