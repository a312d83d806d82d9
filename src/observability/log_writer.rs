//! The log writer thread and the queue that feeds it.
//!
//! Every log line leaves through one thread that writes standard output, so a slow or
//! blocked stdout (journald or Docker's blocking log driver under pressure) never stalls a
//! worker. The queue is bounded in bytes and lossy: what does not fit is dropped and
//! counted, line by line, and the loss is reported on stderr.
//!
//! Workers hand their audit lines over in batches: when their runtime is about to park
//! (nothing left to run), when a batch is full, and at the worker's timer heartbeat. Under
//! load one hand-over carries many lines; with one request at a time the hand-over comes
//! after the response was written, not before it. Handing each line over as it was made
//! cost a message, an allocation and often a wake of the writer per request
//! (BENCHMARKS.md). Other threads, and lines logged through tracing, are handed over one
//! by one as they come. A thread's lines stay in order; lines of different workers may
//! reach stdout out of order by up to the heartbeat (each carries its timestamp).
//!
//! Written here rather than with tracing-appender's non-blocking writer: its queue counts
//! and bounds messages, not lines and bytes, which batches need.

use std::cell::RefCell;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

/// The most buffer room the queue holds, lines written or not yet: the bound on what a
/// stuck log driver costs in memory, and room for some 6,000 audit lines (a fraction of a
/// second at full load) while the driver catches up. The room of the queued buffers is
/// counted, not only the lines in them.
const QUEUE_BYTES: usize = 2 << 20;

/// A worker hands its batch over once it holds this many bytes.
const BATCH_BYTES: usize = 4096;

/// Gathered lines shorter than this are handed over as a copy (see `Gathered::hand_over`).
const COPIED_HAND_OVER: usize = 1024;

/// Emptied batch buffers the writer keeps for the workers to gather into again; larger
/// ones (grown by very long lines) are freed.
const SPARE_BUFFERS: usize = 32;
const MAX_SPARE_BUFFER: usize = 4 * BATCH_BYTES;

/// How long the writer waits after writing before it looks for more lines. Under load
/// lines keep coming: they gather meanwhile instead of the writer being woken for each
/// hand-over (a wake is a system call on the worker's side, and waking for every
/// hand-over cost more than the whole write). After a quiet moment the writer waits to be
/// woken by the next line.
const LINGER: Duration = Duration::from_millis(5);

/// How long shutdown waits for the queued lines to be written (stdout may be stuck).
const SHUTDOWN_WAIT: Duration = Duration::from_secs(1);

/// The most bytes one `write` of [`PipeWrites`] carries: POSIX `PIPE_BUF`, up to which a
/// write to a pipe is never interleaved with another process's (stderr sent to the same
/// pipe, `2>&1`, or a journal). A line longer than this goes out alone.
const ATOMIC_WRITE: usize = 4096;

static QUEUE: OnceLock<&'static Queue> = OnceLock::new();

/// Keeps the log writer thread's queue open; dropping it writes out what is still queued,
/// waiting at most [`SHUTDOWN_WAIT`] (stdout may be stuck).
pub struct LogGuard {
    queue: Option<&'static Queue>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        if let Some(queue) = self.queue {
            queue.close_and_wait(SHUTDOWN_WAIT);
        }
    }
}

/// Starts the writer thread on standard output, once per process (a later call returns a
/// guard that does nothing). `None` when the thread could not be started: the caller then
/// writes to stdout directly.
pub fn start() -> Option<LogGuard> {
    static STARTING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = STARTING.lock().unwrap_or_else(PoisonError::into_inner);
    if QUEUE.get().is_some() {
        return Some(LogGuard { queue: None });
    }
    // One queue for the life of the process, shared with its writer thread.
    let queue: &'static Queue = Box::leak(Box::default());
    let out = stdout_unbuffered();
    let spawned = std::thread::Builder::new()
        .name("gateway-log".into())
        .spawn(move || queue.write_out(out));
    if let Err(error) = spawned {
        eprintln!("mcp-auth-gateway: cannot start the log writer thread: {error}");
        return None;
    }
    let _ = QUEUE.set(queue);
    let _ = std::thread::Builder::new()
        .name("gateway-log-drops".into())
        .spawn(report_dropped_lines);
    Some(LogGuard { queue: Some(queue) })
}

