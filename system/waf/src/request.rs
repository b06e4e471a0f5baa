//! The request as the engine sees it: the raw request plus every collection the rules inspect
//! (arguments, cookies, headers, multipart parts, XML text), decoded once.
//!
//! Parameters are decoded the way the public API decodes them: `application/x-www-form-urlencoded`
//! query strings and bodies are split on `&` and `=` and percent-decoded with `+` as space
//! (the API's `form_urlencoded`), and names keep their bracket notation (`metadata[note]`);
//! JSON bodies are flattened to the same bracket names (`card[number]`, `expand[0]`). The WAF
//! keeps the decoded bytes as they are where the API would replace invalid UTF-8 with U+FFFD,
//! so it sees at least as much as the API does.

use crate::kept;
use crate::transform::{url_decode, url_decode_into};

/// An HTTP request to inspect. Borrowed, so inspecting costs no copy of the body.
#[derive(Debug, Clone)]
pub struct HttpRequest<'a> {
    /// Method as sent (`GET`).
    pub method: &'a str,
    /// Request target as sent: path and query, percent-encoded.
    pub target: &'a str,
    /// Protocol version (`HTTP/1.1`).
    pub version: &'a str,
    /// Header fields in order, names as sent.
    pub headers: Vec<(&'a str, &'a [u8])>,
    /// The body (empty when none).
    pub body: &'a [u8],
}

/// What a body was parsed as (ModSecurity's `REQBODY_PROCESSOR`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body or an unknown type.
    None,
    /// `application/x-www-form-urlencoded`.
    UrlEncoded,
    /// `application/json` (and `+json`).
    Json,
    /// `multipart/form-data`.
    Multipart,
    /// XML.
    Xml,
}

impl BodyKind {
    /// ModSecurity's name for the processor.
    pub fn name(self) -> &'static str {
        match self {
            BodyKind::None => "",
            BodyKind::UrlEncoded => "URLENCODED",
            BodyKind::Json => "JSON",
            BodyKind::Multipart => "MULTIPART",
            BodyKind::Xml => "XML",
        }
    }
}

/// The collections a rule can inspect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Coll {
    /// Query-string argument values.
    ArgsGet,
    /// Query-string argument names.
    ArgsGetNames,
    /// Body argument values.
    ArgsPost,
    /// Body argument names.
    ArgsPostNames,
    /// Cookie values.
    Cookies,
    /// Cookie names.
    CookiesNames,
    /// Header values (keyed by lower-case name).
    Headers,
    /// Header names.
    HeadersNames,
    /// Path without the query.
    Filename,
    /// Last path segment.
    Basename,
    /// Path and query as sent.
    Uri,
    /// The whole request line.
    Line,
    /// The query string.
    QueryString,
    /// The raw body.
    Body,
    /// Text nodes of an XML body.
    Xml,
    /// File names of multipart file parts.
    Files,
    /// Field names of multipart file parts.
    FilesNames,
    /// The method.
    Method,
    /// The protocol version.
    Protocol,
    /// Header lines of multipart parts.
    MultipartPartHeaders,
}

impl Coll {
    /// Number of collections (`coll as usize` is below it).
    pub const COUNT: usize = Coll::MultipartPartHeaders as usize + 1;

    /// Every collection, in `coll as usize` order (`every_collection_in_index_order`).
    pub const ALL: [Coll; Coll::COUNT] = [
        Coll::ArgsGet,
        Coll::ArgsGetNames,
        Coll::ArgsPost,
        Coll::ArgsPostNames,
        Coll::Cookies,
        Coll::CookiesNames,
        Coll::Headers,
        Coll::HeadersNames,
        Coll::Filename,
        Coll::Basename,
        Coll::Uri,
        Coll::Line,
        Coll::QueryString,
        Coll::Body,
        Coll::Xml,
        Coll::Files,
        Coll::FilesNames,
        Coll::Method,
        Coll::Protocol,
        Coll::MultipartPartHeaders,
    ];
}

/// One value of a collection. Its bytes are in the [`Parsed`] it belongs to: read them with
/// [`Parsed::name`] and [`Parsed::value`].
#[derive(Debug, Clone, Copy)]
pub struct Item {
    /// The collection.
    pub coll: Coll,
    /// Where its key (argument or header name, for selectors and exclusions) is in the buffer.
    name: (usize, usize),
    /// Where its value is in the buffer.
    value: (usize, usize),
}

/// A request broken into collections.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// All values, grouped by collection in [`Coll`] order.
    pub items: Vec<Item>,
    /// What the body was parsed as.
    pub body_kind: BodyKind,
    /// The body could not be parsed as its content type says.
    pub body_error: bool,
    /// Number of arguments (query and body).
    pub arg_count: usize,
    /// Total length of argument names and values.
    pub args_combined_size: usize,
    /// Path without the query, as sent.
    pub path: String,
    /// The bytes of every name and value, which items locate (one allocation instead of two
    /// to four per item; an argument name's item shares its bytes with the value's name).
    buf: Vec<u8>,
}

