//! Transformations applied to a value before a rule's operator sees it, named and defined as
//! in ModSecurity (`t:urlDecodeUni`, `t:lowercase`, ...), so the Core Rule Set's expressions keep
//! their meaning. All work on bytes: a decoded value need not be UTF-8.

/// One transformation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transform {
    /// ASCII lower case.
    Lowercase,
    /// `%XX`, `%uXXXX` and `+` decoding.
    UrlDecodeUni,
    /// `%XX` and `+` decoding.
    UrlDecode,
    /// HTML character references (`&#60;`, `&#x3c;`, `&lt;`, ...).
    HtmlEntityDecode,
    /// JavaScript escapes (`\x3c`, `\u003c`, `\n`, ...).
    JsDecode,
    /// CSS escapes (`\3c `).
    CssDecode,
    /// Drops NUL bytes.
    RemoveNulls,
    /// Multi-byte UTF-8 characters become `%uXXXX` (for a later `urlDecodeUni`).
    Utf8ToUnicode,
    /// Shell command-line normalisation (drops `\ " ' ^`, `,;` become spaces, lower case).
    CmdLine,
    /// Resolves `//`, `/./` and `/../`.
    NormalizePath,
    /// As [`Transform::NormalizePath`] after turning `\` into `/`.
    NormalizePathWin,
    /// Drops all whitespace.
    RemoveWhitespace,
    /// Runs of whitespace become one space.
    CompressWhitespace,
    /// C comments become one space.
    ReplaceComments,
    /// Drops comment markers (`/*`, `*/`, `--`, `#`).
    RemoveCommentsChar,
    /// Drops C comments and `--`/`#` comments to the end.
    RemoveComments,
    /// Base64 decoding (lenient: stops at the first invalid character).
    Base64Decode,
    /// ANSI C escape sequences.
    EscapeSeqDecode,
    /// The value's length in decimal.
    Length,
}

impl Transform {
    /// Every transformation (for tests that must cover them all).
    #[cfg(test)]
    pub(crate) const ALL: [Transform; 19] = [
        Transform::Lowercase,
        Transform::UrlDecodeUni,
        Transform::UrlDecode,
        Transform::HtmlEntityDecode,
        Transform::JsDecode,
        Transform::CssDecode,
        Transform::RemoveNulls,
        Transform::Utf8ToUnicode,
        Transform::CmdLine,
        Transform::NormalizePath,
        Transform::NormalizePathWin,
        Transform::RemoveWhitespace,
        Transform::CompressWhitespace,
        Transform::ReplaceComments,
        Transform::RemoveCommentsChar,
        Transform::RemoveComments,
        Transform::Base64Decode,
        Transform::EscapeSeqDecode,
        Transform::Length,
    ];

    /// The transformation named `name` (ModSecurity's spelling), if supported.
    pub fn parse(name: &str) -> Option<Transform> {
        Some(match name {
            "lowercase" => Transform::Lowercase,
            "urlDecodeUni" => Transform::UrlDecodeUni,
            "urlDecode" => Transform::UrlDecode,
            "htmlEntityDecode" => Transform::HtmlEntityDecode,
            "jsDecode" => Transform::JsDecode,
            "cssDecode" => Transform::CssDecode,
            "removeNulls" => Transform::RemoveNulls,
            "utf8toUnicode" => Transform::Utf8ToUnicode,
            "cmdLine" => Transform::CmdLine,
            "normalizePath" | "normalisePath" => Transform::NormalizePath,
            "normalizePathWin" | "normalisePathWin" => Transform::NormalizePathWin,
            "removeWhitespace" => Transform::RemoveWhitespace,
            "compressWhitespace" => Transform::CompressWhitespace,
            "replaceComments" => Transform::ReplaceComments,
            "removeCommentsChar" => Transform::RemoveCommentsChar,
            "removeComments" => Transform::RemoveComments,
            "base64Decode" => Transform::Base64Decode,
            "escapeSeqDecode" => Transform::EscapeSeqDecode,
            "length" => Transform::Length,
            _ => return None,
        })
    }

    /// Whether applying the transformation may change `v` (false only when it certainly
    /// gives `v` back), so the engine can skip the copy for plain values.
    pub fn may_change(self, v: &[u8]) -> bool {
        let any = |f: fn(u8) -> bool| v.iter().any(|&b| f(b));
        match self {
            Transform::Lowercase => any(|b| b.is_ascii_uppercase()),
            Transform::UrlDecodeUni | Transform::UrlDecode => any(|b| b == b'%' || b == b'+'),
            Transform::HtmlEntityDecode => html_may_change(v),
            Transform::JsDecode | Transform::CssDecode | Transform::EscapeSeqDecode => any(|b| b == b'\\'),
            Transform::RemoveNulls => any(|b| b == 0),
            Transform::Utf8ToUnicode => !v.is_ascii(),
            Transform::CmdLine => {
                any(|b| matches!(b, b'\\' | b'"' | b'\'' | b'^' | b',' | b';') || is_space(b) || b.is_ascii_uppercase())
            }
            // Only an empty, `.` or `..` segment changes a path: `//`, `/.`, `./`, `..`, or `.`.
            Transform::NormalizePath => path_may_change(v),
            Transform::NormalizePathWin => any(|b| b == b'\\') || path_may_change(v),
            Transform::RemoveWhitespace => any(|b| is_space(b) || b == 0xa0),
            // Only a run of whitespace, or whitespace other than a space, is rewritten.
            Transform::CompressWhitespace => v.iter().enumerate().any(|(i, &b)| {
                (is_space(b) || b == 0xa0) && (b != b' ' || v.get(i + 1).is_some_and(|&n| is_space(n) || n == 0xa0))
            }),
            Transform::ReplaceComments => v.windows(2).any(|w| w == b"/*"),
            Transform::RemoveCommentsChar => {
                any(|b| b == b'#') || v.windows(2).any(|w| matches!(w, b"/*" | b"*/" | b"--"))
            }
            Transform::RemoveComments => any(|b| b == b'#') || v.windows(2).any(|w| matches!(w, b"/*" | b"--")),
            Transform::Base64Decode | Transform::Length => true,
        }
    }

