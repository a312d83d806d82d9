//! The audit line, written by hand.
//!
//! One line per request is the gateway's most frequent log output; formatted through
//! tracing-subscriber it cost about 17,000 instructions a request (field visitors, dynamic
//! dispatch per field, styling objects even without colours), a ninth of a proxied request
//! (BENCHMARKS.md). Here the same line is written straight from the record into the same
//! log writer. The text is tracing-subscriber's, byte for byte, in both formats — the tests
//! below format each record both ways and compare — so log pipelines see no difference.
//!
//! Only when the log goes through [`super::init`]: the `pretty` format on a terminal (in
//! colour) and a subscriber set by someone else (tests) get the line through tracing, as
//! before. The `json` format has no colours and is always written here.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::OnceLock;

use http::Method;
use serde::ser::{SerializeMap, Serializer as _};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};

use super::LogFormat;
use crate::text::{push_decimal_str, push_ip};

/// One request's audit record: the event's fields, in the event's order. Absent fields are
/// left out of the line, as tracing leaves out `None`.
pub(super) struct Record<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub status: u16,
    pub verdict: &'a str,
    pub route: Option<&'a str>,
    pub subject: Option<&'a str>,
    pub auth: Option<&'a str>,
    pub key_id: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub forwarded: Option<&'a str>,
    pub mcp_method: Option<&'a str>,
    pub mcp_target: Option<&'a str>,
    pub rule: Option<&'a str>,
    pub latency_us: u64,
    pub client: IpAddr,
    pub request_id: &'a str,
    pub trace_id: Option<&'a str>,
    pub user_agent: Option<&'a str>,
}

/// The event's message, as `tracing::info!(…, "request")` gives it.
pub(super) const MESSAGE: &str = "request";

/// A field's value as the event records it: strings through `Debug` (quoted, escaped),
/// the method and the client address through `Display`, numbers as numbers.
enum Field<'a> {
    Str(&'a str),
    /// A `Display` value that is its text (the method).
    Shown(&'a str),
    Address(IpAddr),
    Number(u64),
}

impl Record<'_> {
    /// Calls `each` for every present field, in the order of the event's field set.
    fn fields(&self, mut each: impl FnMut(&'static str, Field<'_>)) {
        each("method", Field::Shown(self.method.as_str()));
        each("path", Field::Str(self.path));
        each("status", Field::Number(u64::from(self.status)));
        each("verdict", Field::Str(self.verdict));
        let optional = [
            ("route", self.route),
            ("subject", self.subject),
            ("auth", self.auth),
            ("key_id", self.key_id),
            ("reason", self.reason),
            ("forwarded", self.forwarded),
            ("mcp_method", self.mcp_method),
            ("mcp_target", self.mcp_target),
            ("rule", self.rule),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                each(name, Field::Str(value));
            }
        }
        each("latency_us", Field::Number(self.latency_us));
        each("client", Field::Address(self.client));
        each("request_id", Field::Str(self.request_id));
        if let Some(trace_id) = self.trace_id {
            each("trace_id", Field::Str(trace_id));
        }
        if let Some(user_agent) = self.user_agent {
            each("user_agent", Field::Str(user_agent));
        }
    }

    /// tracing-subscriber's `Full` format without colours:
    /// `<timestamp>  INFO audit: request method=POST path="/mcp" …`.
    pub(super) fn write_pretty(&self, timestamp: &str, line: &mut String) -> std::fmt::Result {
        line.push_str(timestamp);
        line.push_str("  INFO audit: ");
        line.push_str(MESSAGE);
        let mut result = Ok(());
        self.fields(|name, value| {
            if result.is_err() {
                return;
            }
            line.push(' ');
            line.push_str(name);
            line.push('=');
            match value {
                Field::Str(text) => result = push_debug_str(line, text),
                Field::Shown(text) => line.push_str(text),
                Field::Address(address) => push_ip(address, line),
                Field::Number(number) => push_decimal_str(number, line),
            }
        });
        result?;
        line.push('\n');
        Ok(())
    }

    /// tracing-subscriber's `Json` format, flattened, without span list:
    /// `{"timestamp":…,"level":"INFO","message":"request",<fields>,"target":"audit"}`.
    /// serde_json writes the strings, as it does for tracing-subscriber.
    pub(super) fn write_json(&self, timestamp: &str, line: &mut Vec<u8>) -> serde_json::Result<()> {
        let mut serializer = serde_json::Serializer::new(&mut *line);
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("timestamp", timestamp)?;
        map.serialize_entry("level", "INFO")?;
        map.serialize_entry("message", MESSAGE)?;
        let mut result = Ok(());
        let mut address = String::new();
        self.fields(|name, value| {
            if result.is_ok() {
                result = match value {
                    Field::Str(text) | Field::Shown(text) => map.serialize_entry(name, text),
                    Field::Address(ip) => {
                        address.clear();
                        push_ip(ip, &mut address);
                        map.serialize_entry(name, &address)
                    }
                    Field::Number(number) => map.serialize_entry(name, &number),
                };
            }
        });
        result?;
        map.serialize_entry("target", "audit")?;
        SerializeMap::end(map)?;
        line.push(b'\n');
        Ok(())
    }
}

