//! Word screens: an exact necessary condition for the command-injection expressions of the
//! 932 family (932230, 932235, 932236, 932250, 932260, 932340), checked before they run.
//!
//! These expressions share one shape: `(?i)(?:PREFIX)MIDDLE COMMAND`. `PREFIX` is where a
//! command can begin: the value's start (`^`, after an optional `json.` or `\`), a prefix
//! command word (`busybox`, `command`, `env`, `eval`, `watch`, `strace`, `ltrace`, `nohup`,
//! `time`, with evasion padding between their letters), or a shell metacharacter (`;`, `|`,
//! `&`, `` ` ``, `$(`, `<(`, `()`, ...). `MIDDLE` is optional whitespace, `!`, `(`, variable
//! assignments, quotes and a path ending with `/`; `COMMAND` is the rule's list of command
//! words. The `^` branch needs no literal, so the prefilter finds no atom for 932236, 932250 and
//! 932260, and they ran on every argument name and value.
//!
//! A value holding none of the metacharacters' bytes ([`HOT`]), no `(` followed by `)`, and no
//! prefix command word (its letters in order, padding bytes allowed between them) can only match
//! through the `^` branch. Without those bytes `MIDDLE` can only be whitespace, `!`, `(`,
//! quotes, backslashes and a path, so the command word starts either where the leading run of
//! those bytes ends (also after a leading `json.`) or after a `/` and the quotes or backslashes
//! after it. The screen tests the first three bytes there against the command words'
//! beginnings ([`WordScreen::starts_at`]): a value failing every test cannot match, and its
//! expression is not run. `word_screens_never_reject_a_match` compares the screen with the
//! expressions on random values.

use crate::screen::ByteSet;
use regex_syntax::hir::{Class, Hir, HirKind};
use std::collections::BTreeSet;

/// The evasion padding between the letters of a command word (`~` in [`PREFIX_WORDS`]).
const PAD: &str = r#"["'\)\[\x5c]*(?:(?:(?:\|\||&&)[\s\x0b]*)?\$[!#\(\*\-0-9\?@_a-\{]*)?\x5c?"#;

/// The prefix alternatives of the command words and the first metacharacters, `~` for [`PAD`].
const PREFIX_WORDS: &str = r#"b~u~s~y~b~o~x|(?:c~o~m~m~a~n~d|e~(?:n~v|v~a~l)|w~a~t~c~h)~["']?[\s\x0b&\),<>\|].*|[ls]~t~r~a~c~e|n~o~h~u~p|t~i~m~e~(?:["']?[\s\x0b&\),<>\|].*|o~u~t)|[\n\r;=`\{]|\|\|?|&&?"#;

/// The other metacharacter alternatives.
const PREFIX_META: &str = r#"\$(?:\(\(?|[\[\{])|<(?:\(|<<)|>\(|\([\s\x0b]*\)"#;

/// What may come between the prefix and the command word.
const MIDDLE: &str = r#"[\s\x0b]*(?:[!\$\(\{][\s\x0b]*|(?:[0-9A-Z_a-z]+=[^\s\x0b]+|\$[0-9A-Z_a-z]+)[\s\x0b]+)*[\s\x0b]*["']*(?:["'-\+\--9\?A-\]_a-z\|]+/)?["'\x5c]*"#;

/// Bytes of every prefix alternative but the start, the prefix command words and `()`, and of
/// the assignments and `$`-variables of `MIDDLE`: a value with one of them is not screened.
const HOT: ByteSet = ByteSet::from_bytes(b"\n\r;=`{|&$<>");

/// Bytes `MIDDLE` may hold before a command word when the value has no [`HOT`] byte and no path:
/// whitespace (`\s` is `[\t\n\x0b\x0c\r ]` in byte mode), `!`, `(`, quotes and `\`.
const LEAD: ByteSet = ByteSet::from_bytes(b"\t\n\x0b\x0c\r !(\"'\\");