/// How many log lines were dropped since start.
pub fn dropped_lines() -> u64 {
    QUEUE
        .get()
        .map_or(0, |queue| queue.dropped_lines.load(Ordering::Relaxed))
}

/// The writer tracing-subscriber formats its lines into: each line is handed over as it
/// comes, after the lines this thread has gathered (so a thread's lines stay in order).
#[derive(Clone, Copy)]
pub struct QueueWriter;

impl Write for QueueWriter {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        if let Some(queue) = QUEUE.get() {
            hand_over_lines();
            queue.push_record(line);
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for QueueWriter {
    type Writer = QueueWriter;

    fn make_writer(&'a self) -> QueueWriter {
        *self
    }
}

/// Lines this thread gathered and has not handed over yet.
struct Gathered {
    /// Set on worker threads, which hand their lines over at park and at their heartbeat.
    batching: bool,
    text: Vec<u8>,
    lines: u64,
}

impl Drop for Gathered {
    fn drop(&mut self) {
        if let Some(queue) = QUEUE.get() {
            self.hand_over(queue);
        }
    }
}

impl Gathered {
    /// Adds a line; hands the batch over once it is full.
    fn gather(&mut self, queue: &Queue, line: &[u8]) {
        if self.text.capacity() == 0 {
            // Room for a full batch and the line that fills it, in one allocation.
            self.text.reserve(2 * BATCH_BYTES);
        }
        self.text.extend_from_slice(line);
        self.lines += 1;
        if self.text.len() >= BATCH_BYTES {
            self.hand_over(queue);
        }
    }

    /// Hands the gathered lines over. A few lines (a worker that parks between requests)
    /// go as a copy at their exact size, from the allocator's per-thread cache; a full
    /// batch goes in its own buffer, and the worker takes an emptied one back — a large
    /// allocation per hand-over, freed by the writer thread, cost ~7% of the throughput
    /// under load (BENCHMARKS.md).
    fn hand_over(&mut self, queue: &Queue) {
        if self.lines == 0 {
            return;
        }
        let lines = std::mem::take(&mut self.lines);
        if self.text.len() < COPIED_HAND_OVER {
            queue.push(Batch {
                text: self.text.clone(),
                lines,
                keep_whole: false,
            });
            self.text.clear();
        } else {
            let text = std::mem::take(&mut self.text);
            self.text = queue.push_for_spare(Batch {
                text,
                lines,
                keep_whole: false,
            });
        }
    }
}

thread_local! {
    static GATHERED: RefCell<Gathered> = const {
        RefCell::new(Gathered {
            batching: false,
            text: Vec::new(),
            lines: 0,
        })
    };
}

/// From now on this thread gathers its audit lines; it must call [`hand_over_lines`] when
/// it parks and regularly while busy.
pub fn gather_lines_on_this_thread() {
    GATHERED.with(|gathered| {
        if let Ok(mut gathered) = gathered.try_borrow_mut() {
            gathered.batching = true;
        }
    });
}

/// Hands this thread's gathered lines to the writer.
pub fn hand_over_lines() {
    let Some(queue) = QUEUE.get() else {
        return;
    };
    // `try_with`: also called while the thread's locals are being destroyed.
    let _ = GATHERED.try_with(|gathered| {
        if let Ok(mut gathered) = gathered.try_borrow_mut() {
            gathered.hand_over(queue);
        }
    });
}

/// Queues one whole line (it ends with `\n` and holds no other): gathered on a worker,
/// handed over at once elsewhere. Never blocks; a line the queue has no room for is
/// counted as dropped.
pub fn write_line(line: &[u8]) {
    let Some(queue) = QUEUE.get() else {
        return;
    };
    let gathered_here = GATHERED.try_with(|gathered| {
        let Ok(mut gathered) = gathered.try_borrow_mut() else {
            return false;
        };
        if !gathered.batching {
            return false;
        }
        gathered.gather(queue, line);
        true
    });
    if !matches!(gathered_here, Ok(true)) {
        queue.push_record(line);
    }
}

/// Lines handed over together.
struct Batch {
    text: Vec<u8>,
    lines: u64,
    /// One record, written whole even if it holds a newline (a tracing message may);
    /// otherwise whole lines, which a write may split between.
    keep_whole: bool,
}

#[derive(Default)]
struct Queue {
    state: Mutex<State>,
    /// The writer waits here for lines.
    lines_queued: Condvar,
    /// Shutdown waits here for the writer to finish.
    finished: Condvar,
    dropped_lines: AtomicU64,
}

#[derive(Default)]
struct State {
    batches: Vec<Batch>,
    /// Room of the buffers queued plus of those the writer took and has not written yet.
    bytes: usize,
    spares: Vec<Vec<u8>>,
    /// The writer is waiting on `lines_queued` (only then is it woken: a wake is a system
    /// call).
    writer_waiting: bool,
    closing: bool,
    finished: bool,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues one record (a line, or a tracing event) as it comes, in a copy.
    fn push_record(&self, record: &[u8]) {
        self.push(Batch {
            text: record.to_vec(),
            lines: 1,
            keep_whole: true,
        });
    }

