//! Structured JSON logs that can never carry a card number.
//!
//! Every formatted line passes through [`redact_pans`](pay_core::redact::redact_pans) before it
//! is written, so a PAN logged by mistake anywhere in the process (including dependencies)
//! appears only as BIN + last four.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use tracing_subscriber::fmt::MakeWriter;

/// A writer that masks PAN-like digit runs in whatever is written through it.
pub struct RedactingWriter<W: Write> {
    inner: W,
    buf: Vec<u8>,
}

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return self.inner.flush();
        }
        let text = String::from_utf8_lossy(&self.buf);
        let clean = pay_core::redact::redact_pans(&text);
        self.inner.write_all(clean.as_bytes())?;
        self.buf.clear();
        self.inner.flush()
    }
}

impl<W: Write> Drop for RedactingWriter<W> {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// Where log lines go: stdout, or a shared in-memory buffer (tests and the simulator scan it).
#[derive(Clone)]
pub enum LogSink {
    /// Standard output.
    Stdout,
    /// A shared buffer.
    Buffer(Arc<Mutex<Vec<u8>>>),
    /// A file (appended).
    File(Arc<Mutex<std::fs::File>>),
}

/// A [`MakeWriter`] producing redacting writers over a [`LogSink`].
#[derive(Clone)]
pub struct RedactingMakeWriter {
    sink: LogSink,
}

impl RedactingMakeWriter {
    /// Writers to `sink`.
    pub fn new(sink: LogSink) -> RedactingMakeWriter {
        RedactingMakeWriter { sink }
    }
}

/// Writes one log line to a sink.
pub struct SinkWriter(LogSink);

impl Write for SinkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match &self.0 {
            LogSink::Stdout => io::stdout().write(data),
            LogSink::Buffer(b) => {
                match b.lock() {
                    Ok(mut g) => g.extend_from_slice(data),
                    Err(p) => p.into_inner().extend_from_slice(data),
                }
                Ok(data.len())
            }
            LogSink::File(f) => match f.lock() {
                Ok(mut g) => g.write(data),
                Err(p) => p.into_inner().write(data),
            },
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match &self.0 {
            LogSink::Stdout => io::stdout().flush(),
            _ => Ok(()),
        }
    }
}

impl<'a> MakeWriter<'a> for RedactingMakeWriter {
    type Writer = RedactingWriter<SinkWriter>;
    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter {
            inner: SinkWriter(self.sink.clone()),
            buf: Vec::with_capacity(256),
        }
    }
}

/// Installs the process-wide JSON log subscriber with redaction. `filter` is an
/// `EnvFilter` directive such as `info` or `pay_api=debug,info`.
pub fn init_json(sink: LogSink, filter: &str) -> Result<(), String> {
    let filter =
        tracing_subscriber::EnvFilter::try_new(filter).map_err(|e| format!("bad log filter `{filter}`: {e}"))?;
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_target(true)
        .with_writer(RedactingMakeWriter::new(sink))
        .try_init()
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_logged_pan_is_masked() {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let make = RedactingMakeWriter::new(LogSink::Buffer(buf.clone()));
        {
            let mut w = make.make_writer();
            w.write_all(b"{\"msg\":\"oops card 4242424242424242 logged\"}\n")
                .unwrap();
        }
        let out = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        assert!(out.contains("424242******4242"), "{out}");
        assert!(!out.contains("4242424242424242"));
    }
}