/// Bytes between a path's `/` and the command word.
const AFTER_PATH: ByteSet = ByteSet::from_bytes(b"\"'\\");

/// The padding's bytes when the value has no `$`, `|` or `&`.
const PAD_BYTES: ByteSet = ByteSet::from_bytes(b"\"')[\\");

/// The prefix command words (`timeout` begins with `time`).
const PREFIX_COMMANDS: [&[u8]; 9] = [
    b"busybox", b"command", b"env", b"eval", b"watch", b"strace", b"ltrace", b"nohup", b"time",
];

/// The letters of each of [`PREFIX_COMMANDS`], as bits of the second word of a [`ByteSet`]
/// (lower case).
const PREFIX_LETTERS: [u64; 9] = {
    let mut out = [0u64; 9];
    let mut i = 0;
    while i < PREFIX_COMMANDS.len() {
        out[i] = ByteSet::from_bytes(PREFIX_COMMANDS[i]).0[1];
        i += 1;
    }
    out
};

/// Most prefixes a screen's derivation keeps (a larger set gives no screen).
const MAX_PREFIXES: usize = 100_000;

/// The screen of one expression: the beginnings (up to three bytes, ASCII case ignored) of its
/// command words, as bit tables over byte classes.
#[derive(Debug)]
pub(crate) struct WordScreen {
    /// Per byte: its class (0 for a byte no beginning holds; both cases of a letter share one).
    class: [u8; 256],
    /// Classes of the command words of one byte.
    ones: u64,
    /// Bit `a * 64 + b`: a command word of two bytes of classes `a`, `b`.
    pairs: Box<[u64; 64]>,
    /// Bit `(a * 64 + b) * 64 + c`: a command word beginning with bytes of classes `a`, `b`, `c`.
    triples: Box<[u64; 4096]>,
}

/// Whether a value of these bytes holds a [`HOT`] byte (and so is [`open`]).
#[inline]
pub(crate) fn hot(bytes: &ByteSet) -> bool {
    bytes.intersects(&HOT)
}

/// Whether a value must be given to the expressions without screening: it holds a [`HOT`]
/// byte, a `(` followed by optional whitespace and `)`, or a prefix command word (its letters in
/// order with padding bytes between them). `bytes` are the value's bytes. The same for every
/// expression with a [`WordScreen`].
pub(crate) fn open(v: &[u8], bytes: &ByteSet) -> bool {
    if hot(bytes) {
        return true;
    }
    if bytes.contains(b'(') && bytes.contains(b')') {
        for at in memchr::memchr_iter(b'(', v) {
            let rest = v.get(at + 1..).unwrap_or_default();
            if rest.iter().find(|&&b| !is_space(b)) == Some(&b')') {
                return true;
            }
        }
    }
    // The prefix command words whose letters are all present (both cases read as lower case),
    // looked for in one pass from the positions of their first letters.
    let w = bytes.0[1];
    let letters = w | ((w & UPPER_WORD1) << 32);
    let mut present = 0u16;
    for (k, &need) in PREFIX_LETTERS.iter().enumerate() {
        if letters & need == need {
            present |= 1 << k;
        }
    }
    if present == 0 {
        return false;
    }
    for (i, &b) in v.iter().enumerate() {
        let mut m = PREFIX_FIRST[usize::from(b)] & present;
        while m != 0 {
            let k = m.trailing_zeros() as usize;
            m &= m - 1;
            if follows_padded(v, i + 1, PREFIX_COMMANDS[k].get(1..).unwrap_or_default()) {
                return true;
            }
        }
    }
    false
}

/// Per byte: bit `k` when [`PREFIX_COMMANDS`]`[k]` begins with it (either case).
const PREFIX_FIRST: [u16; 256] = {
    let mut out = [0u16; 256];
    let mut k = 0;
    while k < PREFIX_COMMANDS.len() {
        let b = PREFIX_COMMANDS[k][0];
        out[b as usize] |= 1 << k;
        out[b.to_ascii_uppercase() as usize] |= 1 << k;
        k += 1;
    }
    out
};