/// The items grouped by collection in [`Coll`] order, each collection's in the order given: a
/// stable counting sort (the items arrive in a few interleaved runs, which a comparison sort
/// spends more on). `grouping_equals_a_stable_sort` checks it.
#[cfg(test)]
fn group_by_coll(items: Vec<Item>) -> Vec<Item> {
    group_into(&items, Vec::new())
}

/// [`group_by_coll`] into `out` (emptied first, its capacity reused).
fn group_into(items: &[Item], mut out: Vec<Item>) -> Vec<Item> {
    let mut start = [0usize; Coll::COUNT + 1];
    for i in items {
        start[i.coll as usize + 1] += 1;
    }
    for c in 0..Coll::COUNT {
        start[c + 1] += start[c];
    }
    out.clear();
    out.resize(
        items.len(),
        Item {
            coll: Coll::ArgsGet,
            name: (0, 0),
            value: (0, 0),
        },
    );
    for &i in items {
        let at = &mut start[i.coll as usize];
        out[*at] = i;
        *at += 1;
    }
    out
}

/// Most item slots and buffer bytes a thread keeps between parses (see [`ParseBuffers`]).
const MAX_KEPT_ITEMS: usize = MAX_ITEMS;
const MAX_KEPT_BUF: usize = 1 << 20;

/// The vectors a parse fills (its items as collected, grouped, and its byte buffer), kept per
/// thread when [`Parsed::recycle`] gives them back, so that the next parse on the thread does
/// not allocate and grow them (`recycled_buffers_parse_the_same`).
#[derive(Default)]
struct ParseBuffers {
    collected: Vec<Item>,
    grouped: Vec<Item>,
    buf: Vec<u8>,
}

thread_local! {
    static PARSE_BUFFERS: std::cell::RefCell<ParseBuffers> = std::cell::RefCell::new(ParseBuffers::default());
}

impl ParseBuffers {
    /// This thread's buffers, each empty.
    fn take() -> ParseBuffers {
        kept::take(&PARSE_BUFFERS)
    }

    /// Keeps the buffers (emptied; a too large one is freed) for the next parse on this thread.
    fn give_back(mut self) {
        kept::emptied(&mut self.collected, MAX_KEPT_ITEMS);
        kept::emptied(&mut self.grouped, MAX_KEPT_ITEMS);
        kept::emptied(&mut self.buf, MAX_KEPT_BUF);
        kept::keep(&PARSE_BUFFERS, self);
    }
}

/// Collects items and their bytes.
struct Items {
    items: Vec<Item>,
    buf: Vec<u8>,
}

impl Items {
    /// Appends bytes to the buffer; where they are.
    fn bytes(&mut self, b: &[u8]) -> (usize, usize) {
        let start = self.buf.len();
        self.buf.extend_from_slice(b);
        (start, self.buf.len())
    }

    /// Adds an item whose name and value were appended, unless the item limit is reached.
    fn push(&mut self, coll: Coll, name: (usize, usize), value: (usize, usize)) -> bool {
        if self.items.len() < MAX_ITEMS {
            self.items.push(Item { coll, name, value });
            true
        } else {
            false
        }
    }

    /// Adds an item with these bytes (nothing is appended beyond the item limit).
    fn add(&mut self, coll: Coll, name: &[u8], value: &[u8]) {
        if self.items.len() < MAX_ITEMS {
            let (n, v) = (self.bytes(name), self.bytes(value));
            self.push(coll, n, v);
        }
    }

    /// Adds an argument: its value item and its name item (which shares the name's bytes).
    fn arg(&mut self, values: Coll, names: Coll, name: (usize, usize), value: (usize, usize)) {
        self.push(values, name, value);
        self.push(names, name, name);
    }

    /// Splits a form-encoded string into arguments, decoded into the buffer as
    /// [`split_form`] decodes them; their number and total decoded length.
    fn form(&mut self, s: &[u8], values: Coll, names: Coll) -> (usize, usize) {
        let (mut count, mut combined) = (0, 0);
        for p in s.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
            let mark = self.buf.len();
            let (k, v) = match p.iter().position(|&b| b == b'=') {
                Some(i) => (&p[..i], &p[i + 1..]),
                None => (p, &b""[..]),
            };
            url_decode_into(k, false, &mut self.buf);
            let name = (mark, self.buf.len());
            url_decode_into(v, false, &mut self.buf);
            let value = (name.1, self.buf.len());
            count += 1;
            combined += self.buf.len() - mark;
            if self.items.len() < MAX_ITEMS {
                self.arg(values, names, name, value);
            } else {
                self.buf.truncate(mark);
            }
        }
        (count, combined)
    }
}

