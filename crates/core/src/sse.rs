//! The one server-sent-events parser of the platform: provider and MCP responses in the
//! agents, the platform's own streams in the CLI, the benchmarks and the tests.
//!
//! Bytes go in as they arrive ([`SseParser::push`]); whole events come out
//! ([`SseParser::next_event`], or [`SseParser::feed`] for both at once). Lines may end in LF,
//! CRLF or CR and may be split anywhere across chunks. The `event:`, `data:` and `id:` fields
//! are read; `retry:` is skipped, comments only counted. One event (its pending line plus its
//! data) may not exceed the parser's limit, so a peer can never make it hold unbounded memory.

/// One dispatched event. `event` is empty when the stream named none (the SSE default type
/// "message"); `id` is empty when the event carried no `id:` field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    pub id: String,
    pub event: String,
    pub data: String,
}

impl SseEvent {
    /// An unnamed event without an id: what a provider's stream mostly sends.
    pub fn data(data: impl Into<String>) -> Self {
        SseEvent { data: data.into(), ..Default::default() }
    }

    /// A named event without an id.
    pub fn named(event: impl Into<String>, data: impl Into<String>) -> Self {
        SseEvent { event: event.into(), data: data.into(), ..Default::default() }
    }
}

/// Why the stream could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseError {
    /// One event grew past the limit.
    TooLarge(usize),
    /// An event's data is not UTF-8.
    NotUtf8,
}

impl std::error::Error for SseError {}

impl std::fmt::Display for SseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SseError::TooLarge(max) => write!(f, "an event is larger than {max} bytes"),
            SseError::NotUtf8 => f.write_str("an event's data is not UTF-8"),
        }
    }
}

/// Buffer capacity kept between events; more is released once a large event is consumed.
const KEEP_CAPACITY: usize = 16 * 1024;

#[derive(Debug)]
pub struct SseParser {
    /// Bytes received but not yet consumed as complete lines.
    buf: Vec<u8>,
    /// Where the unconsumed part of `buf` starts.
    pos: usize,
    /// The last line ended in CR: a LF at the start of the next chunk belongs to it.
    after_cr: bool,
    id: String,
    event: String,
    data: Vec<u8>,
    /// Comment lines seen (a server's keep-alives).
    comments: usize,
    /// Whether a `data:` field was seen for the pending event (an empty one still counts).
    has_data: bool,
    max: usize,
}

impl SseParser {
    /// A parser that fails once one event exceeds `max` bytes.
    pub fn new(max: usize) -> Self {
        SseParser {
            buf: Vec::new(),
            pos: 0,
            after_cr: false,
            id: String::new(),
            event: String::new(),
            data: Vec::new(),
            comments: 0,
            has_data: false,
            max,
        }
    }

