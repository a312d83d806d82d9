//! Reading a TCP socket into a growable buffer, for both of the gateway's own HTTP/1.1
//! ends (the server's client connections and the client's upstream connections).
//!
//! Why not `AsyncRead`: both ends share their socket (an `Arc<TcpStream>` read by a body
//! while the connection writes), and tokio reads a shared `&TcpStream` only through
//! `try_read`. That call forgets what its `AsyncRead` twin knows: on Linux a read that
//! leaves room in the buffer has emptied the socket, so the next read can only say
//! "would block". Without that knowledge every request costs two such failed system calls
//! (one on each side). [`poll_fill`] keeps it.
//!
//! An idle connection gives its empty read buffer back (it holds no read memory while it
//! waits), to its worker's few spares rather than to the allocator, and so does a
//! connection done with its buffer (an upstream answer read to its end, a client that
//! closed): the next connection with something to read takes one, instead of an 8 KiB
//! allocation. At most [`MAX_SPARE_BUFFERS`] per worker are kept.

use std::cell::RefCell;
use std::io;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Spare read buffers kept per worker thread. Bounded by count, by the room a spare offers,
/// and (since a buffer's room says nothing of the allocation behind it) by
/// [`shed_large`]: a buffer that grew for a large head never becomes a spare.
/// Every caller reads with [`READ_CHUNK`], so a spare suits any of them.
pub const MAX_SPARE_BUFFERS: usize = 32;

/// How much both HTTP/1.1 ends (client connections, upstream connections) read at a time:
/// a read buffer is allocated (or a spare taken) with this room when there is something to
/// read.
pub const READ_CHUNK: usize = 8 * 1024;

thread_local! {
    static SPARE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// Keeps an emptied read buffer for the next read on this thread, if it is worth keeping
/// and there is room; else it is freed. A buffer whose room was used up by what was cut
/// off its front gets its whole allocation back first, when nothing else still uses it.
fn give_back(mut buf: BytesMut, chunk: usize) {
    // Its room says nothing of an allocation whose front was used up: a buffer that is its
    // own and could offer more than any spare may is freed (read-ahead of pipelined
    // requests or a trailer section can grow one to 24 KiB or more).
    if buf.try_reclaim(2 * chunk + 1) {
        return;
    }
    let reclaimed = buf.capacity() >= chunk / 4 || buf.try_reclaim(chunk);
    if !reclaimed || buf.capacity() > 2 * chunk {
        return;
    }
    // `try_with`: a connection dropped while the thread exits frees its buffer.
    let _ = SPARE.try_with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < MAX_SPARE_BUFFERS {
            spare.push(buf);
        }
    });
}

/// After a message of `length` bytes was taken off the front of `buf`: if it was longer
/// than `chunk`, the buffer grew for it, and what follows the message moves to a buffer of
/// its own, so that the large allocation is freed with the message instead of being kept
/// by the connection or among the spares.
pub fn shed_large(buf: &mut BytesMut, length: usize, chunk: usize) {
    if length > chunk {
        *buf = BytesMut::from(&buf[..]);
    }
}

/// Hands an emptied read buffer to the next reader on this thread (a connection that is
/// done with it: an upstream answer read to its end, a closed client connection). A buffer
/// that still holds bytes is freed with them.
pub fn release(buf: BytesMut) {
    if buf.is_empty() {
        give_back(buf, READ_CHUNK);
    }
}

/// A spare read buffer of this thread, if there is one.
fn take_spare() -> Option<BytesMut> {
    SPARE
        .try_with(|spare| spare.borrow_mut().pop())
        .ok()
        .flatten()
}