/// Most arguments and JSON nodes read from one request, so a hostile body cannot make the
/// engine do unbounded work (the size limits refuse such requests anyway).
const MAX_ITEMS: usize = 4096;

impl Parsed {
    /// Breaks `req` into collections.
    pub fn new(req: &HttpRequest<'_>) -> Parsed {
        // Vectors an earlier parse on this thread gave back ([`Parsed::recycle`]), if any.
        let ParseBuffers {
            collected: mut items_vec,
            grouped,
            mut buf,
        } = ParseBuffers::take();
        items_vec.reserve(32);
        // Query and body twice (arguments, then raw), headers' names twice, the rest.
        buf.reserve(
            req.target.len() * 4
                + req.body.len() * 2
                + req.headers.iter().map(|(n, v)| 2 * n.len() + v.len()).sum::<usize>()
                + 64,
        );
        let mut items = Items { items: items_vec, buf };
        let (path, query) = match req.target.find('?') {
            Some(i) => (&req.target[..i], &req.target[i + 1..]),
            None => (req.target, ""),
        };
        let (mut arg_count, mut combined) = items.form(query.as_bytes(), Coll::ArgsGet, Coll::ArgsGetNames);
        let header = |name: &str| -> Option<&[u8]> {
            req.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| *v)
        };
        let ct = header("content-type")
            .map(|v| String::from_utf8_lossy(v).to_ascii_lowercase())
            .unwrap_or_default();
        let mut body_kind = BodyKind::None;
        let mut body_error = false;
        let mut xml = Vec::new();
        let mut files: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut part_headers: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        if !req.body.is_empty() {
            let mime = ct.split(';').next().unwrap_or("").trim();
            if mime == "application/x-www-form-urlencoded" || (mime.is_empty() && looks_like_form(req.body)) {
                body_kind = BodyKind::UrlEncoded;
                let (n, len) = items.form(req.body, Coll::ArgsPost, Coll::ArgsPostNames);
                arg_count += n;
                combined += len;
            } else if mime == "application/json" || mime.ends_with("+json") {
                body_kind = BodyKind::Json;
                match serde_json::from_slice::<serde_json::Value>(req.body) {
                    Ok(v) => {
                        let mut out = Vec::new();
                        flatten_json(&v, String::new(), 0, &mut out);
                        for (k, v) in out {
                            arg_count += 1;
                            combined += k.len() + v.len();
                            if items.items.len() < MAX_ITEMS {
                                let (name, value) = (items.bytes(k.as_bytes()), items.bytes(v.as_bytes()));
                                items.arg(Coll::ArgsPost, Coll::ArgsPostNames, name, value);
                            }
                        }
                    }
                    Err(_) => body_error = true,
                }
            } else if mime == "multipart/form-data" || mime == "multipart/related" || mime == "multipart/mixed" {
                body_kind = BodyKind::Multipart;
                match boundary(&ct, header("content-type").unwrap_or_default()) {
                    Some(b) => {
                        for part in split_multipart(req.body, &b) {
                            for h in &part.headers {
                                part_headers.push((part.name.clone(), h.clone()));
                            }
                            match part.filename {
                                Some(f) => files.push((part.name.clone(), f)),
                                None => {
                                    arg_count += 1;
                                    combined += part.name.len() + part.body.len();
                                    if items.items.len() < MAX_ITEMS {
                                        let name = items.bytes(&part.name);
                                        let value = items.bytes(&part.body);
                                        items.arg(Coll::ArgsPost, Coll::ArgsPostNames, name, value);
                                    }
                                }
                            }
                        }
                    }
                    None => body_error = true,
                }
            } else if mime.contains("xml") {
                body_kind = BodyKind::Xml;
                xml = xml_text(req.body);
            }
        }
        for (name, value) in &req.headers {
            if name.eq_ignore_ascii_case("cookie") {
                for c in value.split(|&b| b == b';') {
                    let c = trim(c);
                    if c.is_empty() {
                        continue;
                    }
                    let (k, v) = match c.iter().position(|&b| b == b'=') {
                        Some(i) => (&c[..i], &c[i + 1..]),
                        None => (c, &b""[..]),
                    };
                    if items.items.len() < MAX_ITEMS {
                        let (name, value) = (items.bytes(k), items.bytes(v));
                        items.arg(Coll::Cookies, Coll::CookiesNames, name, value);
                    }
                }
            }
        }
        for (name, value) in &req.headers {
            if items.items.len() < MAX_ITEMS {
                let lower = items.bytes(name.as_bytes());
                items.buf[lower.0..].make_ascii_lowercase();
                let value = items.bytes(value);
                items.push(Coll::Headers, lower, value);
                let original = items.bytes(name.as_bytes());
                items.push(Coll::HeadersNames, lower, original);
            }
        }
        // As in ModSecurity: REQUEST_FILENAME is the percent-decoded path the server routes on
        // (`+` is a plus in a path), REQUEST_BASENAME the last segment of the path as sent.
        items.add(Coll::Filename, b"", &percent_decode(path.as_bytes()));
        let base = path.rsplit('/').next().unwrap_or("");
        items.add(Coll::Basename, b"", base.as_bytes());
        items.add(Coll::Uri, b"", req.target.as_bytes());
        if items.items.len() < MAX_ITEMS {
            let start = items.buf.len();
            for (i, part) in [req.method, req.target, req.version].iter().enumerate() {
                if i > 0 {
                    items.buf.push(b' ');
                }
                items.buf.extend_from_slice(part.as_bytes());
            }
            let line = (start, items.buf.len());
            items.push(Coll::Line, (start, start), line);
        }
        items.add(Coll::QueryString, b"", query.as_bytes());
        if !req.body.is_empty() {
            items.add(Coll::Body, b"", req.body);
        }
        for t in &xml {
            items.add(Coll::Xml, b"xml", t);
        }
        for (field, file) in &files {
            if items.items.len() < MAX_ITEMS {
                let (name, value) = (items.bytes(field), items.bytes(file));
                items.arg(Coll::Files, Coll::FilesNames, name, value);
            }
        }
        items.add(Coll::Method, b"", req.method.as_bytes());
        items.add(Coll::Protocol, b"", req.version.as_bytes());
        for (n, h) in &part_headers {
            items.add(Coll::MultipartPartHeaders, n, h);
        }
        let Items { items: collected, buf } = items;
        let items = group_into(&collected, grouped);
        // The collected items' vector goes back for the next parse; the grouped one and the
        // buffer go with the result (and come back with `recycle`).
        ParseBuffers {
            collected,
            grouped: Vec::new(),
            buf: Vec::new(),
        }
        .give_back();
        Parsed {
            items,
            body_kind,
            body_error,
            arg_count,
            args_combined_size: combined,
            path: path.to_owned(),
            buf,
        }
    }

    /// Gives this parse's vectors back to the thread for its next parse (dropping a
    /// [`Parsed`] frees them instead).
    pub fn recycle(self) {
        let mut b = ParseBuffers::take();
        b.grouped = self.items;
        b.buf = self.buf;
        b.give_back();
    }

    /// An item's key (argument or header name).
    pub fn name(&self, item: &Item) -> &[u8] {
        self.buf.get(item.name.0..item.name.1).unwrap_or_default()
    }

    /// An item's value.
    pub fn value(&self, item: &Item) -> &[u8] {
        self.buf.get(item.value.0..item.value.1).unwrap_or_default()
    }

    /// The items of one collection.
    pub fn coll(&self, c: Coll) -> &[Item] {
        let start = self.items.partition_point(|i| i.coll < c);
        let end = self.items.partition_point(|i| i.coll <= c);
        &self.items[start..end]
    }

    /// The value of a header (`name` lower case).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.coll(Coll::Headers)
            .iter()
            .find(|i| self.name(i) == name.as_bytes())
            .map(|i| self.value(i))
    }
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &v[start..end]
}

