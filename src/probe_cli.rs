//! `probe [URL]`: asks a health endpoint and exits 0 when it answers 2xx — the container
//! image's `HEALTHCHECK` (the image has no curl). Plain http only: probes go to the
//! gateway's own listener on loopback (the admin listener when the public one is TLS).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

/// The longest status line and headers read (the status line is all that matters).
const MAX_ANSWER_BYTES: usize = 8 * 1024;

#[derive(clap::Args, Debug)]
pub struct ProbeArgs {
    /// The health URL (http only).
    #[arg(default_value = "http://127.0.0.1:8080/healthz")]
    url: String,
    /// Give up after this many seconds (connecting and answering).
    #[arg(long, default_value_t = 3)]
    timeout: u64,
}

pub fn run(args: ProbeArgs) -> ExitCode {
    match probe(&args.url, Duration::from_secs(args.timeout.max(1))) {
        Ok(status) if (200..300).contains(&status) => {
            println!("{} {status}", args.url);
            ExitCode::SUCCESS
        }
        Ok(status) => {
            eprintln!("{} answered {status}", args.url);
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("{}: {error}", args.url);
            ExitCode::FAILURE
        }
    }
}

fn probe(url: &str, timeout: Duration) -> Result<u16, String> {
    let url = url::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    if url.scheme() != "http" {
        return Err("only http:// URLs can be probed (use the admin listener)".into());
    }
    let host = url.host_str().ok_or("the URL has no host")?;
    let port = url.port_or_known_default().unwrap_or(80);
    let address = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} has no address"))?;
    let mut stream = TcpStream::connect_timeout(&address, timeout).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    let path = match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_string(),
    };
    let authority = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    };
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: mcp-auth-gateway-probe\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    stream
        .take(MAX_ANSWER_BYTES as u64)
        .read_to_end(&mut answer)
        .map_err(|e| e.to_string())?;
    status_of(&answer).ok_or_else(|| "the answer is not HTTP".to_string())
}

/// The status code of an HTTP/1.x answer's first line.
fn status_of(answer: &[u8]) -> Option<u16> {
    let line_end = answer.iter().position(|&b| b == b'\n')?;
    let line = std::str::from_utf8(&answer[..line_end]).ok()?;
    let mut parts = line.trim_end_matches('\r').splitn(3, ' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok().filter(|c| (100..600).contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn status_lines() {
        assert_eq!(status_of(b"HTTP/1.1 200 OK\r\n\r\n"), Some(200));
        assert_eq!(
            status_of(b"HTTP/1.0 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(status_of(b"HTTP/1.1 204\r\n"), Some(204));
        for bad in [
            &b""[..],
            b"HTTP/1.1 200 OK",
            b"HTTP/2 200\r\n",
            b"SSH-2.0-OpenSSH\r\n",
            b"HTTP/1.1 20 OK\r\n",
            b"HTTP/1.1 2000 OK\r\n",
            b"HTTP/1.1 999 Odd\r\n",
            b"HTTP/1.1 +20 OK\r\n",
        ] {
            assert_eq!(status_of(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn only_http_urls() {
        assert!(probe("https://127.0.0.1:1/healthz", Duration::from_secs(1))
            .unwrap_err()
            .contains("only http://"));
        assert!(probe("not a url", Duration::from_secs(1)).is_err());
    }

    proptest! {
        #[test]
        fn any_answer_is_a_valid_code_or_none(answer in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Some(code) = status_of(&answer) {
                prop_assert!((100..600).contains(&code));
                prop_assert!(answer.starts_with(b"HTTP/1."));
            }
        }
    }
}
