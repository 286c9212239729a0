//! The daemon's log: every `log::` call site and every `tracing` event
//! written by one `tracing-subscriber` fmt layer, as text or as one JSON
//! object per line, filtered by a level that changes live; and the plain
//! forms messages use for values an operator reads (no Rust debug forms).

use std::{
    fmt,
    io::IsTerminal as _,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use tracing::subscriber::Interest;
use tracing_log::AsTrace as _;
use tracing_subscriber::{
    filter::EnvFilter,
    fmt::MakeWriter,
    layer::{Context, Layer, SubscriberExt as _},
    Registry,
};

/// `--log-format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line per event: time, level, target, message, then the
    /// event's fields as `key=value` (e.g. `call_id=...`).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target` and
    /// `fields` (`message` and the event's fields, e.g. `call_id`).
    Json,
}

/// The level the log passes, changed live. Both filters follow it: the
/// `log` facade's global maximum (so a `log::debug!` below it costs one
/// comparison) and the tracing filter in front of the output.
#[derive(Clone, Debug)]
pub struct LiveLevel(Arc<AtomicUsize>);

impl LiveLevel {
    pub fn new(level: log::LevelFilter) -> LiveLevel {
        LiveLevel(Arc::new(AtomicUsize::new(level as usize)))
    }

    pub fn get(&self) -> log::LevelFilter {
        match self.0.load(Ordering::Relaxed) {
            0 => log::LevelFilter::Off,
            1 => log::LevelFilter::Error,
            2 => log::LevelFilter::Warn,
            3 => log::LevelFilter::Info,
            4 => log::LevelFilter::Debug,
            _ => log::LevelFilter::Trace,
        }
    }

    /// Sets this level only (the daemon's, [`set_level`], also sets the
    /// `log` facade's).
    pub fn set(&self, level: log::LevelFilter) {
        self.0.store(level as usize, Ordering::Relaxed);
    }

    fn passes(&self, level: &tracing::Level) -> bool {
        *level <= self.get().as_trace()
    }
}

/// Asked at every event, never cached per call site: the answer changes
/// when the level does.
impl<S> tracing_subscriber::layer::Filter<S> for LiveLevel {
    fn enabled(&self, meta: &tracing::Metadata<'_>, _: &Context<'_, S>) -> bool {
        self.passes(meta.level())
    }

    fn callsite_enabled(&self, _: &'static tracing::Metadata<'static>) -> Interest {
        Interest::sometimes()
    }
}

/// The daemon's level, once [`init`] ran without RUST_LOG.
static DAEMON_LEVEL: std::sync::OnceLock<LiveLevel> = std::sync::OnceLock::new();

/// Changes the daemon's level live (a no-op under RUST_LOG, which rules).
pub fn set_level(level: log::LevelFilter) {
    if let Some(live) = DAEMON_LEVEL.get() {
        live.set(level);
        log::set_max_level(level);
    }
}

/// The output layer for `format`, writing to `writer`, passing what
/// `filter` passes.
fn output<W, F>(
    format: LogFormat,
    writer: W,
    filter: F,
    ansi: bool,
) -> Box<dyn Layer<Registry> + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
    F: tracing_subscriber::layer::Filter<Registry> + Send + Sync + 'static,
{
    let layer = tracing_subscriber::fmt::layer().with_writer(writer);
    match format {
        LogFormat::Text => layer.with_ansi(ansi).with_filter(filter).boxed(),
        LogFormat::Json => layer.event_format(JsonLine).with_filter(filter).boxed(),
    }
}

/// The JSON line: the fmt layer's own JSON form, but without the
/// `log.file`/`log.line`/... fields the `log` bridge adds to every record
/// (its target is the event's target already).
struct JsonLine;

/// An event's fields, the bridge's `log.*` left out.
#[derive(Default)]
struct Fields(serde_json::Map<String, serde_json::Value>);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.put(field, value.into());
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.put(field, value.into());
    }
}