fn looks_like_form(body: &[u8]) -> bool {
    body.contains(&b'=') && !body.starts_with(b"{") && !body.starts_with(b"<")
}

/// `%XX` decoding only (a path's `+` stays a `+`); invalid escapes stay as they are.
fn percent_decode(v: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'%' {
            if let (Some(h), Some(l)) = (v.get(i + 1).and_then(|&b| hex(b)), v.get(i + 2).and_then(|&b| hex(b))) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(v[i]);
        i += 1;
    }
    out
}

/// Splits a query string or form body into decoded `(name, value)` pairs.
pub fn split_form(s: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    s.split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.iter().position(|&b| b == b'=') {
            Some(i) => (url_decode(&p[..i], false), url_decode(&p[i + 1..], false)),
            None => (url_decode(p, false), Vec::new()),
        })
        .collect()
}

fn flatten_json(v: &serde_json::Value, prefix: String, depth: usize, out: &mut Vec<(String, String)>) {
    if out.len() >= MAX_ITEMS || depth > 32 {
        return;
    }
    let child = |k: &str| {
        if prefix.is_empty() {
            k.to_owned()
        } else {
            format!("{prefix}[{k}]")
        }
    };
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                flatten_json(x, child(k), depth + 1, out);
            }
        }
        serde_json::Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                flatten_json(x, child(&i.to_string()), depth + 1, out);
            }
        }
        serde_json::Value::String(s) => out.push((prefix, s.clone())),
        serde_json::Value::Null => out.push((prefix, String::new())),
        other => out.push((prefix, other.to_string())),
    }
}

