//! The log writer thread and the queue that feeds it.
//!
//! Every log line leaves through one thread that writes standard output, so a slow or
//! blocked stdout (journald or Docker's blocking log driver under pressure) never stalls a
//! worker. The queue is bounded in bytes and lossy: what does not fit is dropped and
//! counted, line by line, and the loss is reported on stderr.
//!
//! Workers hand their audit lines over in batches: when their runtime is about to park
//! (nothing left to run), when a batch is full, and at the worker's timer heartbeat. Under
//! load one hand-over, and at most one wake of the writer, carries many lines; with one
//! request at a time the hand-over comes after the response was written, not before it.
//! Handing each line over as it was made cost a message, an allocation and often a wake
//! of the writer per request (BENCHMARKS.md). Other threads, and lines logged through
//! tracing, are handed over one by one as they come.
//!
//! Written here rather than with tracing-appender's non-blocking writer: its queue counts
//! and bounds messages, not lines and bytes, which batches need.

use std::cell::RefCell;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

/// The most bytes the queue holds (stdout blocked): about as much as the 8,192 lines the
/// earlier queue held, at the size of an audit line.
const QUEUE_BYTES: usize = 2 << 20;

/// A worker hands its batch over once it holds this many bytes.
const BATCH_BYTES: usize = 4096;

/// How long the writer waits after writing before it looks for more lines.
const LINGER: Duration = Duration::from_millis(5);

/// Emptied batch buffers the writer keeps for the workers to fill again.
const SPARE_BATCHES: usize = 8;

/// How long shutdown waits for the queued lines to be written (stdout may be stuck).
const SHUTDOWN_WAIT: Duration = Duration::from_secs(1);

/// The most bytes one `write` of [`LineBatches`] carries: POSIX `PIPE_BUF`, up to which a
/// write to a pipe is never interleaved with another process's (stderr sent to the same
/// pipe, `2>&1`, or a journal). A line longer than this goes out alone.
const ATOMIC_WRITE: usize = 4096;

static QUEUE: OnceLock<&'static Queue> = OnceLock::new();

/// Keeps the log writer thread's queue open; dropping it writes out what is still queued
/// (waiting at most a second: stdout may be stuck).
pub struct LogGuard {
    queue: Option<&'static Queue>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        if let Some(queue) = self.queue {
            hand_over_lines();
            queue.close_and_wait(SHUTDOWN_WAIT);
        }
    }
}

/// Starts the writer thread on standard output, once per process (a second call returns a
/// guard that does nothing). `None` when the thread could not be started: the caller then
/// writes to stdout directly.
pub fn start() -> Option<LogGuard> {
    if QUEUE.get().is_some() {
        return Some(LogGuard { queue: None });
    }
    // One queue for the life of the process, shared with its writer thread.
    let queue: &'static Queue = Box::leak(Box::default());
    let out = stdout_in_batches();
    let spawned = std::thread::Builder::new()
        .name("gateway-log".into())
        .spawn(move || queue.write_out(out));
    if let Err(error) = spawned {
        eprintln!("mcp-auth-gateway: cannot start the log writer thread: {error}");
        return None;
    }
    if QUEUE.set(queue).is_err() {
        // Started by another thread meanwhile: this one's writer waits for nothing.
        return Some(LogGuard { queue: None });
    }
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
            queue.push(Batch {
                text: line.to_vec(),
                lines: 1,
                one_record: true,
            });
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

    fn hand_over(&mut self, queue: &Queue) {
        if self.lines == 0 {
            return;
        }
        let text = std::mem::take(&mut self.text);
        let lines = std::mem::take(&mut self.lines);
        self.text = queue.push(Batch {
            text,
            lines,
            one_record: false,
        });
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
        queue.push(Batch {
            text: line.to_vec(),
            lines: 1,
            one_record: true,
        });
    }
}

/// Lines handed over together.
struct Batch {
    text: Vec<u8>,
    lines: u64,
    /// One record, written whole even if it holds a newline (a tracing message may);
    /// otherwise whole lines, which a write may split between.
    one_record: bool,
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

    /// Queues the batch, or drops and counts its lines when the queue is full; returns an
    /// empty buffer to gather into next (a spare when there is one).
    fn push(&self, mut batch: Batch) -> Vec<u8> {
        let mut state = self.lock();
        if state.closing || state.bytes + batch.text.len() > QUEUE_BYTES {
            self.dropped_lines.fetch_add(batch.lines, Ordering::Relaxed);
            batch.text.clear();
            return batch.text;
        }
        state.bytes += batch.text.len();
        state.batches.push(batch);
        let spare = state.spares.pop().unwrap_or_default();
        let wake = std::mem::take(&mut state.writer_waiting);
        drop(state);
        if wake {
            self.lines_queued.notify_one();
        }
        spare
    }

