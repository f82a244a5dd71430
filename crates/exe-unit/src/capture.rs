//! Output capture of a `run` command, per stream: `stream` forwards each chunk
//! as a runtime event and keeps the output for the result, `atEnd` keeps the
//! head, the tail or both and reports it only in the result. Everything is
//! bounded: at most `limit` bytes (default [`DEFAULT_CAPTURE_LIMIT`]) are kept
//! or streamed per command and stream. The requestor chooses `limit`, so it is
//! clamped to [`MAX_CAPTURE_LIMIT`]: a larger one is taken as that maximum (a
//! result carries both streams and must fit one bus frame, and the exe unit
//! must not hold what a requestor asks without bound).

use golem_model::activity::{CaptureFormat, CaptureMode, CapturePart, CommandOutput};

/// Bytes kept (and streamed) per command and stream when the requestor gives no limit.
pub const DEFAULT_CAPTURE_LIMIT: usize = 1024 * 1024;
/// The largest limit a requestor may ask for; larger ones are clamped to it.
/// Two streams of it, even escaped in JSON, stay below the 16 MiB bus frame.
pub const MAX_CAPTURE_LIMIT: usize = 1024 * 1024;

/// The requestor's limit, or the default, clamped to [`MAX_CAPTURE_LIMIT`].
fn capped(limit: Option<usize>) -> usize {
    limit
        .unwrap_or(DEFAULT_CAPTURE_LIMIT)
        .min(MAX_CAPTURE_LIMIT)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    Head(usize),
    Tail(usize),
    HeadTail(usize),
}

/// Collects one stream's output according to its capture mode.
#[derive(Debug)]
pub struct OutputCapture {
    keep: Keep,
    format: CaptureFormat,
    streaming: bool,
    head: Vec<u8>,
    /// For tail modes: the last bytes seen, trimmed to the limit now and then.
    tail: Vec<u8>,
    /// Total bytes seen.
    seen: usize,
    /// Bytes of an incomplete UTF-8 character held back from the last event.
    pending_utf8: Vec<u8>,
}

impl OutputCapture {
    /// `None` (no capture asked for this stream) keeps the head up to the default limit.
    pub fn new(mode: Option<&CaptureMode>) -> OutputCapture {
        let (keep, format, streaming) = match mode {
            None => (Keep::Head(DEFAULT_CAPTURE_LIMIT), CaptureFormat::Str, false),
            Some(CaptureMode::Stream { limit, format }) => {
                (Keep::Head(capped(*limit)), format.unwrap_or_default(), true)
            }
            Some(CaptureMode::AtEnd { part, format }) => {
                let size = |n: &Option<usize>| capped(*n);
                let keep = match part {
                    None => Keep::Head(DEFAULT_CAPTURE_LIMIT),
                    Some(CapturePart::Head(n)) => Keep::Head(size(n)),
                    Some(CapturePart::Tail(n)) => Keep::Tail(size(n)),
                    Some(CapturePart::HeadTail(n)) => Keep::HeadTail(size(n)),
                };
                (keep, format.unwrap_or_default(), false)
            }
        };
        OutputCapture {
            keep,
            format,
            streaming,
            head: Vec::new(),
            tail: Vec::new(),
            seen: 0,
            pending_utf8: Vec::new(),
        }
    }

    /// Take in a chunk; for `stream` capture returns what to send as an event
    /// (nothing once the limit is reached).
    pub fn push(&mut self, chunk: &[u8]) -> Option<CommandOutput> {
        self.seen += chunk.len();
        let (head_limit, tail_limit) = match self.keep {
            Keep::Head(n) => (n, 0),
            Keep::Tail(n) => (0, n),
            Keep::HeadTail(n) => (n / 2, n - n / 2),
        };
        let to_head = head_limit.saturating_sub(self.head.len()).min(chunk.len());
        self.head.extend_from_slice(&chunk[..to_head]);
        let rest = &chunk[to_head..];
        if tail_limit > 0 && !rest.is_empty() {
            self.tail.extend_from_slice(rest);
            if self.tail.len() > tail_limit.saturating_mul(2).max(4096) {
                let excess = self.tail.len() - tail_limit;
                self.tail.drain(..excess);
            }
        }
        if !self.streaming || to_head == 0 {
            return None;
        }
        let streamed = &chunk[..to_head];
        match self.format {
            CaptureFormat::Bin => Some(CommandOutput::Bin(streamed.to_vec())),
            CaptureFormat::Str => {
                self.pending_utf8.extend_from_slice(streamed);
                let text = take_complete_utf8(&mut self.pending_utf8);
                (!text.is_empty()).then_some(CommandOutput::Str(text))
            }
        }
    }

    /// For `stream` capture: the held-back bytes of an incomplete character, at the end.
    pub fn flush_stream(&mut self) -> Option<CommandOutput> {
        if !self.streaming || self.pending_utf8.is_empty() {
            return None;
        }
        let text = String::from_utf8_lossy(&self.pending_utf8).into_owned();
        self.pending_utf8.clear();
        Some(CommandOutput::Str(text))
    }

    /// The output for the command's result.
    pub fn finish(mut self) -> CommandOutput {
        let tail_limit = match self.keep {
            Keep::Head(_) => 0,
            Keep::Tail(n) => n,
            Keep::HeadTail(n) => n - n / 2,
        };
        if self.tail.len() > tail_limit {
            let excess = self.tail.len() - tail_limit;
            self.tail.drain(..excess);
        }
        let mut bytes = self.head;
        bytes.append(&mut self.tail);
        match self.format {
            CaptureFormat::Str => CommandOutput::Str(String::from_utf8_lossy(&bytes).into_owned()),
            CaptureFormat::Bin => CommandOutput::Bin(bytes),
        }
    }