/// `A`-`Z` in the second word of a [`ByteSet`].
const UPPER_WORD1: u64 = ((1u64 << 26) - 1) << 1;

/// `\s` in byte mode, and `\x0b`.
fn is_space(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ')
}

/// Whether the letters `rest` (lower case) follow in `v` from `j` on, with [`PAD_BYTES`] allowed
/// before each of them.
fn follows_padded(v: &[u8], mut j: usize, rest: &[u8]) -> bool {
    for &want in rest {
        while v.get(j).is_some_and(|&x| PAD_BYTES.contains(x)) {
            j += 1;
        }
        match v.get(j) {
            Some(&x) if x.to_ascii_lowercase() == want => j += 1,
            _ => return false,
        }
    }
    true
}

impl WordScreen {
    /// The screen of an expression (as the `regex` crate reads it) of the family's shape;
    /// `None` for any other expression, or when its command words' beginnings could start
    /// within `MIDDLE` or be empty.
    pub(crate) fn of_pattern(pattern: &str) -> Option<WordScreen> {
        let words = PREFIX_WORDS.replace('~', PAD);
        let with_start = format!(r"(?i)(?:^(?:json\.|\x5c)?|{words}|{PREFIX_META}){MIDDLE}");
        let with_backslash = format!(r"(?i)(?:{words}|^\x5c|{PREFIX_META}){MIDDLE}");
        let rest = pattern
            .strip_prefix(with_start.as_str())
            .or_else(|| pattern.strip_prefix(with_backslash.as_str()))?;
        let hir = crate::prefilter::parse(&format!("(?i){rest}")).ok()?;
        let set = prefixes(&hir, 3)?;
        WordScreen::of_prefixes(&set)
    }

    /// The tables of a set of beginnings (lower case; those shorter than three bytes are whole
    /// command words).
    fn of_prefixes(set: &BTreeSet<Pre>) -> Option<WordScreen> {
        let set: Vec<Vec<u8>> = set.iter().map(|&p| pre_bytes(p)).collect();
        let mut seen = ByteSet::EMPTY;
        for p in &set {
            match p.first() {
                // An empty command word, or one that could begin within `MIDDLE`.
                None => return None,
                Some(&b) if LEAD.contains(b) => return None,
                Some(_) => {}
            }
            for &b in p {
                seen.insert(b);
            }
        }
        let mut class = [0u8; 256];
        let mut n = 0u8;
        for b in seen.bytes() {
            // Classes 1 to 63; bytes beyond share the last.
            n = (n + 1).min(63);
            class[usize::from(b)] = n;
        }
        for b in b'A'..=b'Z' {
            class[usize::from(b)] = class[usize::from(b.to_ascii_lowercase())];
        }
        let mut s = WordScreen {
            class,
            ones: 0,
            pairs: Box::new([0; 64]),
            triples: Box::new([0; 4096]),
        };
        for p in &set {
            let c: Vec<usize> = p.iter().map(|&b| usize::from(s.class[usize::from(b)])).collect();
            match c[..] {
                [a] => s.ones |= 1 << a,
                [a, b] => s.pairs[a] |= 1 << b,
                [a, b, x] => s.triples[a * 64 + b] |= 1 << x,
                _ => return None,
            }
        }
        Some(s)
    }

    /// Whether a command word of the expression can begin at `q` in `v` (false when nothing of
    /// it does).
    #[inline]
    pub(crate) fn starts_at(&self, v: &[u8], q: usize) -> bool {
        let cls = |i: usize| v.get(i).map(|&b| usize::from(self.class[usize::from(b)]));
        let Some(a) = cls(q) else { return false };
        if self.ones & (1 << a) != 0 {
            return true;
        }
        let Some(b) = cls(q + 1) else { return false };
        if self.pairs[a] & (1 << b) != 0 {
            return true;
        }
        let Some(x) = cls(q + 2) else { return false };
        self.triples[a * 64 + b] & (1 << x) != 0
    }