fn boundary(ct_lower: &str, raw: &[u8]) -> Option<Vec<u8>> {
    let i = ct_lower.find("boundary=")?;
    let raw = String::from_utf8_lossy(raw);
    let b = raw.get(i + 9..)?;
    let b = b.split(';').next().unwrap_or("").trim().trim_matches('"');
    (!b.is_empty()).then(|| b.as_bytes().to_vec())
}

struct Part {
    name: Vec<u8>,
    filename: Option<Vec<u8>>,
    headers: Vec<Vec<u8>>,
    body: Vec<u8>,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

fn split_multipart(body: &[u8], boundary: &[u8]) -> Vec<Part> {
    let mut delim = b"--".to_vec();
    delim.extend_from_slice(boundary);
    let mut parts = Vec::new();
    let mut rest = body;
    let Some(first) = find(rest, &delim) else {
        return parts;
    };
    rest = &rest[first + delim.len()..];
    while parts.len() < MAX_ITEMS {
        if rest.starts_with(b"--") {
            break;
        }
        let next = find(rest, &delim);
        let chunk = match next {
            Some(n) => &rest[..n],
            None => rest,
        };
        let chunk = chunk
            .strip_prefix(b"\r\n")
            .or_else(|| chunk.strip_prefix(b"\n"))
            .unwrap_or(chunk);
        let (head, content) = match find(chunk, b"\r\n\r\n") {
            Some(i) => (&chunk[..i], &chunk[i + 4..]),
            None => match find(chunk, b"\n\n") {
                Some(i) => (&chunk[..i], &chunk[i + 2..]),
                None => (chunk, &b""[..]),
            },
        };
        let content = content
            .strip_suffix(b"\r\n")
            .or_else(|| content.strip_suffix(b"\n"))
            .unwrap_or(content);
        let mut part = Part {
            name: Vec::new(),
            filename: None,
            headers: Vec::new(),
            body: content.to_vec(),
        };
        for line in head.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                continue;
            }
            part.headers.push(line.to_vec());
            let lower = line.to_ascii_lowercase();
            if lower.starts_with(b"content-disposition:") {
                if let Some(n) = disposition_param(line, b"name") {
                    part.name = n;
                }
                part.filename = disposition_param(line, b"filename");
            }
        }
        parts.push(part);
        match next {
            Some(n) => rest = &rest[n + delim.len()..],
            None => break,
        }
    }
    parts
}