    /// Queues the batch, or drops and counts its lines when the queue is full or closed.
    fn push(&self, batch: Batch) {
        drop(self.push_for_spare(batch));
    }

    /// [`Queue::push`], and returns an empty buffer to gather into next: a spare when
    /// there is one, else the refused batch's.
    fn push_for_spare(&self, mut batch: Batch) -> Vec<u8> {
        // The queue counts what it holds: the buffers' room, not only the lines in them.
        let size = batch.text.capacity();
        let mut state = self.lock();
        if state.closing || state.bytes + size > QUEUE_BYTES {
            drop(state);
            self.dropped_lines.fetch_add(batch.lines, Ordering::Relaxed);
            batch.text.clear();
            return batch.text;
        }
        state.bytes += size;
        state.batches.push(batch);
        let spare = state.spares.pop().unwrap_or_default();
        let wake = std::mem::take(&mut state.writer_waiting);
        drop(state);
        if wake {
            self.lines_queued.notify_one();
        }
        spare
    }

    /// The writer thread: writes whatever is queued, flushes, lingers, looks again; waits
    /// when there was nothing; returns once the queue is closed and empty.
    // Its own thread, not a runtime worker: blocking is what it should do.
    #[allow(clippy::disallowed_methods)]
    fn write_out(&self, out: impl Write) {
        let mut out = PipeWrites::new(out);
        let mut taken: Vec<Batch> = Vec::new();
        let mut emptied: Vec<Vec<u8>> = Vec::new();
        let mut written = 0;
        loop {
            let mut state = self.lock();
            state.bytes -= written;
            while state.spares.len() < SPARE_BUFFERS {
                let Some(buffer) = emptied.pop() else { break };
                state.spares.push(buffer);
            }
            while state.batches.is_empty() && !state.closing {
                state.writer_waiting = true;
                state = self
                    .lines_queued
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                state.writer_waiting = false;
            }
            if state.batches.is_empty() {
                state.finished = true;
                drop(state);
                self.finished.notify_all();
                return;
            }
            std::mem::swap(&mut taken, &mut state.batches);
            drop(state);
            // Buffers not kept are freed here, not under the queue's lock.
            emptied.clear();
            written = 0;
            for batch in taken.drain(..) {
                written += batch.text.capacity();
                // Write errors (stdout closed) lose the lines: there is nowhere to say so.
                let _ = out.write_batch(&batch);
                let mut text = batch.text;
                if (BATCH_BYTES..=MAX_SPARE_BUFFER).contains(&text.capacity())
                    && emptied.len() < SPARE_BUFFERS
                {
                    text.clear();
                    emptied.push(text);
                }
            }
            let _ = out.flush();
            std::thread::sleep(LINGER);
        }
    }

    /// Closes the queue and waits (at most `wait`) until the writer has written it out.
    fn close_and_wait(&self, wait: Duration) {
        let mut state = self.lock();
        state.closing = true;
        let wake = std::mem::take(&mut state.writer_waiting);
        if wake {
            self.lines_queued.notify_one();
        }
        let _ = self
            .finished
            .wait_timeout_while(state, wait, |state| !state.finished);
    }
}

/// Standard output without std's line buffering, for [`PipeWrites`] (std's `Stdout`
/// flushes at every newline: one system call per line).
fn stdout_unbuffered() -> Box<dyn Write + Send> {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        if let Ok(fd) = std::io::stdout().as_fd().try_clone_to_owned() {
            return Box::new(std::fs::File::from(fd));
        }
    }
    Box::new(std::io::stdout())
}

/// Collects whole lines and writes them in pieces of at most [`ATOMIC_WRITE`] bytes that
/// end on a line's end, so no other writer to the same pipe can land inside a line.
struct PipeWrites<W: Write> {
    out: W,
    pending: Vec<u8>,
}

impl<W: Write> PipeWrites<W> {
    fn new(out: W) -> Self {
        Self {
            out,
            pending: Vec::with_capacity(ATOMIC_WRITE),
        }
    }