    /// Whether the expression may match `v`, a value that is not [`open`] (`bytes` are its
    /// bytes): a command word can begin after its leading whitespace, `!`, `(`, quotes and
    /// backslashes (also after a leading `json.`), or after a `/`.
    pub(crate) fn admits(&self, v: &[u8], bytes: &ByteSet) -> bool {
        if self.starts_at(v, skip(v, 0, &LEAD)) {
            return true;
        }
        if v.get(..5).is_some_and(|p| p.eq_ignore_ascii_case(b"json.")) && self.starts_at(v, skip(v, 5, &LEAD)) {
            return true;
        }
        bytes.contains(b'/') && memchr::memchr_iter(b'/', v).any(|k| self.starts_at(v, skip(v, k + 1, &AFTER_PATH)))
    }
}

/// The first position from `i` on whose byte is not in `set` (or the length).
fn skip(v: &[u8], mut i: usize, set: &ByteSet) -> usize {
    while v.get(i).is_some_and(|&b| set.contains(b)) {
        i += 1;
    }
    i
}

/// A beginning of at most three bytes, packed: its length in the top byte, then its bytes.
type Pre = u32;

/// The beginning of these bytes (at most three).
fn pack(bytes: &[u8]) -> Pre {
    let mut p = (bytes.len().min(3) as u32) << 24;
    for (i, &b) in bytes.iter().take(3).enumerate() {
        p |= u32::from(b) << (16 - 8 * i);
    }
    p
}

/// The length of a beginning.
fn pre_len(p: Pre) -> usize {
    (p >> 24) as usize
}

/// The bytes of a beginning.
fn pre_bytes(p: Pre) -> Vec<u8> {
    (0..pre_len(p)).map(|i| (p >> (16 - 8 * i)) as u8).collect()
}

/// The beginnings of the strings `h` matches, lower case: each string's first `k` bytes, or
/// the whole string when shorter (assertions read as empty, so a superset). `None` when the set
/// grows beyond [`MAX_PREFIXES`].
fn prefixes(h: &Hir, k: usize) -> Option<BTreeSet<Pre>> {
    let one = |s: &[u8]| Some(BTreeSet::from([pack(s)]));
    if k == 0 {
        return one(&[]);
    }
    match h.kind() {
        HirKind::Empty | HirKind::Look(_) => one(&[]),
        HirKind::Literal(l) => {
            let lower: Vec<u8> = l.0.iter().take(k).map(u8::to_ascii_lowercase).collect();
            one(&lower)
        }
        HirKind::Class(Class::Bytes(c)) => Some(
            c.ranges()
                .iter()
                .flat_map(|r| r.start()..=r.end())
                .map(|b| pack(&[b.to_ascii_lowercase()]))
                .collect(),
        ),
        HirKind::Class(Class::Unicode(c)) => {
            let mut out = BTreeSet::new();
            for r in c.ranges() {
                for ch in r.start()..=r.end() {
                    // Byte mode: only ASCII classes are expected.
                    let b = u8::try_from(u32::from(ch)).ok().filter(u8::is_ascii)?;
                    out.insert(pack(&[b.to_ascii_lowercase()]));
                }
            }
            Some(out)
        }
        HirKind::Capture(c) => prefixes(&c.sub, k),
        HirKind::Concat(parts) => {
            let mut acc = BTreeSet::from([pack(&[])]);
            for p in parts {
                // Only as many bytes of the part as the shortest beginning so far lacks.
                let need = k - acc.iter().map(|&x| pre_len(x)).min().unwrap_or(k);
                if need == 0 {
                    break;
                }
                acc = concat(&acc, &prefixes(p, need)?, k)?;
            }
            Some(acc)
        }
        HirKind::Alternation(alts) => {
            let mut out = BTreeSet::new();
            for a in alts {
                out.extend(prefixes(a, k)?);
                if out.len() > MAX_PREFIXES {
                    return None;
                }
            }
            Some(out)
        }
        HirKind::Repetition(r) => {
            let sub = prefixes(&r.sub, k)?;
            // `n` repetitions for n = 0..=k (`reps[n]`); more give the same beginnings as `k`
            // (each repetition adds a byte, or an empty one adds none).
            let mut reps = vec![BTreeSet::from([pack(&[])])];
            for n in 1..=k {
                let next = concat(&reps[n - 1], &sub, k)?;
                reps.push(next);
            }
            let max = r.max.unwrap_or(u32::MAX);
            let kk = k as u32;
            let mut out = BTreeSet::new();
            for (n, set) in reps.iter().enumerate() {
                let n = n as u32;
                if (r.min..=max).contains(&n) || (n == kk && r.min > kk) {
                    out.extend(set.iter().copied());
                }
            }
            Some(out)
        }
    }
}