fn disposition_param(line: &[u8], key: &[u8]) -> Option<Vec<u8>> {
    // `form-data; name="a;b"; filename="x"`: split on `;` outside quotes.
    let mut params: Vec<&[u8]> = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, &b) in line.iter().enumerate() {
        match b {
            b'"' => quoted = !quoted,
            b';' if !quoted => {
                params.push(&line[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    params.push(&line[start..]);
    for p in params.into_iter().skip(1) {
        let p = trim(p);
        let Some(eq) = p.iter().position(|&b| b == b'=') else {
            continue;
        };
        if trim(&p[..eq]).eq_ignore_ascii_case(key) {
            let v = trim(&p[eq + 1..]);
            let v = v.strip_prefix(b"\"").unwrap_or(v);
            let v = v.strip_suffix(b"\"").unwrap_or(v);
            return Some(v.to_vec());
        }
    }
    None
}

/// What ModSecurity's XML processor (libxml2) gives the `XML` collection: the document's text
/// content, all text nodes and CDATA sections concatenated (`XML:/*`, the string value of the
/// root element), then each attribute value (`XML://@*`), with character and entity references
/// decoded as the parser does. The XML declaration, processing instructions, comments and the
/// doctype are markup, not content. A tolerant scan, not a validating parser: a malformed
/// document still yields its text.
fn xml_text(body: &[u8]) -> Vec<Vec<u8>> {
    let mut text = Vec::new();
    let mut attrs = Vec::new();
    let mut i = 0;
    let skip_to = |from: usize, end: &[u8]| find(&body[from..], end).map_or(body.len(), |e| from + e + end.len());
    while i < body.len() && attrs.len() < MAX_ITEMS {
        let rest = &body[i..];
        if rest.starts_with(b"<![CDATA[") {
            let end = find(&rest[9..], b"]]>").map_or(body.len(), |e| i + 9 + e);
            text.extend_from_slice(&body[i + 9..end]);
            i = (end + 3).min(body.len());
        } else if rest.starts_with(b"<!--") {
            i = skip_to(i + 4, b"-->");
        } else if rest.starts_with(b"<?") {
            i = skip_to(i + 2, b"?>");
        } else if rest.starts_with(b"<!") {
            i = skip_to(i + 2, b">");
        } else if rest.first() == Some(&b'<') {
            let end = rest.iter().position(|&b| b == b'>').map_or(body.len(), |e| i + e);
            let tag = &body[i..end];
            let mut q = None;
            let mut start = 0;
            for (j, &b) in tag.iter().enumerate() {
                match q {
                    None if b == b'"' || b == b'\'' => {
                        q = Some(b);
                        start = j + 1;
                    }
                    Some(c) if b == c => {
                        attrs.push(xml_unescape(&tag[start..j]));
                        q = None;
                    }
                    _ => {}
                }
            }
            i = end + 1;
        } else {
            let end = rest.iter().position(|&b| b == b'<').map_or(body.len(), |e| i + e);
            text.extend_from_slice(&xml_unescape(&body[i..end]));
            i = end;
        }
    }
    let mut out = Vec::with_capacity(attrs.len() + 1);
    let text = trim(&text);
    if !text.is_empty() {
        out.push(text.to_vec());
    }
    out.extend(attrs.into_iter().filter(|a| !a.is_empty()));
    out
}

/// XML's predefined entities and character references (`&#60;`, `&#x3c;`), as UTF-8.
fn xml_unescape(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'&' {
            if let Some(len) = v[i..].iter().take(12).position(|&b| b == b';') {
                let name = &v[i + 1..i + len];
                let ch = match name {
                    b"lt" => Some('<'),
                    b"gt" => Some('>'),
                    b"amp" => Some('&'),
                    b"quot" => Some('"'),
                    b"apos" => Some('\''),
                    _ => {
                        let num = match name {
                            [b'#', b'x' | b'X', hex @ ..] => std::str::from_utf8(hex)
                                .ok()
                                .and_then(|h| u32::from_str_radix(h, 16).ok()),
                            [b'#', dec @ ..] => std::str::from_utf8(dec).ok().and_then(|d| d.parse().ok()),
                            _ => None,
                        };
                        num.and_then(char::from_u32)
                    }
                };
                if let Some(ch) = ch {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                    i += len + 1;
                    continue;
                }
            }
        }
        out.push(v[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a>(target: &'a str, headers: Vec<(&'a str, &'a [u8])>, body: &'a [u8]) -> HttpRequest<'a> {
        HttpRequest {
            method: "POST",
            target,
            version: "HTTP/1.1",
            headers,
            body,
        }
    }

    #[test]
    fn form_and_query_in_bracket_notation() {
        let r = req(
            "/v1/x?expand[]=customer&a=%27b",
            vec![("Content-Type", b"application/x-www-form-urlencoded")],
            b"metadata%5Bnote%5D=O%27Brien+%281%29&amount=10",
        );
        let p = Parsed::new(&r);
        let get = p.coll(Coll::ArgsGet);
        assert_eq!(p.name(&get[0]), b"expand[]");
        assert_eq!(p.value(&get[1]), b"'b");
        let post = p.coll(Coll::ArgsPost);
        assert_eq!(p.name(&post[0]), b"metadata[note]");
        assert_eq!(p.value(&post[0]), b"O'Brien (1)");
        assert_eq!(p.arg_count, 4);
        assert_eq!(p.body_kind, BodyKind::UrlEncoded);
    }

    /// The shared buffer holds what the per-item copies held: on 20,000 random requests
    /// (form-encoded query and body with escapes, empty parts and names, cookies, repeated
    /// headers), every argument is what [`split_form`] decodes, every name item repeats its
    /// name, headers and cookies are as sent (names lower case), and the counts are unchanged.
    /// A parse with the vectors earlier parses gave back ([`Parsed::recycle`]) is the parse
    /// with new ones: on 20,000 random requests (form query and body, cookies, headers, JSON
    /// and multipart bodies), each parsed after recycling the parse of the one before, and
    /// again with this thread's buffers held aside; and the kept buffers come back empty.
    #[test]
    fn recycled_buffers_parse_the_same() {
        let pieces: &[&[u8]] = &[
            b"a=1",
            b"&",
            b"=",
            b"%5B",
            b"%3d",
            b"+",
            b"x[y]",
            b"%",
            b"\xff",
            b"=&=",
            b"{\"k\":[1,\"v\"]}",
            b"--b\r\n",
        ];
        let types: [&[u8]; 4] = [
            b"application/x-www-form-urlencoded",
            b"application/json",
            b"multipart/form-data; boundary=b",
            b"text/xml",
        ];
        let key = |p: &Parsed| {
            let items: Vec<(Coll, Vec<u8>, Vec<u8>)> = p
                .items
                .iter()
                .map(|i| (i.coll, p.name(i).to_vec(), p.value(i).to_vec()))
                .collect();
            (
                items,
                p.body_kind,
                p.body_error,
                p.arg_count,
                p.args_combined_size,
                p.path.clone(),
            )
        };
        let mut rng = crate::testrng::Rng(0x510e_527f_ade6_82d1);
        for _ in 0..20_000 {
            let query = String::from_utf8_lossy(&rng.value(pieces)).replace(['#', ' ', '?'], "");
            let target = format!("/v1/x?{query}");
            let mut body = rng.value(pieces);
            if rng.below(4) == 0 {
                body = body.repeat(rng.below(40) + 1);
            }
            let cookie = rng.value(pieces);
            let headers: Vec<(&str, &[u8])> =
                vec![("Content-Type", types[rng.below(types.len())]), ("Cookie", &cookie)];
            let r = req(&target, headers, &body);
            let reused = Parsed::new(&r);
            let held = ParseBuffers::take();
            assert!(held.collected.is_empty() && held.grouped.is_empty() && held.buf.is_empty());
            let fresh = Parsed::new(&r);
            held.give_back();
            assert_eq!(key(&reused), key(&fresh));
            fresh.recycle();
            reused.recycle();
        }
        let b = ParseBuffers::take();
        assert!(b.collected.is_empty() && b.grouped.is_empty() && b.buf.is_empty());
        assert!(b.buf.capacity() <= MAX_KEPT_BUF && b.grouped.capacity() <= MAX_KEPT_ITEMS);
    }

    #[test]
    fn items_hold_what_the_decoders_give() {
        let pieces: &[&[u8]] = &[
            b"a=1", b"&", b"=", b"%5B", b"%3d", b"+", b"x[y]", b"%", b"%zz", b"\xff", b"=&=",
        ];
        let mut rng = crate::testrng::Rng(0x6a09_e667_f3bc_c908);
        for _ in 0..20_000 {
            let query = String::from_utf8_lossy(&rng.value(pieces)).replace(['#', ' ', '?'], "");
            let target = format!("/v1/x?{query}");
            let body = rng.value(pieces);
            let cookie = rng.value(pieces);
            let header = rng.value(pieces);
            let headers: Vec<(&str, &[u8])> = vec![
                ("Content-Type", b"application/x-www-form-urlencoded"),
                ("Cookie", &cookie),
                ("X-Thing", &header),
                ("x-THING", b"2"),
            ];
            let r = req(&target, headers.clone(), &body);
            let p = Parsed::new(&r);
            let mut count = 0;
            let mut combined = 0;
            for (src, values, names) in [
                (query.as_bytes(), Coll::ArgsGet, Coll::ArgsGetNames),
                (&body[..], Coll::ArgsPost, Coll::ArgsPostNames),
            ] {
                let pairs = split_form(src);
                count += pairs.len();
                combined += pairs.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
                let got: Vec<(&[u8], &[u8])> = p.coll(values).iter().map(|i| (p.name(i), p.value(i))).collect();
                let want: Vec<(&[u8], &[u8])> = pairs.iter().map(|(k, v)| (&k[..], &v[..])).collect();
                assert_eq!(got, want);
                let got: Vec<(&[u8], &[u8])> = p.coll(names).iter().map(|i| (p.name(i), p.value(i))).collect();
                let want: Vec<(&[u8], &[u8])> = pairs.iter().map(|(k, _)| (&k[..], &k[..])).collect();
                assert_eq!(got, want);
            }
            assert_eq!((p.arg_count, p.args_combined_size), (count, combined));
            let got: Vec<(&[u8], &[u8])> = p.coll(Coll::Headers).iter().map(|i| (p.name(i), p.value(i))).collect();
            let lower: Vec<String> = headers.iter().map(|(n, _)| n.to_ascii_lowercase()).collect();
            let want: Vec<(&[u8], &[u8])> = lower
                .iter()
                .zip(&headers)
                .map(|(l, (_, v))| (l.as_bytes(), *v))
                .collect();
            assert_eq!(got, want);
            let got: Vec<(&[u8], &[u8])> = p
                .coll(Coll::HeadersNames)
                .iter()
                .map(|i| (p.name(i), p.value(i)))
                .collect();
            let want: Vec<(&[u8], &[u8])> = lower
                .iter()
                .zip(&headers)
                .map(|(l, (n, _))| (l.as_bytes(), n.as_bytes()))
                .collect();
            assert_eq!(got, want);
            let want: Vec<(&[u8], &[u8])> = cookie
                .split(|&b| b == b';')
                .map(trim)
                .filter(|c| !c.is_empty())
                .map(|c| match c.iter().position(|&b| b == b'=') {
                    Some(i) => (&c[..i], &c[i + 1..]),
                    None => (c, &b""[..]),
                })
                .collect();
            let got: Vec<(&[u8], &[u8])> = p.coll(Coll::Cookies).iter().map(|i| (p.name(i), p.value(i))).collect();
            assert_eq!(got, want);
            let got: Vec<(&[u8], &[u8])> = p
                .coll(Coll::CookiesNames)
                .iter()
                .map(|i| (p.name(i), p.value(i)))
                .collect();
            let want: Vec<(&[u8], &[u8])> = want.iter().map(|(k, _)| (*k, *k)).collect();
            assert_eq!(got, want);
            let line = format!("POST {target} HTTP/1.1");
            assert_eq!(p.value(&p.coll(Coll::Line)[0]), line.as_bytes());
            assert_eq!(p.name(&p.coll(Coll::Line)[0]), b"");
            let raw: Vec<&[u8]> = p.coll(Coll::Body).iter().map(|i| p.value(i)).collect();
            assert_eq!(raw, if body.is_empty() { vec![] } else { vec![&body[..]] });
        }
    }

    #[test]
    fn every_collection_in_index_order() {
        for (i, c) in Coll::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i, "{c:?}");
        }
    }

    /// The counting sort gives what a stable sort by collection gives, on 20,000 random
    /// sequences of items of random collections.
    #[test]
    fn grouping_equals_a_stable_sort() {
        const COLLS: [Coll; 6] = [
            Coll::ArgsGet,
            Coll::ArgsGetNames,
            Coll::Headers,
            Coll::HeadersNames,
            Coll::Body,
            Coll::MultipartPartHeaders,
        ];
        let mut rng = crate::testrng::Rng(0x3c6e_f372_fe94_f82b);
        for _ in 0..20_000 {
            let items: Vec<Item> = (0..rng.below(40))
                .map(|k| Item {
                    coll: COLLS[rng.below(COLLS.len())],
                    name: (k, k),
                    value: (k, k + 1),
                })
                .collect();
            let mut want = items.clone();
            want.sort_by_key(|i| i.coll);
            let got = group_by_coll(items);
            let key = |v: &[Item]| v.iter().map(|i| (i.coll, i.name, i.value)).collect::<Vec<_>>();
            assert_eq!(key(&got), key(&want));
        }
    }

    #[test]
    fn filename_is_the_decoded_path() {
        let r = req("/post/subSTR%28%24x%29+a%2", vec![], b"");
        let p = Parsed::new(&r);
        assert_eq!(p.value(&p.coll(Coll::Filename)[0]), b"/post/subSTR($x)+a%2");
        assert_eq!(p.value(&p.coll(Coll::Basename)[0]), b"subSTR%28%24x%29+a%2");
        assert_eq!(p.path, "/post/subSTR%28%24x%29+a%2");
    }

    #[test]
    fn json_flattens_to_bracket_names() {
        let r = req(
            "/v1/x",
            vec![("content-type", b"application/json")],
            br#"{"card":{"number":"4242"},"expand":["a","b"],"n":1}"#,
        );
        let p = Parsed::new(&r);
        let names: Vec<_> = p
            .coll(Coll::ArgsPostNames)
            .iter()
            .map(|i| p.value(i).to_vec())
            .collect();
        assert_eq!(
            names,
            vec![
                b"card[number]".to_vec(),
                b"expand[0]".to_vec(),
                b"expand[1]".to_vec(),
                b"n".to_vec()
            ]
        );
    }

    #[test]
    fn multipart_parts_and_files() {
        let body = b"--XX\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nhello\r\n--XX\r\nContent-Disposition: form-data; name=\"f\"; filename=\"x.php\"\r\nContent-Type: text/plain\r\n\r\n<?php ?>\r\n--XX--\r\n";
        let r = req("/up", vec![("Content-Type", b"multipart/form-data; boundary=XX")], body);
        let p = Parsed::new(&r);
        assert_eq!(p.value(&p.coll(Coll::ArgsPost)[0]), b"hello");
        assert_eq!(p.value(&p.coll(Coll::Files)[0]), b"x.php");
        assert_eq!(p.coll(Coll::MultipartPartHeaders).len(), 3);
        assert_eq!(
            disposition_param(
                b"Content-Disposition: form-data; name=\"fi;le\"; filename=\"t\"",
                b"name"
            ),
            Some(b"fi;le".to_vec())
        );
    }

    #[test]
    fn cookies_and_xml() {
        let r = req(
            "/",
            vec![("Cookie", b"a=1; b=<x>"), ("Content-Type", b"text/xml")],
            b"<a x=\"1\">hi<b>there</b></a>",
        );
        let p = Parsed::new(&r);
        assert_eq!(p.value(&p.coll(Coll::Cookies)[1]), b"<x>");
        let xml: Vec<_> = p.coll(Coll::Xml).iter().map(|i| p.value(i).to_vec()).collect();
        assert_eq!(xml, vec![b"hithere".to_vec(), b"1".to_vec()]);
        let r = req(
            "/",
            vec![("Content-Type", b"application/xml")],
            b"<?xml version=\"1.0\"?><!-- c --><r a=\"&lt;script&#62;x&#x3c;\">1 &amp; 2<![CDATA[<b>]]></r>",
        );
        let p = Parsed::new(&r);
        let xml: Vec<_> = p.coll(Coll::Xml).iter().map(|i| p.value(i).to_vec()).collect();
        assert_eq!(xml, vec![b"1 & 2<b>".to_vec(), b"<script>x<".to_vec()]);
    }
}
