//! A worker's idle upstream connections, kept for reuse per upstream authority.
//!
//! Each worker has its own pool (connections are registered with the worker's runtime and
//! never change threads), so its lock is never contended. Bounded: at most
//! [`MAX_IDLE_PER_AUTHORITY`] per upstream, none older than [`IDLE_TIMEOUT`]; expired ones
//! are closed whenever the pool is touched, and one the upstream has closed meanwhile is
//! found and dropped at checkout.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::uri::Authority;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Idle connections kept per upstream, per worker. Each costs a socket and ~100 bytes:
/// 64 covers a steady 64 concurrent requests per worker without reconnecting.
pub const MAX_IDLE_PER_AUTHORITY: usize = 64;
/// How long an idle connection is kept.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

#[derive(Clone, Default)]
pub struct Pool(Arc<Mutex<Idle>>);

#[derive(Default)]
struct Idle {
    /// Few entries (one per upstream in the configuration): a scan beats hashing.
    by_authority: Vec<(Authority, Vec<(TcpStream, Instant)>)>,
}

impl Pool {
    /// The most recently used live connection to `authority`, if any.
    pub fn checkout(&self, authority: &Authority) -> Option<TcpStream> {
        let mut idle = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        idle.expire(Instant::now(), Forget::Kept);
        let connections = idle.connections(authority)?;
        while let Some((stream, _)) = connections.pop() {
            if still_open(&stream) {
                return Some(stream);
            }
        }
        None
    }

    /// Keeps `stream`, which has just finished an exchange cleanly, for the next request.
    pub fn checkin(&self, authority: &Authority, stream: TcpStream) {
        let mut idle = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        idle.expire(now, Forget::Kept);
        let connections = match idle.by_authority.iter().position(|(a, _)| a == authority) {
            Some(index) => &mut idle.by_authority[index].1,
            None => {
                idle.by_authority.push((authority.clone(), Vec::new()));
                let last = idle.by_authority.len() - 1;
                &mut idle.by_authority[last].1
            }
        };
        if connections.len() == MAX_IDLE_PER_AUTHORITY {
            // The oldest goes: it is the likeliest to have been closed by the upstream.
            connections.remove(0);
        }
        connections.push((stream, now));
    }

    /// Closes the connections idle for longer than [`IDLE_TIMEOUT`] (also run every few
    /// seconds by the worker, so a quiet or removed upstream's sockets do not linger).
    pub fn expire_idle(&self) {
        let mut idle = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        idle.expire(Instant::now(), Forget::Emptied);
    }

    /// Idle connections held.
    #[cfg(test)]
    pub fn idle_count(&self) -> usize {
        let idle = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        idle.by_authority.iter().map(|(_, c)| c.len()).sum()
    }
}

/// What [`Idle::expire`] does with an upstream left without idle connections.
#[derive(Clone, Copy, PartialEq)]
enum Forget {
    /// Keeps its (empty) list: a request takes the only connection and gives it back,
    /// and forgetting the list in between cost an allocation and a copy of the authority
    /// on every request.
    Kept,
    /// Drops it (the periodic sweep: an upstream that is no longer used, or no longer
    /// configured, leaves nothing behind).
    Emptied,
}

impl Idle {
    /// Closes expired connections (the oldest are at the front).
    fn expire(&mut self, now: Instant, forget: Forget) {
        for (_, connections) in &mut self.by_authority {
            let expired = connections
                .iter()
                .take_while(|(_, since)| now.duration_since(*since) >= IDLE_TIMEOUT)
                .count();
            connections.drain(..expired);
        }
        if forget == Forget::Emptied {
            self.by_authority
                .retain(|(_, connections)| !connections.is_empty());
        }
    }

    fn connections(&mut self, authority: &Authority) -> Option<&mut Vec<(TcpStream, Instant)>> {
        self.by_authority
            .iter_mut()
            .find(|(a, _)| a == authority)
            .map(|(_, connections)| connections)
    }
}