impl Fields {
    fn put(&mut self, field: &tracing::field::Field, value: serde_json::Value) {
        if !field.name().starts_with("log.") {
            self.0.insert(field.name().to_string(), value);
        }
    }
}

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for JsonLine
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut w: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        use tracing_log::NormalizeEvent as _;
        use tracing_subscriber::fmt::time::FormatTime as _;
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        let mut timestamp = String::new();
        tracing_subscriber::fmt::time::SystemTime.format_time(
            &mut tracing_subscriber::fmt::format::Writer::new(&mut timestamp),
        )?;
        let mut fields = Fields::default();
        event.record(&mut fields);
        let line = serde_json::json!({
            "timestamp": timestamp,
            "level": meta.level().as_str(),
            "fields": fields.0,
            "target": meta.target(),
        });
        writeln!(w, "{line}")
    }
}

/// A subscriber writing `format` to `writer`, passing what `level` passes
/// at the time of each event.
pub fn subscriber<W>(format: LogFormat, writer: W, level: LiveLevel) -> impl tracing::Subscriber
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    Registry::default().with(output(format, writer, level, false))
}

/// Installs the daemon's log on stderr: RUST_LOG, when set, is the filter
/// (and `level` is not used); otherwise `level`, changed by [`set_level`].
/// Returns whether RUST_LOG rules.
pub fn init(level: log::LevelFilter, format: LogFormat) -> bool {
    let ansi = format == LogFormat::Text && std::io::stderr().is_terminal();
    let rust_log = std::env::var_os("RUST_LOG").is_some();
    let layer = if rust_log {
        let filter = EnvFilter::builder()
            .with_default_directive(tracing::Level::INFO.into())
            .from_env_lossy();
        output(format, std::io::stderr, filter, ansi)
    } else {
        let live = DAEMON_LEVEL.get_or_init(|| LiveLevel::new(level)).clone();
        output(format, std::io::stderr, live, ansi)
    };
    if tracing::subscriber::set_global_default(Registry::default().with(layer)).is_err() {
        return rust_log;
    }
    // `log` records below this maximum are dropped before they reach the
    // bridge; under RUST_LOG the subscriber's own hint bounds it.
    let max = if rust_log {
        match tracing_subscriber::filter::LevelFilter::current().into_level() {
            None => log::LevelFilter::Off,
            Some(l) if l == tracing::Level::ERROR => log::LevelFilter::Error,
            Some(l) if l == tracing::Level::WARN => log::LevelFilter::Warn,
            Some(l) if l == tracing::Level::INFO => log::LevelFilter::Info,
            Some(l) if l == tracing::Level::DEBUG => log::LevelFilter::Debug,
            Some(_) => log::LevelFilter::Trace,
        }
    } else {
        level
    };
    let _ = tracing_log::LogTracer::builder().with_max_level(max).init();
    rust_log
}

/// `up`, `down` or `unknown` (not yet probed).
pub fn up_down(up: Option<bool>) -> &'static str {
    match up {
        Some(true) => "up",
        Some(false) => "down",
        None => "unknown",
    }
}

/// A duration in milliseconds for a log line: `0.6ms`, `12ms`, `1500ms`,
/// or `unknown`.
pub fn millis(d: Option<Duration>) -> Millis {
    Millis(d)
}

pub struct Millis(Option<Duration>);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(d) = self.0 else {
            return f.write_str("unknown");
        };
        let ms = d.as_secs_f64() * 1000.0;
        if ms < 10.0 {
            // One decimal, without a trailing `.0`.
            let tenths = (ms * 10.0).round() / 10.0;
            if tenths.fract() == 0.0 {
                write!(f, "{}ms", tenths as u64)
            } else {
                write!(f, "{tenths:.1}ms")
            }
        } else {
            write!(f, "{}ms", ms.round() as u64)
        }
    }
}

/// A message the edge refused or dropped (debug level), with its Call-ID
/// when it has one.
pub fn edge_refused(call_id: Option<&str>, what: fmt::Arguments<'_>) {
    tracing::debug!(target: "sip_ka::edge::proxy", call_id, "edge: {what}");
}

/// The same for a message that did not parse: its Call-ID read from the
/// raw bytes, only when the line is written.
pub fn edge_unparsed(raw: &[u8], what: fmt::Arguments<'_>) {
    tracing::debug!(target: "sip_ka::edge::proxy", call_id = raw_call_id(raw), "edge: {what}");
}