/// The beginnings (up to `k` bytes) of `a`'s strings followed by `b`'s.
fn concat(a: &BTreeSet<Pre>, b: &BTreeSet<Pre>, k: usize) -> Option<BTreeSet<Pre>> {
    let mut out = BTreeSet::new();
    for &x in a {
        let lx = pre_len(x);
        if lx >= k {
            out.insert(x);
            continue;
        }
        for &y in b {
            let n = pre_len(y).min(k - lx);
            // `y`'s first `n` bytes after `x`'s `lx`.
            let ybytes = (y & 0x00ff_ffff) >> (8 * (3 - n)) << (8 * (3 - n));
            out.insert((((lx + n) as u32) << 24) | (x & 0x00ff_ffff) | (ybytes >> (8 * lx)));
        }
        if out.len() > MAX_PREFIXES {
            return None;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testrng::Rng;
    use regex::bytes::RegexBuilder;

    /// A screen never rejects a value its expression matches: for every expression of the
    /// shipped table with a screen (932230, 932235, 932236, 932239, 932250, 932260, 932340),
    /// 25,000 random values built from shell separators, prefix command words with evasion
    /// padding, leading whitespace, `!`, `(`, quotes, `json.` and paths, the expression's own
    /// command words (in mixed case, sometimes padded) and what follows a command, half of them
    /// with random bytes and benign text around.
    #[test]
    fn word_screens_never_reject_a_match() {
        let table: serde_json::Value = serde_json::from_str(crate::rules::CRS_JSON).expect("table");
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let seps: [&[u8]; 21] = [
            b";", b"|", b"||", b"&", b"&&", b"\n", b"\r", b"`", b"{", b"=", b"$(", b"$((", b"$[", b"${", b"<(", b"<<<",
            b">(", b"()", b"( )", b"(\t)", b"",
        ];
        let prefix_words: [&[u8]; 10] = [
            b"busybox", b"command", b"env", b"eval", b"watch", b"strace", b"ltrace", b"nohup", b"time", b"timeout",
        ];
        let pads: [&[u8]; 10] = [b"\"", b"'", b")", b"[", b"\\", b"''", b"\\\\", b"$x", b"||$a", b"&&$b"];
        let after_prefix: [&[u8]; 9] = [b" ", b"\t", b"\"", b")", b",", b"<", b">", b"|", b""];
        let leads: [&[u8]; 22] = [
            b"",
            b" ",
            b"\t",
            b"\x0b",
            b"!",
            b"(",
            b"'",
            b"\"",
            b"\\",
            b"json.",
            b"JSON.",
            b"/bin/",
            b"/usr/local/bin/",
            b"a/",
            b"x=1 ",
            b"$v ",
            b"{",
            b"!(",
            b"\"/bin/\\",
            b"('",
            b"./",
            b"json.\\",
        ];
        let tails: [&[u8]; 16] = [
            b"",
            b" ",
            b" -la",
            b";",
            b"\"",
            b"'",
            b")",
            b",",
            b"<",
            b">",
            b"|",
            b"&",
            b"x",
            b"1",
            b"/etc/passwd",
            b" /tmp",
        ];
        let benign: [&[u8]; 8] = [
            b"metadata[line_0]",
            b"SKU-0001 Cotton tee (blue) x1",
            b"statement_descriptor_suffix",
            b"abc",
            b"x",
            b"12",
            b"Order #1234 - 2x T-shirt (size: M/L)",
            b"jenny.rosen@example.com",
        ];
        let (mut exprs, mut cases, mut matches, mut screened, mut rejected, mut screened_hits) = (0, 0, 0, 0, 0, 0);
        for r in table["rules"].as_array().into_iter().flatten() {
            let Some(p) = r["op"].as_str().and_then(|o| o.strip_prefix("@rx ")) else {
                continue;
            };
            let p = crate::rules::pcre_bytes(p).into_owned();
            let Some(ws) = WordScreen::of_pattern(&p) else { continue };
            let re = RegexBuilder::new(&p).unicode(false).build().expect("compiles");
            exprs += 1;
            let words = crate::testrng::words(&p.replace(PAD, ""));
            let mut pieces: Vec<&[u8]> = words.iter().map(Vec::as_slice).collect();
            pieces.extend(
                seps.iter()
                    .chain(&leads)
                    .chain(&pads)
                    .chain(&prefix_words)
                    .chain(&benign),
            );
            let padded = |rng: &mut Rng, word: &[u8], v: &mut Vec<u8>| {
                let pad = rng.below(3) == 0;
                for (i, &b) in word.iter().enumerate() {
                    if pad && i > 0 && rng.below(2) == 0 {
                        v.extend_from_slice(pads[rng.below(pads.len())]);
                    }
                    v.push(if rng.below(4) == 0 { b.to_ascii_uppercase() } else { b });
                }
            };
            for _ in 0..25_000 {
                let v = if rng.below(5) == 0 {
                    rng.value(&pieces)
                } else {
                    let mut v = Vec::new();
                    if rng.below(3) == 0 {
                        v.extend_from_slice(benign[rng.below(benign.len())]);
                        if rng.below(2) == 0 {
                            v.push(b' ');
                        }
                    }
                    match rng.below(3) {
                        0 => v.extend_from_slice(seps[rng.below(seps.len())]),
                        1 => {
                            let w = prefix_words[rng.below(prefix_words.len())];
                            padded(&mut rng, w, &mut v);
                            v.extend_from_slice(after_prefix[rng.below(after_prefix.len())]);
                        }
                        _ => {}
                    }
                    for _ in 0..rng.below(3) {
                        v.extend_from_slice(leads[rng.below(leads.len())]);
                    }
                    let w = &words[rng.below(words.len())];
                    padded(&mut rng, w, &mut v);
                    v.extend_from_slice(tails[rng.below(tails.len())]);
                    if rng.below(4) == 0 {
                        v.extend_from_slice(benign[rng.below(benign.len())]);
                    }
                    v
                };
                cases += 1;
                let bytes = ByteSet::of(&v);
                let hit = re.is_match(&v);
                matches += usize::from(hit);
                if open(&v, &bytes) {
                    continue;
                }
                screened += 1;
                screened_hits += usize::from(hit);
                let admitted = ws.admits(&v, &bytes);
                rejected += usize::from(!admitted);
                assert!(
                    admitted || !hit,
                    "rule {} matches {:?}, which its word screen rejects",
                    r["id"],
                    String::from_utf8_lossy(&v)
                );
            }
        }
        assert!(exprs >= 6, "only {exprs} expressions have a word screen");
        assert!(cases >= 150_000, "{cases}");
        assert!(
            matches > 10_000 && screened > 20_000 && rejected > 20_000 && screened_hits > 1_000,
            "{matches} {screened} {rejected} {screened_hits}"
        );
    }
}