    fn write_batch(&mut self, batch: &Batch) -> std::io::Result<()> {
        if batch.keep_whole {
            return self.write_line(&batch.text);
        }
        // Whole lines are taken up to the room left, found by looking back from its end for
        // a line's end: a batch is not scanned line by line (splitting every line cost the
        // writer thread ~2,000 instructions per audit line).
        let mut rest = &batch.text[..];
        while !rest.is_empty() {
            let room = ATOMIC_WRITE - self.pending.len();
            if rest.len() <= room {
                self.pending.extend_from_slice(rest);
                break;
            }
            match rest[..room].iter().rposition(|&byte| byte == b'\n') {
                Some(end) => {
                    let (lines, after) = rest.split_at(end + 1);
                    if self.pending.is_empty() {
                        self.out.write_all(lines)?;
                    } else {
                        self.pending.extend_from_slice(lines);
                        self.write_pending()?;
                    }
                    rest = after;
                }
                // Not even one more line fits: what is pending goes first, and a line
                // longer than a whole piece goes alone.
                None if !self.pending.is_empty() => self.write_pending()?,
                None => {
                    let end = rest
                        .iter()
                        .position(|&byte| byte == b'\n')
                        .map_or(rest.len(), |end| end + 1);
                    let (line, after) = rest.split_at(end);
                    self.out.write_all(line)?;
                    rest = after;
                }
            }
        }
        Ok(())
    }

    fn write_line(&mut self, line: &[u8]) -> std::io::Result<()> {
        if self.pending.len() + line.len() > ATOMIC_WRITE {
            self.write_pending()?;
        }
        if line.len() > ATOMIC_WRITE {
            self.out.write_all(line)
        } else {
            self.pending.extend_from_slice(line);
            Ok(())
        }
    }