/// The Call-ID of a message that did not parse, for its log line: the
/// value of its first `Call-ID:` (or compact `i:`) header line, if it is
/// printable and of a sane length; `None` otherwise.
pub fn raw_call_id(raw: &[u8]) -> Option<&str> {
    let head = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(raw, |end| &raw[..end]);
    head.split(|&b| b == b'\n').skip(1).find_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = line.iter().position(|&b| b == b':')?;
        let name = line[..colon].trim_ascii();
        if !(name.eq_ignore_ascii_case(b"call-id") || name.eq_ignore_ascii_case(b"i")) {
            return None;
        }
        let value = line[colon + 1..].trim_ascii();
        let ok =
            !value.is_empty() && value.len() <= 256 && value.iter().all(|b| b.is_ascii_graphic());
        ok.then(|| std::str::from_utf8(value).ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn up_down_words() {
        assert_eq!(up_down(Some(true)), "up");
        assert_eq!(up_down(Some(false)), "down");
        assert_eq!(up_down(None), "unknown");
    }

    #[test]
    fn millis_forms() {
        let f = |us: u64| millis(Some(Duration::from_micros(us))).to_string();
        assert_eq!(f(599), "0.6ms");
        assert_eq!(f(599_494 / 1000), "0.6ms");
        assert_eq!(f(2_000), "2ms");
        assert_eq!(f(9_960), "10ms");
        assert_eq!(f(12_400), "12ms");
        assert_eq!(f(1_500_000), "1500ms");
        assert_eq!(f(0), "0ms");
        assert_eq!(millis(None).to_string(), "unknown");
    }

    #[test]
    fn call_id_of_an_unparsed_message() {
        let m = b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP x\r\ncall-ID:  abc@host \r\n\r\nCall-ID: body";
        assert_eq!(raw_call_id(m), Some("abc@host"));
        let compact = b"OPTIONS sip:a SIP/2.0\r\ni: 42\r\n\r\n";
        assert_eq!(raw_call_id(compact), Some("42"));
        // Only in the body, absent, empty, or not printable: none.
        assert_eq!(
            raw_call_id(b"X sip:a SIP/2.0\r\nTo: a\r\n\r\nCall-ID: x"),
            None
        );
        assert_eq!(raw_call_id(b"X sip:a SIP/2.0\r\nCall-ID: \r\n\r\n"), None);
        assert_eq!(
            raw_call_id(b"X sip:a SIP/2.0\r\nCall-ID: a\x1bb\r\n\r\n"),
            None
        );
        // The request line is not a header.
        assert_eq!(raw_call_id(b"i: x\r\n\r\n"), None);
        assert_eq!(raw_call_id(b""), None);
    }

    /// Lines written by a subscriber, for the tests.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Lines {
        type Writer = Lines;
        fn make_writer(&'w self) -> Lines {
            self.clone()
        }
    }

    impl Lines {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn a_live_level_change_takes_effect_on_the_next_event() {
        let out = Lines::default();
        let level = LiveLevel::new(log::LevelFilter::Info);
        let sub = subscriber(LogFormat::Text, out.clone(), level.clone());
        tracing::subscriber::with_default(sub, || {
            // The same call site before and after: a cached interest
            // must not keep the old answer.
            for round in 0..3 {
                tracing::debug!(target: "sip_ka::test", round, "debug line");
                tracing::info!(target: "sip_ka::test", round, "info line");
                level.set(match round {
                    0 => log::LevelFilter::Debug,
                    _ => log::LevelFilter::Warn,
                });
            }
        });
        let text = out.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].contains("INFO") && lines[0].contains("info line round=0"));
        assert!(
            lines[1].contains("DEBUG") && lines[1].contains("debug line round=1"),
            "{text}"
        );
        assert!(lines[2].contains("INFO") && lines[2].contains("info line round=1"));
    }

    #[test]
    fn json_lines_carry_level_target_message_and_fields() {
        let out = Lines::default();
        let sub = subscriber(
            LogFormat::Json,
            out.clone(),
            LiveLevel::new(log::LevelFilter::Info),
        );
        tracing::subscriber::with_default(sub, || {
            tracing::warn!(target: "sip_ka::edge", call_id = %"a\"b@c", "edge: 483 to x");
            tracing::debug!(target: "sip_ka::edge", "not passed");
        });
        let text = out.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let v: serde_json::Value = serde_json::from_str(lines[0]).expect(lines[0]);
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["target"], "sip_ka::edge");
        assert_eq!(v["fields"]["message"], "edge: 483 to x");
        assert_eq!(v["fields"]["call_id"], "a\"b@c");
        assert!(v["timestamp"].is_string());
    }
}