    /// The [`value_mask`] bits whose presence lets this transformation change a value by more
    /// than ASCII case: a value with none of them comes out equal to itself up to case.
    pub fn trigger_mask(self) -> u32 {
        match self {
            Transform::Lowercase => 0,
            Transform::UrlDecodeUni | Transform::UrlDecode => M_PERCENT | M_PLUS,
            Transform::HtmlEntityDecode => M_AMP,
            Transform::JsDecode | Transform::CssDecode | Transform::EscapeSeqDecode => M_BACKSLASH,
            Transform::RemoveNulls => M_NUL,
            Transform::Utf8ToUnicode => M_NON_ASCII,
            Transform::CmdLine => M_BACKSLASH | M_QUOTE | M_CARET | M_COMMA_SEMI | M_SPACE,
            Transform::NormalizePath => M_SLASH | M_DOT,
            Transform::NormalizePathWin => M_SLASH | M_DOT | M_BACKSLASH,
            Transform::RemoveWhitespace | Transform::CompressWhitespace => M_SPACE | M_NBSP,
            Transform::ReplaceComments => M_SLASH,
            Transform::RemoveCommentsChar | Transform::RemoveComments => M_SLASH | M_STAR | M_DASH | M_HASH,
            Transform::Base64Decode | Transform::Length => M_ALWAYS,
        }
    }

    /// The [`value_mask`] bits whose presence lets this transformation change a value at all
    /// ([`Transform::trigger_mask`] plus upper-case letters for the ones that lower-case).
    pub fn change_mask(self) -> u32 {
        match self {
            Transform::Lowercase | Transform::CmdLine => self.trigger_mask() | M_UPPER,
            _ => self.trigger_mask(),
        }
    }

    /// Applies the transformation, writing the output into `out` (cleared first) so that its
    /// allocation can be reused; the same output as [`Transform::apply`]
    /// (`apply_into_equals_apply`).
    pub fn apply_into(self, v: &[u8], out: &mut Vec<u8>) {
        out.clear();
        match self {
            Transform::Lowercase => {
                out.extend_from_slice(v);
                out.make_ascii_lowercase();
            }
            Transform::UrlDecodeUni => url_decode_into(v, true, out),
            Transform::UrlDecode => url_decode_into(v, false, out),
            Transform::RemoveNulls => {
                out.extend_from_slice(v);
                out.retain(|&b| b != 0);
            }
            Transform::RemoveWhitespace => {
                out.extend_from_slice(v);
                out.retain(|&b| !is_space(b) && b != 0xa0);
            }
            Transform::CmdLine => cmd_line_into(v, out),
            Transform::Base64Decode => base64_decode_into(v, out),
            _ => *out = self.apply(v),
        }
    }

    /// Applies the transformation.
    pub fn apply(self, v: &[u8]) -> Vec<u8> {
        match self {
            Transform::Lowercase => v.to_ascii_lowercase(),
            Transform::UrlDecodeUni => url_decode(v, true),
            Transform::UrlDecode => url_decode(v, false),
            Transform::HtmlEntityDecode => html_entity_decode(v),
            Transform::JsDecode => js_decode(v),
            Transform::CssDecode => css_decode(v),
            Transform::RemoveNulls => kept(v, |b| b != 0),
            Transform::Utf8ToUnicode => utf8_to_unicode(v),
            Transform::CmdLine => cmd_line(v),
            Transform::NormalizePath => normalize_path(v, false),
            Transform::NormalizePathWin => normalize_path(v, true),
            Transform::RemoveWhitespace => kept(v, |b| !is_space(b) && b != 0xa0),
            Transform::CompressWhitespace => compress_whitespace(v),
            Transform::ReplaceComments => replace_comments(v),
            Transform::RemoveCommentsChar => remove_comments_char(v),
            Transform::RemoveComments => remove_comments(v),
            Transform::Base64Decode => base64_decode(v),
            Transform::EscapeSeqDecode => escape_seq_decode(v),
            Transform::Length => v.len().to_string().into_bytes(),
        }
    }
}