    /// Adds received bytes. Call [`SseParser::next_event`] until it returns `None` before
    /// pushing more: that is where the size limit is checked.
    pub fn push(&mut self, chunk: &[u8]) {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
            // A large event is over: do not keep its buffer for the rest of a long stream.
            if self.buf.capacity() > KEEP_CAPACITY && self.buf.len() < KEEP_CAPACITY / 2 {
                self.buf.shrink_to(KEEP_CAPACITY / 2);
            }
        }
        self.buf.extend_from_slice(chunk);
    }

    /// Adds received bytes and returns every event they complete.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        self.push(chunk);
        let mut out = Vec::new();
        while let Some(event) = self.next_event()? {
            out.push(event);
        }
        Ok(out)
    }

    /// How many comment lines (keep-alives) the stream has held so far.
    pub fn comments(&self) -> usize {
        self.comments
    }

    /// The next complete event, if the bytes received so far hold one.
    pub fn next_event(&mut self) -> Result<Option<SseEvent>, SseError> {
        loop {
            let rest = &self.buf[self.pos..];
            if self.after_cr && !rest.is_empty() {
                self.after_cr = false;
                if rest[0] == b'\n' {
                    self.pos += 1;
                    continue;
                }
            }
            let Some(end) = rest.iter().position(|b| *b == b'\n' || *b == b'\r') else {
                if self.buf.len() - self.pos + self.data.len() > self.max {
                    return Err(SseError::TooLarge(self.max));
                }
                return Ok(None);
            };
            let start = self.pos;
            self.after_cr = rest[end] == b'\r';
            self.pos += end + 1;
            if end == 0 {
                if let Some(event) = self.dispatch()? {
                    return Ok(Some(event));
                }
                continue;
            }
            self.field(start, start + end)?;
        }
    }

    fn field(&mut self, start: usize, end: usize) -> Result<(), SseError> {
        let line = &self.buf[start..end];
        if line[0] == b':' {
            self.comments += 1;
            return Ok(());
        }
        let (name, mut value) = match line.iter().position(|b| *b == b':') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (line, &line[line.len()..]),
        };
        if value.first() == Some(&b' ') {
            value = &value[1..];
        }
        match name {
            b"data" => {
                if self.data.len() + value.len() + 1 > self.max {
                    return Err(SseError::TooLarge(self.max));
                }
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => {
                self.event = std::str::from_utf8(value).map_err(|_| SseError::NotUtf8)?.to_string();
            }
            // an id with a NUL is ignored, as the standard says
            b"id" if !value.contains(&0) => {
                self.id = std::str::from_utf8(value).map_err(|_| SseError::NotUtf8)?.to_string();
            }
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self) -> Result<Option<SseEvent>, SseError> {
        let event = std::mem::take(&mut self.event);
        let id = std::mem::take(&mut self.id);
        if !std::mem::take(&mut self.has_data) {
            return Ok(None);
        }
        let data = String::from_utf8(std::mem::take(&mut self.data)).map_err(|_| SseError::NotUtf8)?;
        Ok(Some(SseEvent { id, event, data }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_pieces(input: &str, piece: usize) -> Vec<SseEvent> {
        let mut p = SseParser::new(1 << 20);
        let mut out = Vec::new();
        for chunk in input.as_bytes().chunks(piece) {
            p.push(chunk);
            while let Some(e) = p.next_event().unwrap() {
                out.push(e);
            }
        }
        out
    }

    fn ev(event: &str, data: &str) -> SseEvent {
        SseEvent::named(event, data)
    }

    #[test]
    fn events_come_out_whole_however_the_bytes_are_split() {
        let cases = [
            "event: a\ndata: {\"x\":1}\n\n: comment\ndata: two\ndata: lines\n\nevent: b\ndata:\n\n",
            "event: a\r\ndata: {\"x\":1}\r\n\r\n: comment\r\ndata: two\r\ndata: lines\r\n\r\nevent: b\r\ndata:\r\n\r\n",
            "event: a\rdata: {\"x\":1}\r\r: comment\rdata: two\rdata: lines\r\revent: b\rdata:\r\r",
        ];
        let want = vec![ev("a", "{\"x\":1}"), ev("", "two\nlines"), ev("b", "")];
        for input in cases {
            for piece in [1, 2, 3, 7, 1000] {
                assert_eq!(parse_in_pieces(input, piece), want, "{input:?} in pieces of {piece}");
            }
        }
    }

    #[test]
    fn ids_belong_to_their_event_and_comments_are_counted() {
        let input = "event:a\ndata:{\"x\":1}\nid: 7\nretry: 10\n\n: keep-alive\n\ndata:two\ndata:lines\n\nid:9\nevent:b\ndata\n\n";
        let want = vec![
            SseEvent { id: "7".into(), ..ev("a", "{\"x\":1}") },
            ev("", "two\nlines"),
            SseEvent { id: "9".into(), ..ev("b", "") },
        ];
        for piece in [1, 2, 3, 7, 1000] {
            let mut p = SseParser::new(1 << 20);
            let mut got = Vec::new();
            for chunk in input.as_bytes().chunks(piece) {
                got.extend(p.feed(chunk).unwrap());
            }
            assert_eq!(got, want, "in pieces of {piece}");
            assert_eq!(p.comments(), 1);
        }
    }

    #[test]
    fn an_event_without_data_is_not_dispatched_and_a_trailing_partial_one_waits() {
        assert_eq!(parse_in_pieces("event: ping\n\ndata: [DONE]\n\ndata: cut", 4), vec![ev("", "[DONE]")]);
    }

    #[test]
    fn an_event_over_the_limit_fails_instead_of_growing() {
        let mut p = SseParser::new(64);
        let line = format!("data: {}", "x".repeat(100));
        let r = line.as_bytes().chunks(10).try_for_each(|c| {
            p.push(c);
            p.next_event().map(|_| ())
        });
        assert_eq!(r, Err(SseError::TooLarge(64)));

        let mut p = SseParser::new(64);
        let many = format!("data: {}\ndata: {}\n\n", "y".repeat(40), "z".repeat(40));
        p.push(many.as_bytes());
        let r = p.next_event();
        assert_eq!(r, Err(SseError::TooLarge(64)));

        let mut p = SseParser::new(64);
        let small = "data: ok\n\n".repeat(20);
        p.push(small.as_bytes());
        let mut n = 0;
        while p.next_event().unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, 20, "many small events in one big chunk are fine");
    }

    #[test]
    fn bad_utf8_is_an_error_not_a_panic() {
        let mut p = SseParser::new(64);
        p.push(b"data: \xff\xfe\n\n");
        assert_eq!(p.next_event(), Err(SseError::NotUtf8));
    }
}