    fn write_pending(&mut self) -> std::io::Result<()> {
        if !self.pending.is_empty() {
            let written = self.out.write_all(&self.pending);
            self.pending.clear();
            written?;
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.write_pending()?;
        self.out.flush()
    }
}

/// Says on stderr (not through the full queue) how many lines were lost, at most every
/// 10 s.
// Its own thread, not a runtime worker: blocking sleep is what it should do.
#[allow(clippy::disallowed_methods)]
fn report_dropped_lines() {
    let mut reported = 0;
    loop {
        std::thread::sleep(Duration::from_secs(10));
        let dropped = dropped_lines();
        if dropped > reported {
            let _ = writeln!(
                std::io::stderr(),
                "mcp-auth-gateway: log output cannot keep up; {} log lines dropped ({} in total)",
                dropped - reported,
                dropped
            );
            reported = dropped;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// Records each `write` it is given.
    #[derive(Clone, Default)]
    struct Writes(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Writes {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().push(bytes.to_vec());
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A worker's gathering buffer, as `gather_lines_on_this_thread` sets it.
    fn worker_buffer() -> Gathered {
        Gathered {
            batching: true,
            text: Vec::new(),
            lines: 0,
        }
    }

    fn line(n: usize, fill: u8) -> Vec<u8> {
        let mut line = vec![fill; n - 1];
        line.push(b'\n');
        line
    }

    fn lines(batch: Vec<Vec<u8>>) -> Batch {
        Batch {
            lines: batch.len() as u64,
            text: batch.concat(),
            keep_whole: false,
        }
    }

    #[test]
    fn log_lines_leave_in_batches_of_whole_lines_within_pipe_buf() {
        let writes = Writes::default();
        let mut out = PipeWrites::new(writes.clone());
        // 30 lines of 300 bytes handed over as three batches of ten.
        for round in 0..3u8 {
            let batch = (0..10).map(|i| line(300, b'a' + round * 10 + i)).collect();
            out.write_batch(&lines(batch)).unwrap();
        }
        out.write_batch(&lines(vec![line(5000, b'L')])).unwrap();
        // A record with a newline inside stays whole.
        let record = b"first\nsecond\n".to_vec();
        out.write_batch(&Batch {
            text: record.clone(),
            lines: 1,
            keep_whole: true,
        })
        .unwrap();
        out.flush().unwrap();
        let writes = writes.0.lock().unwrap();
        let all: Vec<u8> = writes.concat();
        assert_eq!(all.len(), 30 * 300 + 5000 + record.len(), "nothing lost");
        for write in writes.iter() {
            assert!(write.ends_with(b"\n"), "every write ends on a line's end");
            assert!(write.len() <= ATOMIC_WRITE || write.len() == 5000);
        }
        // 30 lines of 300 bytes: 13 fit in 4096, so three writes, then the long line
        // alone, then the record at the flush.
        let sizes: Vec<usize> = writes.iter().map(Vec::len).collect();
        assert_eq!(sizes, [3900, 3900, 1200, 5000, record.len()]);
    }

    #[test]
    fn a_full_queue_drops_and_counts_lines_not_batches_and_the_writer_drains_the_rest() {
        let queue: &'static Queue = Box::leak(Box::default());
        // Nobody writes yet: fill the queue to its limit with batches of 4 lines.
        let batch = || lines((0..4).map(|_| line(1024, b'x')).collect());
        let fit = QUEUE_BYTES / 4096;
        for _ in 0..fit {
            queue.push(batch());
        }
        assert_eq!(queue.dropped_lines.load(Ordering::Relaxed), 0);
        queue.push(batch());
        queue.push(batch());
        assert_eq!(
            queue.dropped_lines.load(Ordering::Relaxed),
            8,
            "two batches, 8 lines"
        );
        // The writer writes everything that was queued, then stops when closed.
        let writes = Writes::default();
        let out = writes.clone();
        let writer = std::thread::spawn(move || queue.write_out(out));
        queue.close_and_wait(Duration::from_secs(30));
        writer.join().unwrap();
        let written: usize = writes.0.lock().unwrap().iter().map(Vec::len).sum();
        assert_eq!(written, fit * 4096);
        // Closed: what comes later is counted as dropped, not kept.
        queue.push(batch());
        assert_eq!(queue.dropped_lines.load(Ordering::Relaxed), 12);
    }

    #[test]
    fn a_worker_hands_its_lines_over_when_told_or_when_its_batch_is_full() {
        let queue: &'static Queue = Box::leak(Box::default());
        let queued = || {
            let state = queue.lock();
            let lines: u64 = state.batches.iter().map(|batch| batch.lines).sum();
            (state.batches.len(), lines)
        };
        let mut gathered = worker_buffer();
        let short = line(200, b's');
        for _ in 0..3 {
            gathered.gather(queue, &short);
        }
        assert_eq!(queued(), (0, 0), "gathered, not handed over yet");
        gathered.hand_over(queue);
        assert_eq!(queued(), (1, 3), "handed over as one batch");
        gathered.hand_over(queue);
        assert_eq!(queued(), (1, 3), "nothing more to hand over");
        // A full batch goes at once: 4096 / 200 = 20.5, so the 21st line sends it.
        for _ in 0..21 {
            gathered.gather(queue, &short);
        }
        assert_eq!(queued(), (2, 24));
        assert_eq!(gathered.lines, 0);
    }

    /// Under load a worker hands full batches over in their own buffers and gathers the
    /// next ones into buffers the writer emptied, without allocating.
    #[test]
    #[allow(clippy::disallowed_methods)]
    fn full_batches_travel_in_their_buffers_and_come_back_emptied() {
        let queue: &'static Queue = Box::leak(Box::default());
        let writes = Writes::default();
        let out = writes.clone();
        let writer = std::thread::spawn(move || queue.write_out(out));
        let mut gathered = worker_buffer();
        let audit_line = line(300, b'a');
        let full_batch = BATCH_BYTES.div_ceil(300);
        let mut gather_a_batch = || {
            for _ in 0..full_batch - 1 {
                gathered.gather(queue, &audit_line);
            }
            let buffer = gathered.text.as_ptr();
            gathered.gather(queue, &audit_line);
            assert_eq!(gathered.lines, 0, "handed over when full");
            buffer
        };
        let first = gather_a_batch();
        // Once the writer has written it, the first buffer is a spare ...
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while queue.lock().spares.is_empty() {
            assert!(std::time::Instant::now() < deadline, "no buffer came back");
            std::thread::sleep(Duration::from_millis(1));
        }
        // ... that the worker takes when it hands the next batch over.
        gather_a_batch();
        assert_eq!(
            gathered.text.as_ptr(),
            first,
            "the emptied buffer came back"
        );
        assert!(gathered.text.is_empty());
        queue.close_and_wait(Duration::from_secs(30));
        writer.join().unwrap();
        let written: usize = writes.0.lock().unwrap().iter().map(Vec::len).sum();
        assert_eq!(written, 2 * full_batch * 300);
    }

    /// With stdout stuck and one line per hand-over (a worker that parks between
    /// requests), the queue holds what it counts: copies at their exact size, not the
    /// workers' gathering buffers.
    #[test]
    fn what_the_queue_counts_is_what_it_holds() {
        let queue: &'static Queue = Box::leak(Box::default());
        let mut gathered = worker_buffer();
        let audit_line = line(300, b'a');
        let mut offered = 0u64;
        while queue.dropped_lines.load(Ordering::Relaxed) == 0 {
            gathered.gather(queue, &audit_line);
            gathered.hand_over(queue);
            offered += 1;
        }
        let state = queue.lock();
        let held: usize = state
            .batches
            .iter()
            .map(|batch| batch.text.capacity())
            .sum();
        assert!(held <= QUEUE_BYTES, "{held} bytes held");
        assert_eq!(state.bytes, held);
        assert_eq!(state.batches.len() as u64, offered - 1);
        assert!(gathered.text.capacity() <= 2 * BATCH_BYTES);
    }

    #[test]
    #[allow(clippy::disallowed_methods)]
    fn the_writer_wakes_for_lines_queued_while_it_waits() {
        let queue: &'static Queue = Box::leak(Box::default());
        let writes = Writes::default();
        let out = writes.clone();
        let writer = std::thread::spawn(move || queue.write_out(out));
        let written = || -> usize { writes.0.lock().unwrap().iter().map(Vec::len).sum() };
        let mut total = 0;
        for round in 0..5u8 {
            // The writer is waiting (or lingering) when the line comes: it writes it
            // without being closed or pushed again.
            let text = line(100, b'a' + round);
            total += text.len();
            queue.push(Batch {
                text,
                lines: 1,
                keep_whole: false,
            });
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while written() < total {
                assert!(
                    std::time::Instant::now() < deadline,
                    "line {round} not written"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            // And once written, the bytes no longer count against the queue's limit.
            while queue.lock().bytes > 0 {
                assert!(std::time::Instant::now() < deadline, "bytes still counted");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        queue.close_and_wait(Duration::from_secs(30));
        writer.join().unwrap();
    }

    proptest::proptest! {
        /// Whatever the lines' lengths and however they are batched: nothing lost or
        /// reordered, every write ends on a line's end, and only a line longer than a
        /// piece is written past `ATOMIC_WRITE`, alone.
        #[test]
        fn batches_leave_as_whole_lines_within_pipe_buf(
            batches in proptest::collection::vec(
                proptest::collection::vec(1usize..6000, 0..20),
                1..8,
            )
        ) {
            let writes = Writes::default();
            let mut out = PipeWrites::new(writes.clone());
            let mut expected = Vec::new();
            for (b, lengths) in batches.iter().enumerate() {
                let batch: Vec<Vec<u8>> = lengths
                    .iter()
                    .enumerate()
                    .map(|(i, &n)| line(n, b'a' + ((b * 7 + i) % 26) as u8))
                    .collect();
                expected.extend(batch.concat());
                out.write_batch(&lines(batch)).unwrap();
            }
            out.flush().unwrap();
            let writes = writes.0.lock().unwrap();
            proptest::prop_assert_eq!(writes.concat(), expected);
            for write in writes.iter() {
                proptest::prop_assert!(write.ends_with(b"\n"));
                let one_line = write.iter().filter(|&&byte| byte == b'\n').count() == 1;
                proptest::prop_assert!(write.len() <= ATOMIC_WRITE || one_line);
            }
        }
    }
}