const M_PERCENT: u32 = 1;
const M_PLUS: u32 = 1 << 1;
const M_AMP: u32 = 1 << 2;
const M_BACKSLASH: u32 = 1 << 3;
const M_NUL: u32 = 1 << 4;
const M_NON_ASCII: u32 = 1 << 5;
const M_QUOTE: u32 = 1 << 6;
const M_CARET: u32 = 1 << 7;
const M_COMMA_SEMI: u32 = 1 << 8;
const M_SPACE: u32 = 1 << 9;
const M_SLASH: u32 = 1 << 10;
const M_DOT: u32 = 1 << 11;
const M_STAR: u32 = 1 << 12;
const M_DASH: u32 = 1 << 13;
const M_HASH: u32 = 1 << 14;
/// Set in every value: transformations that always need running (`base64Decode`, `length`).
const M_ALWAYS: u32 = 1 << 15;
const M_UPPER: u32 = 1 << 16;
/// The non-breaking space 0xa0 (also [`M_NON_ASCII`]), the one non-ASCII byte that
/// `removeWhitespace` and `compressWhitespace` rewrite: decoded `base64Decode` output holds
/// other non-ASCII bytes far more often, and they leave it unchanged.
const M_NBSP: u32 = 1 << 17;

/// Which special bytes `v` holds, as bits matched against [`Transform::trigger_mask`].
pub fn value_mask(v: &[u8]) -> u32 {
    static TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        t[b'%' as usize] = M_PERCENT;
        t[b'+' as usize] = M_PLUS;
        t[b'&' as usize] = M_AMP;
        t[b'\\' as usize] = M_BACKSLASH;
        t[0] = M_NUL;
        let mut i = 128;
        while i < 256 {
            t[i] = M_NON_ASCII;
            i += 1;
        }
        t[b'"' as usize] = M_QUOTE;
        t[b'\'' as usize] = M_QUOTE;
        t[b'^' as usize] = M_CARET;
        t[b',' as usize] = M_COMMA_SEMI;
        t[b';' as usize] = M_COMMA_SEMI;
        t[b' ' as usize] = M_SPACE;
        t[b'\t' as usize] = M_SPACE;
        t[b'\n' as usize] = M_SPACE;
        t[b'\r' as usize] = M_SPACE;
        t[0x0b] = M_SPACE;
        t[0x0c] = M_SPACE;
        t[b'/' as usize] = M_SLASH;
        t[b'.' as usize] = M_DOT;
        t[b'*' as usize] = M_STAR;
        t[b'-' as usize] = M_DASH;
        t[b'#' as usize] = M_HASH;
        t[0xa0] = M_NON_ASCII | M_NBSP;
        let mut u = b'A';
        while u <= b'Z' {
            t[u as usize] = M_UPPER;
            u += 1;
        }
        t
    };
    v.iter().fold(M_ALWAYS, |m, &b| m | TABLE[b as usize])
}

/// The bytes of `v` that `keep` accepts, in order: one allocation of `v`'s length and an
/// in-place compaction (collecting a filter grows its vector step by step).
fn kept(v: &[u8], keep: impl Fn(u8) -> bool) -> Vec<u8> {
    let mut out = v.to_vec();
    out.retain(|&b| keep(b));
    out
}