/// Reads what the socket holds into `buf`, growing it by `chunk` when less than a quarter of
/// that is free. `Ready(Ok(0))` is the end of the stream.
///
/// While nothing is there, an empty buffer is given back: an idle connection holds no read
/// memory.
pub fn poll_fill(
    stream: &TcpStream,
    buf: &mut BytesMut,
    chunk: usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    loop {
        if stream.poll_read_ready(cx).is_pending() {
            if buf.is_empty() && buf.capacity() > 0 {
                give_back(std::mem::take(buf), chunk);
            }
            return Poll::Pending;
        }
        // An empty buffer short of room (none yet, or its front used up by what was cut
        // off it) is swapped for a spare rather than grown.
        if buf.is_empty() && buf.capacity() < chunk / 4 && !buf.try_reclaim(chunk) {
            if let Some(spare) = take_spare() {
                *buf = spare;
            }
        }
        if buf.capacity() - buf.len() < chunk / 4 {
            buf.reserve(chunk);
        }
        let room = buf.capacity() - buf.len();
        let mut read = None;
        // The inner read runs inside an outer `try_io` so that a short read can report
        // "would block" to it: tokio then clears the readiness it saw (and only that one,
        // so data arriving meanwhile is not missed), and the next poll waits for epoll
        // instead of asking the kernel again.
        let outcome = stream.try_io(Interest::READABLE, || {
            let n = stream.try_read_buf(buf)?;
            read = Some(n);
            if n > 0 && n < room {
                Err(io::ErrorKind::WouldBlock.into())
            } else {
                Ok(n)
            }
        });
        match (read, outcome) {
            (Some(n), _) => return Poll::Ready(Ok(n)),
            (None, Err(error)) if error.kind() == io::ErrorKind::WouldBlock => continue,
            (None, outcome) => return Poll::Ready(outcome),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use tokio::io::AsyncWriteExt;

    /// A client socket and the server's end of it.
    async fn connected() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    #[tokio::test]
    async fn reads_what_arrives_and_reports_the_end() {
        let (mut client, server) = connected().await;
        let mut buf = BytesMut::new();

        client.write_all(b"first").await.unwrap();
        let n = poll_fn(|cx| poll_fill(&server, &mut buf, 1024, cx))
            .await
            .unwrap();
        assert_eq!((n, &buf[..]), (5, &b"first"[..]));

        // The short read cleared the readiness; the next bytes still wake the reader.
        client.write_all(b" second").await.unwrap();
        let n = poll_fn(|cx| poll_fill(&server, &mut buf, 1024, cx))
            .await
            .unwrap();
        assert_eq!((n, &buf[..]), (7, &b"first second"[..]));

        drop(client);
        let n = poll_fn(|cx| poll_fill(&server, &mut buf, 1024, cx))
            .await
            .unwrap();
        assert_eq!(n, 0);
    }

    #[tokio::test]
    async fn an_idle_connection_gives_its_buffer_to_the_next_reader() {
        let (mut first_client, first) = connected().await;
        let (mut second_client, second) = connected().await;
        let mut first_buf = BytesMut::new();
        first_client.write_all(b"request").await.unwrap();
        poll_fn(|cx| poll_fill(&first, &mut first_buf, 1024, cx))
            .await
            .unwrap();
        let head = first_buf.split().freeze();
        let memory = head.as_ptr();
        // Nothing more to read: the empty buffer goes back (the head still uses its start).
        let waiting = poll_fn(|cx| Poll::Ready(poll_fill(&first, &mut first_buf, 1024, cx)));
        assert!(waiting.await.is_pending());
        assert_eq!(
            first_buf.capacity(),
            0,
            "an idle connection holds no read memory"
        );

        second_client.write_all(b"next").await.unwrap();
        let mut second_buf = BytesMut::new();
        poll_fn(|cx| poll_fill(&second, &mut second_buf, 1024, cx))
            .await
            .unwrap();
        assert_eq!(&second_buf[..], b"next");
        assert_eq!(
            second_buf.as_ptr(),
            memory.wrapping_add(head.len()),
            "read into the spare, after the bytes still in use"
        );
        assert_eq!(&head[..], b"request");
    }

    #[test]
    fn what_follows_a_large_message_leaves_its_buffer() {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        buf.extend_from_slice(&[b'h'; 40 * 1024]);
        buf.extend_from_slice(b"next");
        let head = buf.split_to(40 * 1024).freeze();
        shed_large(&mut buf, head.len(), 8 * 1024);
        assert_eq!(&buf[..], b"next");
        assert!(
            buf.capacity() < 1024,
            "a buffer of its own, sized for what is left"
        );
        let mut small = BytesMut::with_capacity(8 * 1024);
        small.extend_from_slice(b"headnext");
        let memory = small.as_ptr();
        let _head = small.split_to(4);
        shed_large(&mut small, 4, 8 * 1024);
        assert_eq!(
            small.as_ptr(),
            memory.wrapping_add(4),
            "a small head keeps its buffer"
        );
    }

    #[test]
    fn spares_are_bounded_in_number_and_size() {
        std::thread::spawn(|| {
            give_back(BytesMut::with_capacity(64 * 1024), 1024);
            give_back(BytesMut::with_capacity(100), 1024);
            assert!(take_spare().is_none(), "too large and too small are freed");
            for _ in 0..MAX_SPARE_BUFFERS + 5 {
                give_back(BytesMut::with_capacity(1024), 1024);
            }
            let mut kept = 0;
            while take_spare().is_some() {
                kept += 1;
            }
            assert_eq!(kept, MAX_SPARE_BUFFERS);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_released_buffer_is_kept_whole_once_nothing_else_uses_it() {
        use bytes::Buf;
        std::thread::spawn(|| {
            // Its front consumed, nothing else pointing into it: the whole room comes back.
            let mut used_up = BytesMut::with_capacity(READ_CHUNK);
            used_up.extend_from_slice(&[1; READ_CHUNK - 100]);
            used_up.advance(READ_CHUNK - 100);
            release(used_up);
            let spare = take_spare().expect("kept");
            assert!(spare.capacity() >= READ_CHUNK, "reclaimed from its start");

            // Still shared with what was cut off it, and short of room: freed.
            let mut shared = BytesMut::with_capacity(READ_CHUNK);
            shared.extend_from_slice(&[2; READ_CHUNK - 100]);
            let body = shared.split().freeze();
            release(shared);
            assert!(take_spare().is_none());
            assert_eq!(body.len(), READ_CHUNK - 100);

            // Its front used up, its allocation larger than any spare may be: freed.
            let mut grown = BytesMut::with_capacity(3 * READ_CHUNK);
            grown.extend_from_slice(&[3; 3 * READ_CHUNK - 100]);
            grown.advance(3 * READ_CHUNK - 100);
            assert!(grown.capacity() < READ_CHUNK);
            release(grown);
            assert!(take_spare().is_none());

            // Holding bytes (a pipelined request, an unread answer): freed with them.
            let mut holding = BytesMut::with_capacity(READ_CHUNK);
            holding.extend_from_slice(b"GET / HTTP/1.1");
            release(holding);
            assert!(take_spare().is_none());
        })
        .join()
        .unwrap();
    }

    #[tokio::test]
    async fn a_full_buffer_is_read_again_without_waiting() {
        let (mut client, server) = connected().await;
        client.write_all(&[7u8; 64 * 1024]).await.unwrap();
        let mut buf = BytesMut::new();
        // A readiness wrongly cleared after a full read would leave this waiting forever.
        let read_all = async {
            while buf.len() < 64 * 1024 {
                poll_fn(|cx| poll_fill(&server, &mut buf, 1024, cx))
                    .await
                    .unwrap();
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(30), read_all)
            .await
            .expect("every byte read");
        assert!(buf.iter().all(|&b| b == 7));
    }
}