/// `text` as `{:?}` writes it. Most values (paths, ids, routes, user agents) are printable
/// ASCII without `"` or `\\`, which `Debug` leaves as they are: those are copied between
/// quotes, the rest goes through `Debug` (its escapes are the reference).
fn push_debug_str(line: &mut String, text: &str) -> std::fmt::Result {
    if text
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        line.push('"');
        line.push_str(text);
        line.push('"');
        Ok(())
    } else {
        write!(line, "{text:?}")
    }
}

/// The time now as tracing-subscriber's clock writes it (RFC 3339, microseconds, UTC);
/// humantime writes the same text without `write!` per component. Before 1970 or after
/// 9999 (a broken clock), tracing-subscriber's own formatter.
fn push_timestamp(line: &mut String) {
    let now = std::time::SystemTime::now();
    let in_range = now
        .duration_since(std::time::UNIX_EPOCH)
        .is_ok_and(|since| since.as_secs() < 253_402_300_800);
    if in_range {
        let _ = write!(line, "{}", humantime::format_rfc3339_micros(now));
    } else if SystemTime.format_time(&mut Writer::new(line)).is_err() {
        line.push_str("<unknown time>");
    }
}

/// Set when [`super::init`] started the log writer without colours: audit lines are then
/// written by hand in this format, into the same queue as tracing-subscriber's lines.
pub(super) struct Sink {
    pub format: LogFormat,
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// Set once, by [`super::init`], when its subscriber was installed and writes no colours.
pub(super) fn install(sink: Sink) {
    let _ = SINK.set(sink);
}

/// A thread's buffers, kept between requests.
struct Buffers {
    timestamp: String,
    text: String,
    bytes: Vec<u8>,
}

thread_local! {
    static BUFFERS: RefCell<Buffers> = const {
        RefCell::new(Buffers {
            timestamp: String::new(),
            text: String::new(),
            bytes: Vec::new(),
        })
    };
}

/// Writes the line by hand when a sink is installed; `false` means: log it through tracing.
/// The caller has checked that the `audit` target is enabled at `info`.
pub(super) fn write(record: &Record<'_>) -> bool {
    let Some(sink) = SINK.get() else {
        return false;
    };
    BUFFERS.with(|buffers| {
        let Ok(mut buffers) = buffers.try_borrow_mut() else {
            return false;
        };
        let Buffers {
            timestamp,
            text,
            bytes,
        } = &mut *buffers;
        timestamp.clear();
        push_timestamp(timestamp);
        let line: &[u8] = match sink.format {
            LogFormat::Json => {
                bytes.clear();
                if record.write_json(timestamp, bytes).is_err() {
                    return false;
                }
                bytes
            }
            LogFormat::Pretty => {
                text.clear();
                if record.write_pretty(timestamp, text).is_err() {
                    return false;
                }
                text.as_bytes()
            }
        };
        // Gathered, then handed to the lossy queue: never blocks, counts what it drops.
        super::log_writer::write_line(line);
        true
    })
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use proptest::prelude::*;
    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    const STAMP: &str = "2026-12-02T06:00:00.123456Z";

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    struct Fixed;

    impl FormatTime for Fixed {
        fn format_time(&self, writer: &mut Writer<'_>) -> std::fmt::Result {
            writer.write_str(STAMP)
        }
    }

    /// The line tracing-subscriber writes for the record, configured as `super::init`
    /// configures it (with a fixed clock).
    fn through_tracing(record: &Record<'_>, format: LogFormat) -> String {
        let captured = Captured::default();
        let builder = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_timer(Fixed)
            .with_writer(captured.clone());
        match format {
            LogFormat::Json => {
                let subscriber = builder
                    .json()
                    .flatten_event(true)
                    .with_span_list(false)
                    .finish();
                tracing::subscriber::with_default(subscriber, || {
                    super::super::audit_through_tracing(record)
                });
            }
            LogFormat::Pretty => {
                tracing::subscriber::with_default(builder.finish(), || {
                    super::super::audit_through_tracing(record)
                });
            }
        }
        let bytes = captured.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    fn by_hand(record: &Record<'_>, format: LogFormat) -> String {
        match format {
            LogFormat::Json => {
                let mut bytes = Vec::new();
                record.write_json(STAMP, &mut bytes).unwrap();
                String::from_utf8(bytes).unwrap()
            }
            LogFormat::Pretty => {
                let mut text = String::new();
                record.write_pretty(STAMP, &mut text).unwrap();
                text
            }
        }
    }

    fn assert_same_line(record: &Record<'_>) {
        for format in [LogFormat::Pretty, LogFormat::Json] {
            let expected = through_tracing(record, format);
            assert!(!expected.is_empty(), "tracing wrote nothing");
            assert_eq!(by_hand(record, format), expected, "{format:?}");
        }
    }

    fn denial() -> Record<'static> {
        Record {
            method: &Method::POST,
            path: "/mcp",
            status: 401,
            verdict: "deny",
            route: Some("mcp"),
            subject: None,
            auth: None,
            key_id: None,
            reason: Some("no credentials"),
            forwarded: None,
            mcp_method: None,
            mcp_target: None,
            rule: None,
            latency_us: 87,
            client: IpAddr::from([127, 0, 0, 1]),
            request_id: "0af7651916cd43dd8448eb211c80319c",
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736"),
            user_agent: Some("audit-test/1.0"),
        }
    }

    #[test]
    fn lines_are_tracing_subscribers_byte_for_byte() {
        assert_same_line(&denial());
        // Every field present; text that needs escaping in both formats.
        assert_same_line(&Record {
            method: &Method::from_bytes(b"PROPFIND").unwrap(),
            path: "/a\"b\\c\u{7f}\u{1b}[31m\u{301}é",
            status: 200,
            verdict: "allow",
            route: Some("r"),
            subject: Some("github:42 \"x\"\n"),
            auth: Some("jwt"),
            key_id: Some("k\t1"),
            reason: Some(""),
            forwarded: Some("POST /mcp"),
            mcp_method: Some("tools/call"),
            mcp_target: Some("deploy\u{0}"),
            rule: Some("no-deletes"),
            latency_us: u64::MAX,
            client: "2001:db8::1".parse().unwrap(),
            request_id: "id",
            trace_id: None,
            user_agent: Some("\u{feff}\u{200b}Mozilla/5.0 \u{10ffff}"),
        });
    }

    #[test]
    fn timestamps_are_tracing_subscribers() {
        // The same second (retried if the clock turns between the two readings), the same
        // shape to the microsecond.
        for _ in 0..100 {
            let mut ours = String::new();
            push_timestamp(&mut ours);
            let mut theirs = String::new();
            SystemTime
                .format_time(&mut Writer::new(&mut theirs))
                .unwrap();
            assert_eq!(ours.len(), theirs.len(), "{ours} {theirs}");
            assert_eq!(ours.len(), STAMP.len());
            assert!(ours.ends_with('Z') && ours.as_bytes()[19] == b'.', "{ours}");
            if ours[..19] == theirs[..19] {
                return;
            }
        }
        panic!("the clock never held still for a microsecond");
    }

    proptest! {
        #[test]
        fn any_text_gives_the_same_line(
            path in any::<String>(),
            subject in proptest::option::of(any::<String>()),
            // Printable ASCII, quotes and backslashes included: the copied-as-is path.
            reason in proptest::option::of("[ -~]{0,24}"),
            user_agent in proptest::option::of(any::<String>()),
            status in any::<u16>(),
            latency_us in any::<u64>(),
            v6 in any::<bool>(),
            address in any::<u128>(),
        ) {
            let client = if v6 {
                IpAddr::from(address.to_be_bytes())
            } else {
                IpAddr::from((address as u32).to_be_bytes())
            };
            let record = Record {
                path: &path,
                subject: subject.as_deref(),
                reason: reason.as_deref(),
                user_agent: user_agent.as_deref(),
                status,
                latency_us,
                client,
                ..denial()
            };
            for format in [LogFormat::Pretty, LogFormat::Json] {
                prop_assert_eq!(by_hand(&record, format), through_tracing(&record, format));
            }
        }
    }
}