fn path_may_change(v: &[u8]) -> bool {
    v == b"." || v.windows(2).any(|w| matches!(w, b"//" | b"/." | b"./" | b".."))
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn hex_run(v: &[u8], max: usize) -> (u32, usize) {
    let mut n = 0u32;
    let mut i = 0;
    while i < max && i < v.len() {
        match hex_val(v[i]) {
            Some(h) => n = n.wrapping_mul(16).wrapping_add(u32::from(h)),
            None => break,
        }
        i += 1;
    }
    (n, i)
}

/// A code point above 0xff as one byte, as ModSecurity does: full-width ASCII forms map to
/// ASCII, anything else keeps its low byte.
fn code_point_byte(c: u32) -> u8 {
    if (0xff01..=0xff5e).contains(&c) {
        (c - 0xfee0) as u8
    } else {
        (c & 0xff) as u8
    }
}

/// `%XX` decoding (and `%uXXXX` with `uni`); `+` becomes a space; invalid escapes stay.
pub fn url_decode(v: &[u8], uni: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    url_decode_into(v, uni, &mut out);
    out
}

/// [`url_decode`] appending to `out`. The decoded bytes are gathered in a stack buffer and
/// appended to `out` 64 at a time: a store a byte instead of a `Vec::push` (its capacity test
/// and length update) a byte (`url_decode_chunks_equal_bytewise`).
pub fn url_decode_into(v: &[u8], uni: bool, out: &mut Vec<u8>) {
    let mut chunk = [0u8; 64];
    let mut n = 0;
    let mut i = 0;
    while i < v.len() {
        let b = v[i];
        let (d, step) = if b == b'%' {
            let unicode = if uni && matches!(v.get(i + 1), Some(b'u' | b'U')) {
                let (x, len) = hex_run(&v[i + 2..], 4);
                (len == 4).then(|| code_point_byte(x))
            } else {
                None
            };
            match unicode {
                Some(d) => (d, 6),
                None => match (
                    v.get(i + 1).copied().and_then(hex_val),
                    v.get(i + 2).copied().and_then(hex_val),
                ) {
                    (Some(h), Some(l)) => (h * 16 + l, 3),
                    _ => (b, 1),
                },
            }
        } else if b == b'+' {
            (b' ', 1)
        } else {
            (b, 1)
        };
        if let Some(slot) = chunk.get_mut(n) {
            *slot = d;
            n += 1;
        } else {
            out.extend_from_slice(&chunk);
            chunk[0] = d;
            n = 1;
        }
        i += step;
    }
    out.extend_from_slice(chunk.get(..n).unwrap_or_default());
}

/// The named references `htmlEntityDecode` decodes (ASCII case ignored), with their bytes.
const HTML_NAMED: &[(&[u8], u8)] = &[
    (b"quot", b'"'),
    (b"amp", b'&'),
    (b"lt", b'<'),
    (b"gt", b'>'),
    (b"nbsp", 0xa0),
    (b"apos", b'\''),
    (b"colon", b':'),
    (b"lpar", b'('),
    (b"rpar", b')'),
    (b"sol", b'/'),
    (b"tab", b'\t'),
    (b"newline", b'\n'),
];

/// Whether [`html_entity_decode`] decodes a reference at an `&` followed by `rest`: `#` and a
/// decimal digit, `#x` (or `#X`) and a hex digit, or a name of [`HTML_NAMED`]. A value none
/// of whose `&`s starts one comes out unchanged (each decoded reference replaces two bytes or
/// more by one, and none of them holds an `&`, so the decoder meets every `&` of the value).
fn html_reference_at(rest: &[u8]) -> bool {
    match rest {
        [b'#', b'x' | b'X', h, ..] => hex_val(*h).is_some(),
        [b'#', d, ..] => d.is_ascii_digit(),
        // The first letters of the names: an argument's name after a form body's `&` seldom
        // starts with one, and then the names are not compared.
        [f, ..] if matches!(f | 0x20, b'a' | b'c' | b'g' | b'l' | b'n' | b'q' | b'r' | b's' | b't') => HTML_NAMED
            .iter()
            .any(|(name, _)| rest.len() >= name.len() && rest[..name.len()].eq_ignore_ascii_case(name)),
        _ => false,
    }
}

/// Whether `htmlEntityDecode` changes `v`: an `&` (found with `memchr`) starts a reference it
/// decodes ([`html_reference_at`]). A form body has an `&` before every argument but, as a
/// rule, no reference (`html_may_change_is_exact`).
fn html_may_change(v: &[u8]) -> bool {
    memchr::memchr_iter(b'&', v).any(|i| html_reference_at(v.get(i + 1..).unwrap_or_default()))
}

fn html_entity_decode(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'&' {
            let rest = &v[i + 1..];
            if rest.first() == Some(&b'#') {
                let (n, len, skip) = if matches!(rest.get(1), Some(b'x' | b'X')) {
                    let (n, len) = hex_run(&rest[2..], 8);
                    (n, len, 2)
                } else {
                    let mut n = 0u32;
                    let mut len = 0;
                    while len < 10 && rest.get(1 + len).is_some_and(u8::is_ascii_digit) {
                        n = n.wrapping_mul(10).wrapping_add(u32::from(rest[1 + len] - b'0'));
                        len += 1;
                    }
                    (n, len, 1)
                };
                if len > 0 {
                    out.push(code_point_byte(n));
                    i += 1 + skip + len;
                    if v.get(i) == Some(&b';') {
                        i += 1;
                    }
                    continue;
                }
            } else {
                let mut hit = false;
                for (name, ch) in HTML_NAMED {
                    if rest.len() >= name.len() && rest[..name.len()].eq_ignore_ascii_case(name) {
                        out.push(*ch);
                        i += 1 + name.len();
                        if v.get(i) == Some(&b';') {
                            i += 1;
                        }
                        hit = true;
                        break;
                    }
                }
                if hit {
                    continue;
                }
            }
        }
        out.push(v[i]);
        i += 1;
    }
    out
}

fn js_decode(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'\\' && i + 1 < v.len() {
            let c = v[i + 1];
            if c == b'u' {
                let (n, len) = hex_run(&v[i + 2..], 4);
                if len == 4 {
                    out.push(code_point_byte(n));
                    i += 6;
                    continue;
                }
            } else if c == b'x' {
                let (n, len) = hex_run(&v[i + 2..], 2);
                if len == 2 {
                    out.push(n as u8);
                    i += 4;
                    continue;
                }
            } else if (b'0'..=b'7').contains(&c) {
                let mut n = 0u32;
                let mut len = 0;
                while len < 3 && v.get(i + 1 + len).is_some_and(|b| (b'0'..=b'7').contains(b)) {
                    n = n * 8 + u32::from(v[i + 1 + len] - b'0');
                    len += 1;
                }
                out.push((n & 0xff) as u8);
                i += 1 + len;
                continue;
            }
            out.push(match c {
                b'a' => 7,
                b'b' => 8,
                b'f' => 12,
                b'n' => b'\n',
                b'r' => b'\r',
                b't' => b'\t',
                b'v' => 11,
                other => other,
            });
            i += 2;
            continue;
        }
        out.push(v[i]);
        i += 1;
    }
    out
}