    /// The writer thread: writes whatever is queued, flushes, waits for more; returns once
    /// the queue is closed and empty.
    // Its own thread, not a runtime worker: blocking is what it should do.
    #[allow(clippy::disallowed_methods)]
    fn write_out(&self, out: impl Write) {
        let mut out = LineBatches::new(out);
        let mut taken: Vec<Batch> = Vec::new();
        loop {
            let mut state = self.lock();
            for batch in taken.drain(..) {
                let mut text = batch.text;
                if text.capacity() >= BATCH_BYTES
                    && text.capacity() <= 4 * BATCH_BYTES
                    && state.spares.len() < SPARE_BATCHES
                {
                    text.clear();
                    state.spares.push(text);
                }
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
            state.bytes = 0;
            drop(state);
            for batch in &taken {
                // Write errors (stdout closed) lose the lines: there is nowhere to say so.
                let _ = out.write_batch(batch);
            }
            let _ = out.flush();
            // Under load lines keep coming: the writer lets them gather for a moment rather
            // than be woken for each hand-over (a wake is a system call on the worker's
            // side). After a quiet moment it waits to be woken by the next line.
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

/// Standard output for the writer thread, in batches of whole lines (see [`LineBatches`]):
/// under load many lines leave in one `write` (std's `Stdout` flushes at every newline).
fn stdout_in_batches() -> Box<dyn Write + Send> {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        if let Ok(fd) = std::io::stdout().as_fd().try_clone_to_owned() {
            return Box::new(std::fs::File::from(fd));
        }
    }
    Box::new(std::io::stdout())
}

/// Collects whole lines and writes them in batches of at most [`ATOMIC_WRITE`] bytes that
/// end on a line's end, so no other writer to the same pipe can land inside a line.
struct LineBatches<W: Write> {
    out: W,
    batch: Vec<u8>,
}

impl<W: Write> LineBatches<W> {
    fn new(out: W) -> Self {
        Self {
            out,
            batch: Vec::with_capacity(ATOMIC_WRITE),
        }
    }

    fn write_batch(&mut self, batch: &Batch) -> std::io::Result<()> {
        if batch.one_record {
            return self.write_line(&batch.text);
        }
        for line in batch.text.split_inclusive(|&byte| byte == b'\n') {
            self.write_line(line)?;
        }
        Ok(())
    }

    fn write_line(&mut self, line: &[u8]) -> std::io::Result<()> {
        if self.batch.len() + line.len() > ATOMIC_WRITE {
            self.write_pending()?;
        }
        if line.len() > ATOMIC_WRITE {
            self.out.write_all(line)
        } else {
            self.batch.extend_from_slice(line);
            Ok(())
        }
    }

    fn write_pending(&mut self) -> std::io::Result<()> {
        if !self.batch.is_empty() {
            let written = self.out.write_all(&self.batch);
            self.batch.clear();
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

    fn line(n: usize, fill: u8) -> Vec<u8> {
        let mut line = vec![fill; n - 1];
        line.push(b'\n');
        line
    }

    fn lines(batch: Vec<Vec<u8>>) -> Batch {
        Batch {
            lines: batch.len() as u64,
            text: batch.concat(),
            one_record: false,
        }
    }

    #[test]
    fn log_lines_leave_in_batches_of_whole_lines_within_pipe_buf() {
        let writes = Writes::default();
        let mut out = LineBatches::new(writes.clone());
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
            one_record: true,
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
        let mut gathered = Gathered {
            batching: true,
            text: Vec::new(),
            lines: 0,
        };
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
        queue.lock().batches.clear();
    }

    #[test]
    #[allow(clippy::disallowed_methods)]
    fn the_writer_wakes_for_lines_queued_while_it_waits_and_gives_back_buffers() {
        let queue: &'static Queue = Box::leak(Box::default());
        let writes = Writes::default();
        let out = writes.clone();
        let writer = std::thread::spawn(move || queue.write_out(out));
        let mut total = 0;
        for round in 0..50u8 {
            let mut text = Vec::with_capacity(BATCH_BYTES);
            text.extend_from_slice(&line(100, b'a' + round % 26));
            total += text.len();
            queue.push(Batch {
                text,
                lines: 1,
                one_record: false,
            });
            // Give the writer time to wait again between some of them.
            if round % 10 == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        queue.close_and_wait(Duration::from_secs(30));
        writer.join().unwrap();
        let written: usize = writes.0.lock().unwrap().iter().map(Vec::len).sum();
        assert_eq!(written, total);
        let spares = queue.lock().spares.len();
        assert!((1..=SPARE_BATCHES).contains(&spares), "{spares} spares");
    }
}