/// Whether an idle connection can still carry a request: not closed by the upstream, and
/// nothing unasked-for waiting on it. Uses the readiness the runtime already knows (no
/// system call when nothing happened since the connection went idle).
fn still_open(stream: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(stream.try_read(&mut probe), Err(error) if error.kind() == std::io::ErrorKind::WouldBlock)
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use super::*;

    async fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let address = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(address), listener.accept());
        (client.unwrap(), accepted.unwrap().0)
    }

    #[tokio::test]
    async fn connections_are_reused_newest_first_per_authority_and_bounded() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = Pool::default();
        let a: Authority = "a:1".parse().unwrap();
        let b: Authority = "b:1".parse().unwrap();
        let mut servers = Vec::new();
        for _ in 0..MAX_IDLE_PER_AUTHORITY + 3 {
            let (client, server) = pair(&listener).await;
            servers.push(server);
            pool.checkin(&a, client);
        }
        assert_eq!(pool.idle_count(), MAX_IDLE_PER_AUTHORITY);
        assert!(pool.checkout(&b).is_none());
        let newest = pool.checkout(&a).unwrap();
        assert_eq!(
            newest.local_addr().unwrap(),
            servers.last().unwrap().peer_addr().unwrap()
        );
        assert_eq!(pool.idle_count(), MAX_IDLE_PER_AUTHORITY - 1);
    }

    #[tokio::test]
    async fn idle_connections_expire_for_every_upstream() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = Pool::default();
        let (a, b): (Authority, Authority) = ("a:1".parse().unwrap(), "b:1".parse().unwrap());
        let (first, _server_first) = pair(&listener).await;
        let (second, _server_second) = pair(&listener).await;
        tokio::time::pause();
        pool.checkin(&a, first);
        tokio::time::advance(IDLE_TIMEOUT / 2).await;
        pool.checkin(&b, second);
        tokio::time::advance(IDLE_TIMEOUT / 2).await;
        pool.expire_idle();
        assert_eq!(pool.idle_count(), 1, "a's connection expired, b's not yet");
        tokio::time::advance(IDLE_TIMEOUT / 2).await;
        pool.expire_idle();
        assert_eq!(pool.idle_count(), 0);
        assert!(
            pool.0.lock().unwrap().by_authority.is_empty(),
            "the sweep forgets upstreams with no connection left"
        );
    }

    #[tokio::test]
    async fn an_upstream_whose_connection_is_out_keeps_its_list_until_the_sweep() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = Pool::default();
        let a: Authority = "a:1".parse().unwrap();
        let (connection, _server) = pair(&listener).await;
        pool.checkin(&a, connection);
        let connection = pool.checkout(&a).expect("the idle connection");
        pool.checkin(&a, connection);
        assert_eq!(pool.idle_count(), 1);
        assert_eq!(pool.0.lock().unwrap().by_authority.len(), 1);
        let _out = pool.checkout(&a).expect("the idle connection");
        pool.expire_idle();
        assert!(pool.0.lock().unwrap().by_authority.is_empty());
    }

    #[tokio::test]
    async fn connections_the_upstream_closed_or_wrote_on_are_not_handed_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = Pool::default();
        let a: Authority = "a:1".parse().unwrap();
        let (closed, server) = pair(&listener).await;
        drop(server);
        let (chatty, mut server_chatty) = pair(&listener).await;
        server_chatty
            .write_all(b"HTTP/1.1 200 OK\r\n\r\n")
            .await
            .unwrap();
        let (live, _server_live) = pair(&listener).await;
        let live_address = live.local_addr().unwrap();
        pool.checkin(&a, live);
        pool.checkin(&a, closed);
        pool.checkin(&a, chatty);
        // Let the runtime see what happened on the sockets.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let handed = pool.checkout(&a).unwrap();
        assert_eq!(handed.local_addr().unwrap(), live_address);
        assert!(pool.checkout(&a).is_none());
    }
}