fn css_decode(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'\\' && i + 1 < v.len() {
            let (n, len) = hex_run(&v[i + 1..], 6);
            if len > 0 {
                out.push(code_point_byte(n));
                i += 1 + len;
                if v.get(i).is_some_and(|&b| is_space(b)) {
                    i += 1;
                }
                continue;
            }
            if v[i + 1] == b'\n' {
                i += 2;
                continue;
            }
            out.push(v[i + 1]);
            i += 2;
            continue;
        }
        if v[i] == b'\\' {
            i += 1;
            continue;
        }
        out.push(v[i]);
        i += 1;
    }
    out
}

fn utf8_to_unicode(v: &[u8]) -> Vec<u8> {
    if v.is_ascii() {
        return v.to_vec();
    }
    let mut out = Vec::with_capacity(v.len() * 2);
    for chunk in v.utf8_chunks() {
        for ch in chunk.valid().chars() {
            let c = ch as u32;
            if c < 0x80 {
                out.push(c as u8);
            } else if c <= 0xffff {
                out.extend_from_slice(format!("%u{c:04x}").as_bytes());
            } else {
                let mut buf = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
            }
        }
        out.extend_from_slice(chunk.invalid());
    }
    out
}

fn cmd_line(v: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::with_capacity(v.len());
    cmd_line_into(v, &mut out);
    out
}

/// [`cmd_line`] into an empty `out`.
fn cmd_line_into(v: &[u8], out: &mut Vec<u8>) {
    let mut space = false;
    for &b in v {
        match b {
            b'\\' | b'"' | b'\'' | b'^' => {}
            b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c | b',' | b';' => {
                if !space {
                    out.push(b' ');
                    space = true;
                }
            }
            b'/' | b'(' => {
                if space {
                    out.pop();
                }
                out.push(b);
                space = false;
            }
            _ => {
                out.push(b.to_ascii_lowercase());
                space = false;
            }
        }
    }
}

fn normalize_path(v: &[u8], win: bool) -> Vec<u8> {
    let src: Vec<u8> = if win {
        v.iter().map(|&b| if b == b'\\' { b'/' } else { b }).collect()
    } else {
        v.to_vec()
    };
    let absolute = src.first() == Some(&b'/');
    let trailing = src.last() == Some(&b'/');
    let mut parts: Vec<&[u8]> = Vec::new();
    for seg in src.split(|&b| b == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => {
                if parts.last().is_some_and(|p| *p != b"..") {
                    parts.pop();
                } else if !absolute {
                    parts.push(seg);
                }
            }
            _ => parts.push(seg),
        }
    }
    let mut out = Vec::with_capacity(src.len());
    if absolute {
        out.push(b'/');
    }
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(p);
    }
    if trailing && !parts.is_empty() {
        out.push(b'/');
    }
    out
}

fn compress_whitespace(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut space = false;
    for &b in v {
        if is_space(b) || b == 0xa0 {
            if !space {
                out.push(b' ');
            }
            space = true;
        } else {
            out.push(b);
            space = false;
        }
    }
    out
}

fn replace_comments(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'/' && v.get(i + 1) == Some(&b'*') {
            match v[i + 2..].windows(2).position(|w| w == b"*/") {
                Some(p) => i += 2 + p + 2,
                None => i = v.len(),
            }
            out.push(b' ');
            continue;
        }
        out.push(v[i]);
        i += 1;
    }
    out
}

fn remove_comments_char(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        let two = v.get(i..i + 2);
        if matches!(two, Some(b"/*" | b"*/" | b"--")) {
            i += 2;
            continue;
        }
        if v[i] == b'#' {
            i += 1;
            continue;
        }
        out.push(v[i]);
        i += 1;
    }
    out
}

fn remove_comments(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'/' && v.get(i + 1) == Some(&b'*') {
            match v[i + 2..].windows(2).position(|w| w == b"*/") {
                Some(p) => i += 2 + p + 2,
                None => i = v.len(),
            }
            continue;
        }
        if v[i] == b'#' || (v[i] == b'-' && v.get(i + 1) == Some(&b'-')) {
            break;
        }
        out.push(v[i]);
        i += 1;
    }
    out
}

fn base64_decode(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() * 3 / 4);
    base64_decode_into(v, &mut out);
    out
}

/// The value of each base64 digit (both alphabets: `+` and `-` are 62, `/` and `_` 63), and
/// [`NOT_B64`] for every other byte: one load per byte instead of the five range tests.
const B64_DIGIT: [u8; 256] = {
    let mut t = [NOT_B64; 256];
    let mut i = 0;
    while i < 26 {
        t[b'A' as usize + i] = i as u8;
        t[b'a' as usize + i] = 26 + i as u8;
        if i < 10 {
            t[b'0' as usize + i] = 52 + i as u8;
        }
        i += 1;
    }
    t[b'+' as usize] = 62;
    t[b'-' as usize] = 62;
    t[b'/' as usize] = 63;
    t[b'_' as usize] = 63;
    t
};

/// [`B64_DIGIT`]'s entry for a byte that is no base64 digit.
const NOT_B64: u8 = 0xff;