    pub fn bytes_seen(&self) -> usize {
        self.seen
    }
}

/// Remove and return the longest prefix that is complete UTF-8 (invalid bytes
/// become U+FFFD); an incomplete character at the end stays in `buffer`.
fn take_complete_utf8(buffer: &mut Vec<u8>) -> String {
    let mut text = String::new();
    let mut start = 0;
    loop {
        match std::str::from_utf8(&buffer[start..]) {
            Ok(valid) => {
                text.push_str(valid);
                start = buffer.len();
                break;
            }
            Err(error) => {
                let valid_end = start + error.valid_up_to();
                text.push_str(&String::from_utf8_lossy(&buffer[start..valid_end]));
                match error.error_len() {
                    Some(bad) => {
                        text.push('\u{FFFD}');
                        start = valid_end + bad;
                    }
                    None => {
                        start = valid_end;
                        break;
                    }
                }
            }
        }
    }
    buffer.drain(..start);
    text
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn at_end(part: CapturePart) -> CaptureMode {
        CaptureMode::AtEnd {
            part: Some(part),
            format: None,
        }
    }

    fn text(output: CommandOutput) -> String {
        match output {
            CommandOutput::Str(text) => text,
            CommandOutput::Bin(bytes) => panic!("expected text, got {bytes:?}"),
        }
    }

    #[test]
    fn at_end_head_tail_and_both() {
        let feed = |mode: CaptureMode| {
            let mut capture = OutputCapture::new(Some(&mode));
            for chunk in [&b"0123"[..], b"45678", b"9"] {
                assert_eq!(capture.push(chunk), None);
            }
            text(capture.finish())
        };
        assert_eq!(feed(at_end(CapturePart::Head(Some(3)))), "012");
        assert_eq!(feed(at_end(CapturePart::Tail(Some(3)))), "789");
        assert_eq!(feed(at_end(CapturePart::HeadTail(Some(4)))), "0189");
        assert_eq!(feed(at_end(CapturePart::HeadTail(Some(100)))), "0123456789");
        assert_eq!(feed(at_end(CapturePart::Tail(None))), "0123456789");
    }

    #[test]
    fn tail_stays_bounded_on_long_output() {
        let mut capture = OutputCapture::new(Some(&at_end(CapturePart::Tail(Some(10)))));
        for index in 0..100_000u32 {
            capture.push(format!("{index:08}").as_bytes());
            assert!(capture.tail.len() <= 4096 + 8);
        }
        assert_eq!(text(capture.finish()), "9800099999");
        assert_eq!(
            text(OutputCapture::new(None).finish()),
            "",
            "no output is an empty string"
        );
    }

    #[test]
    fn stream_forwards_chunks_up_to_the_limit() {
        let mut capture = OutputCapture::new(Some(&CaptureMode::Stream {
            limit: Some(6),
            format: None,
        }));
        assert_eq!(
            capture.push(b"abcd"),
            Some(CommandOutput::Str("abcd".into()))
        );
        assert_eq!(capture.push(b"efgh"), Some(CommandOutput::Str("ef".into())));
        assert_eq!(capture.push(b"ijk"), None);
        assert_eq!(capture.bytes_seen(), 11);
        assert_eq!(text(capture.finish()), "abcdef");
    }

    #[test]
    fn stream_keeps_utf8_characters_whole() {
        let mut capture = OutputCapture::new(Some(&CaptureMode::Stream {
            limit: None,
            format: Some(CaptureFormat::Str),
        }));
        let bytes = "zażółć".as_bytes();
        // split inside "ż" (2 bytes)
        assert_eq!(
            capture.push(&bytes[..3]),
            Some(CommandOutput::Str("za".into()))
        );
        assert_eq!(
            capture.push(&bytes[3..]),
            Some(CommandOutput::Str("żółć".into()))
        );
        assert_eq!(
            capture.push(&[0xff, b'x']),
            Some(CommandOutput::Str("\u{FFFD}x".into()))
        );
        assert_eq!(capture.push(&[0xc5]), None);
        assert_eq!(
            capture.flush_stream(),
            Some(CommandOutput::Str("\u{FFFD}".into()))
        );
    }

    /// The exploit: a requestor asks for a capture limit of usize::MAX and
    /// the payload prints without end; what is kept stays at the maximum.
    #[test]
    fn requestor_limits_are_clamped() {
        for mode in [
            CaptureMode::Stream {
                limit: Some(usize::MAX),
                format: None,
            },
            at_end(CapturePart::Head(Some(usize::MAX))),
            at_end(CapturePart::Tail(Some(usize::MAX))),
            at_end(CapturePart::HeadTail(Some(usize::MAX))),
        ] {
            let mut capture = OutputCapture::new(Some(&mode));
            let chunk = vec![b'x'; 64 * 1024];
            for _ in 0..64 {
                capture.push(&chunk);
                assert!(
                    capture.head.len() + capture.tail.len() <= 2 * MAX_CAPTURE_LIMIT + 64 * 1024
                );
            }
            assert_eq!(text(capture.finish()).len(), MAX_CAPTURE_LIMIT, "{mode:?}");
        }
    }

    #[test]
    fn binary_format() {
        let mut capture = OutputCapture::new(Some(&CaptureMode::Stream {
            limit: None,
            format: Some(CaptureFormat::Bin),
        }));
        assert_eq!(
            capture.push(&[0, 255]),
            Some(CommandOutput::Bin(vec![0, 255]))
        );
        assert_eq!(capture.finish(), CommandOutput::Bin(vec![0, 255]));
    }
}