/// [`base64_decode`] appending to `out`: the digits up to the first other byte.
fn base64_decode_into(v: &[u8], out: &mut Vec<u8>) {
    let mut bits = 0u32;
    let mut n = 0u32;
    for &b in v {
        let x = B64_DIGIT[usize::from(b)];
        if x == NOT_B64 {
            break;
        }
        bits = (bits << 6) | u32::from(x);
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push(((bits >> n) & 0xff) as u8);
        }
    }
}

fn escape_seq_decode(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'\\' && i + 1 < v.len() {
            let c = v[i + 1];
            let simple = match c {
                b'a' => Some(7),
                b'b' => Some(8),
                b'f' => Some(12),
                b'n' => Some(b'\n'),
                b'r' => Some(b'\r'),
                b't' => Some(b'\t'),
                b'v' => Some(11),
                b'\\' | b'?' | b'\'' | b'"' => Some(c),
                _ => None,
            };
            if let Some(s) = simple {
                out.push(s);
                i += 2;
                continue;
            }
            if c == b'x' {
                let (n, len) = hex_run(&v[i + 2..], 2);
                if len == 2 {
                    out.push(n as u8);
                    i += 4;
                    continue;
                }
            }
            if (b'0'..=b'7').contains(&c) {
                let mut n = 0u32;
                let mut len = 0;
                while len < 3 && v.get(i + 1 + len).is_some_and(|b| (b'0'..=b'7').contains(b)) {
                    n = n * 8 + u32::from(v[i + 1 + len] - b'0');
                    len += 1;
                }
                out.push((n & 0xff) as u8);
                i += 1 + len;
                continue;
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

    /// The base64 decoder with [`B64_DIGIT`] gives what the decoder it replaced (the digits
    /// told by five byte ranges) gives: on every value of up to two bytes (65,792) and 30,000
    /// random values of base64 text, both alphabets, `=` padding and other bytes.
    #[test]
    fn base64_table_equals_ranges() {
        fn by_ranges(v: &[u8]) -> Vec<u8> {
            let mut out = Vec::new();
            let (mut bits, mut n) = (0u32, 0u32);
            for &b in v {
                let x = match b {
                    b'A'..=b'Z' => b - b'A',
                    b'a'..=b'z' => b - b'a' + 26,
                    b'0'..=b'9' => b - b'0' + 52,
                    b'+' | b'-' => 62,
                    b'/' | b'_' => 63,
                    _ => break,
                };
                bits = (bits << 6) | u32::from(x);
                n += 6;
                if n >= 8 {
                    n -= 8;
                    out.push(((bits >> n) & 0xff) as u8);
                }
            }
            out
        }
        let mut values: Vec<Vec<u8>> = vec![Vec::new()];
        for a in 0..=255u8 {
            values.push(vec![a]);
            for b in 0..=255u8 {
                values.push(vec![a, b]);
            }
        }
        let pieces: &[&[u8]] = &[
            b"aGVsbG8=",
            b"PHNjcmlwdD4",
            b"c2VsZWN0IDEg",
            b"Zm9v-_+/",
            b"==",
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZ",
            b"abcdefghijklmnopqrstuvwxyz0123456789",
            b"@[`{:",
        ];
        let mut rng = crate::testrng::Rng(0x3c6e_f372_fe94_f82b);
        for _ in 0..30_000 {
            values.push(rng.value(pieces));
        }
        for v in &values {
            assert_eq!(base64_decode(v), by_ranges(v), "{v:?}");
        }
    }

    /// `url_decode_into` (decoded bytes gathered 64 at a time in a stack buffer) appends what
    /// the byte-by-byte decoder it replaced appends, with and without `%u`, after existing
    /// bytes: every value of up to three bytes over the bytes that matter (`%`, `u`, `U`, `+`,
    /// hex digits of both cases, non-digits), and 40,000 random values of escapes, broken
    /// escapes and text, a third of them longer than one or two chunks.
    #[test]
    fn url_decode_chunks_equal_bytewise() {
        fn bytewise(v: &[u8], uni: bool, out: &mut Vec<u8>) {
            let mut i = 0;
            while i < v.len() {
                let b = v[i];
                if b == b'%' {
                    if uni && matches!(v.get(i + 1), Some(b'u' | b'U')) {
                        let (n, len) = hex_run(&v[i + 2..], 4);
                        if len == 4 {
                            out.push(code_point_byte(n));
                            i += 6;
                            continue;
                        }
                    }
                    if let (Some(h), Some(l)) = (
                        v.get(i + 1).copied().and_then(hex_val),
                        v.get(i + 2).copied().and_then(hex_val),
                    ) {
                        out.push(h * 16 + l);
                        i += 3;
                        continue;
                    }
                    out.push(b);
                } else if b == b'+' {
                    out.push(b' ');
                } else {
                    out.push(b);
                }
                i += 1;
            }
        }
        let alphabet = b"%uU+0aF9gG\xff ";
        let mut values: Vec<Vec<u8>> = vec![Vec::new()];
        for &a in alphabet {
            values.push(vec![a]);
            for &b in alphabet {
                values.push(vec![a, b]);
                for &c in alphabet {
                    values.push(vec![a, b, c]);
                }
            }
        }
        let pieces: &[&[u8]] = &[
            b"%41",
            b"%2f",
            b"%Ff",
            b"%u0041",
            b"%U00e9",
            b"%uFF0E",
            b"%u12",
            b"%4",
            b"%",
            b"%%",
            b"%g1",
            b"+",
            b"++",
            b"amount",
            b"shipping%5Baddress%5D",
            b"Order+%231234",
        ];
        let mut rng = crate::testrng::Rng(0x5be0_cd19_137e_2179);
        for k in 0..40_000 {
            let mut v = rng.value(pieces);
            if k % 3 == 0 {
                // Past one or two chunks: the buffer's flush and a last partial chunk.
                while v.len() < 60 + rng.below(150) {
                    v.extend_from_slice(&rng.value(pieces));
                }
            }
            values.push(v);
        }
        let (mut escapes, mut long) = (0, 0);
        for v in &values {
            escapes += usize::from(v.contains(&b'%'));
            long += usize::from(v.len() > 64);
            for uni in [false, true] {
                for prefix in [&b""[..], b"x=1&"] {
                    let (mut got, mut want) = (prefix.to_vec(), prefix.to_vec());
                    url_decode_into(v, uni, &mut got);
                    bytewise(v, uni, &mut want);
                    assert_eq!(got, want, "{v:?} uni={uni}");
                }
            }
        }
        assert!(escapes > 20_000 && long > 10_000, "{escapes} {long}");
    }

    /// `removeNulls` and `removeWhitespace` give what filtering the bytes one by one gives,
    /// on every single byte and 20,000 random values.
    #[test]
    fn removals_equal_filtering() {
        let pieces: &[&[u8]] = &[b" ", b"\t", b"\0", b"\xa0", b"a b", b"\r\n", b"x", b"\x0b\x0c"];
        let mut rng = crate::testrng::Rng(0x9b05_688c_2b3e_6c1f);
        let mut values: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        for _ in 0..20_000 {
            values.push(rng.value(pieces));
        }
        for v in &values {
            let nulls: Vec<u8> = v.iter().copied().filter(|&b| b != 0).collect();
            assert_eq!(Transform::RemoveNulls.apply(v), nulls);
            let spaces: Vec<u8> = v.iter().copied().filter(|&b| !is_space(b) && b != 0xa0).collect();
            assert_eq!(Transform::RemoveWhitespace.apply(v), spaces);
        }
    }

    /// Writing into a reused buffer gives what `apply` gives, for every transformation, on
    /// every single byte and 20,000 random values, the buffer holding the previous output.
    #[test]
    fn apply_into_equals_apply() {
        let pieces: &[&[u8]] = &[
            b"%3c",
            b"%u0041",
            b"+",
            b" ",
            b"\\x41",
            b"&lt;",
            b"aGVsbG8=",
            b"A;B,C",
            b"\0",
            b"/*x*/",
            b"../",
            b"\xc3\xa9",
        ];
        let mut rng = crate::testrng::Rng(0xa54f_f53a_5f1d_36f1);
        let mut values: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        for _ in 0..20_000 {
            values.push(rng.value(pieces));
        }
        let mut buf = b"leftover".to_vec();
        for t in Transform::ALL {
            for v in &values {
                t.apply_into(v, &mut buf);
                assert_eq!(buf, t.apply(v), "{t:?} on {:?}", String::from_utf8_lossy(v));
            }
        }
    }

    #[test]
    fn url_decoding() {
        assert_eq!(url_decode(b"a%20b+c%2", false), b"a b c%2");
        assert_eq!(url_decode(b"%u003cscript%uff1e", true), b"<script>");
        assert_eq!(url_decode(b"%252e%252e", false), b"%2e%2e");
        assert_eq!(url_decode(b"%", true), b"%");
        assert_eq!(url_decode(b"%4", true), b"%4");
    }

    #[test]
    fn html_js_css() {
        assert_eq!(html_entity_decode(b"&lt;a&#62;&#x3c;&quot;"), b"<a><\"");
        assert_eq!(js_decode(br"\x3c\u0073\n\'"), b"<s\n'");
        assert_eq!(css_decode(br"\3c \61"), b"<a");
    }

    #[test]
    fn paths_and_commands() {
        assert_eq!(normalize_path(b"/a/./b/../../etc//passwd", false), b"/etc/passwd");
        assert_eq!(
            normalize_path(br"..\..\windows\win.ini", true),
            b"../../windows/win.ini"
        );
        assert_eq!(cmd_line(b"C^at  'https://x' ; ls /etc"), b"cat https://x ls/etc");
        assert_eq!(replace_comments(b"un/**/ion/*x"), b"un ion ");
        assert_eq!(base64_decode(b"aGVsbG8="), b"hello");
        assert_eq!(escape_seq_decode(br"a\x41\101\n"), b"aAA\n");
    }

    /// `htmlEntityDecode`'s `may_change` is exact: true exactly when the decoder changes the
    /// value, on 40,000 random values of `&`s, reference names (whole, cut short, in either
    /// case), `#`, `x`, digits and hex digits, form-body text and random bytes, and on every
    /// string of up to four bytes over `&`, `#`, `x`, `X`, `3`, `f`, `g`, `l`, `t`, `;`.
    #[test]
    fn html_may_change_is_exact() {
        let pieces: &[&[u8]] = &[
            b"&",
            b"&",
            b"#",
            b"x",
            b"X",
            b"3",
            b"f",
            b"F",
            b"g",
            b";",
            b"amp",
            b"AMP",
            b"am",
            b"lt",
            b"Gt",
            b"quot",
            b"qu",
            b"nbsp",
            b"apos",
            b"colon",
            b"Colon",
            b"col",
            b"lpar",
            b"rpar",
            b"sol",
            b"so",
            b"tab",
            b"TAB",
            b"newline",
            b"newlin",
            b"currency=usd",
            b"&amount=",
            b"%26",
            b"metadata%5B",
            b"&#",
            b"&#x",
            b"&#X",
            b"&#x4",
            b"&#6",
            b"&&",
            b"=",
        ];
        let mut rng = crate::testrng::Rng(0x6a7b_1e5d_0c0d_e5e5);
        let (mut changed, mut kept) = (0usize, 0usize);
        let mut check = |v: &[u8]| {
            let out = html_entity_decode(v);
            assert_eq!(html_may_change(v), out != v, "{:?}", String::from_utf8_lossy(v));
            if out != v {
                changed += 1;
            } else if v.contains(&b'&') {
                kept += 1;
            }
        };
        for _ in 0..40_000 {
            let v = rng.value(pieces);
            check(&v);
        }
        let alphabet = [b'&', b'#', b'x', b'X', b'3', b'f', b'g', b'l', b't', b';'];
        let mut level: Vec<Vec<u8>> = vec![Vec::new()];
        for _ in 0..4 {
            let mut next = Vec::new();
            for p in &level {
                for &c in &alphabet {
                    let mut x = p.clone();
                    x.push(c);
                    check(&x);
                    next.push(x);
                }
            }
            level = next;
        }
        assert!(
            changed > 4_000 && kept > 10_000,
            "changed {changed}, kept with an & {kept}"
        );
    }

    #[test]
    fn may_change_is_conservative() {
        // Base64Decode and Length always may change a value, so they assert nothing here.
        let all = Transform::ALL;
        let samples: [&[u8]; 34] = [
            b"",
            b".",
            b"..",
            b"abc",
            b"ABC",
            b"a b",
            b"pm_123",
            b"a/b",
            b"x--y",
            b"a&b",
            b"caf\xc3\xa9",
            b"usd",
            b"a  b",
            b"a\tb",
            b"a \tb",
            b"a\xa0b",
            b" ",
            b"a-b",
            b"a*b",
            b"a/*b",
            b"a*/b",
            b"#x",
            b"/",
            b"/a/",
            b"a//b",
            b"a/./b",
            b"./a",
            b"a/.",
            b".a/b.c",
            b"a/../b",
            b"...",
            b"x/.hidden",
            b"a\\b",
            b"/a/b.txt",
        ];
        // Every string of up to four bytes over the characters the shortcuts look at.
        let alphabet = [b'a', b'A', b' ', b'\t', b'.', b'/', b'-', b'*', b'#', b'\\', 0xa0];
        let mut all_short: Vec<Vec<u8>> = vec![Vec::new()];
        for len in 1..=4 {
            let prev: Vec<Vec<u8>> = all_short.iter().filter(|x| x.len() == len - 1).cloned().collect();
            for p in prev {
                for &c in &alphabet {
                    let mut x = p.clone();
                    x.push(c);
                    all_short.push(x);
                }
            }
        }
        for t in all {
            for s in samples.iter().copied().chain(all_short.iter().map(Vec::as_slice)) {
                if !t.may_change(s) {
                    assert_eq!(t.apply(s), s, "{t:?} changed {s:?}");
                }
            }
        }
    }

    #[test]
    fn untriggered_transformations_only_change_case() {
        let all = Transform::ALL;
        // Every byte alone and in pairs, plus mixed-case words and typical API values.
        let mut samples: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        for a in 0..=255u8 {
            for b in [
                b'a', b'Z', b'/', b'.', b' ', b'-', b'*', b'#', b'&', b'%', b'\\', b'(', 0xc3,
            ] {
                samples.push(vec![a, b]);
                samples.push(vec![b, a]);
            }
        }
        for s in [
            "Order_1234",
            "usd",
            "pm_1Q2w3E4r5T6y7U8i9O0p",
            "latest_charge",
            "a..b",
            "x(y)z",
        ] {
            samples.push(s.as_bytes().to_vec());
        }
        for t in all {
            for s in &samples {
                if t.trigger_mask() & value_mask(s) == 0 {
                    assert!(t.apply(s).eq_ignore_ascii_case(s), "{t:?} changed {s:?}");
                }
                if t.change_mask() & value_mask(s) == 0 {
                    assert_eq!(t.apply(s), *s, "{t:?} changed {s:?}");
                }
            }
        }
    }

    #[test]
    fn utf8_forms() {
        assert_eq!(utf8_to_unicode("a\u{ff1c}".as_bytes()), b"a%uff1c");
        assert_eq!(url_decode(&utf8_to_unicode("\u{ff1c}".as_bytes()), true), b"<");
    }
}
