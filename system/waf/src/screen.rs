//! Byte-class screens: a necessary condition on the bytes of a value, checked before a rule's
//! operator runs.
//!
//! For each operator the engine derives, from its expression (or phrase list), a few sets of
//! bytes such that every value the operator can match holds at least one byte of *each* set
//! ([`Screen`]). The bytes a value holds after a rule's transformations are bounded without
//! running them: [`Transform::byte_image`] maps the set of bytes of a transformation's input to
//! a superset of the bytes of its output (a `%` in the input of `urlDecode` can become any byte;
//! without one, only `+` becomes a space). So the set of bytes of a raw value, carried through
//! the pipeline, bounds the transformed value, and a rule whose screen that bound fails cannot
//! match: the engine skips the transformation and the operator.
//!
//! Soundness is the whole point, as for the literal prefilter: a screen never rejects a value
//! its operator could match. The tests check it over the rule table's expressions on random and
//! crafted values, and the corpus test checks that the fast path keeps every verdict.

use crate::transform::Transform;
use regex_syntax::hir::{Class, Hir, HirKind};

/// The length from which [`ByteSet::of`] fills a table of flags instead of the bitmap.
const OF_TABLE_FROM: usize = 128;

/// A set of byte values, as a 256-bit bitmap.
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug, Hash)]
pub struct ByteSet(pub [u64; 4]);

/// `A`-`Z` in the second word of a [`ByteSet`] (bytes 64-127).
const UPPER_WORD1: u64 = ((1u64 << 26) - 1) << 1;

impl ByteSet {
    /// No byte.
    pub const EMPTY: ByteSet = ByteSet([0; 4]);
    /// Every byte.
    pub const ALL: ByteSet = ByteSet([u64::MAX; 4]);

    /// The bytes of `v`.
    pub fn of(v: &[u8]) -> ByteSet {
        if v.len() >= OF_TABLE_FROM {
            return ByteSet::of_table(v);
        }
        let mut s = [0u64; 4];
        for &b in v {
            s[usize::from(b >> 6)] |= 1 << (b & 63);
        }
        ByteSet(s)
    }

    /// [`ByteSet::of`] for a long value: a flag per byte value, set by one store per byte
    /// (the bitmap's read, shift and write per byte cost about twice that), then gathered
    /// eight flags at a time (`byte_sets_of_long_values_agree`).
    #[inline(never)]
    fn of_table(v: &[u8]) -> ByteSet {
        let mut seen = [0u8; 256];
        for &b in v {
            seen[usize::from(b)] = 1;
        }
        let mut s = [0u64; 4];
        for (w, flags) in s.iter_mut().zip(seen.chunks_exact(64)) {
            for (k, eight) in flags.chunks_exact(8).enumerate() {
                let mut x = [0u8; 8];
                x.copy_from_slice(eight);
                // Bytes of 0 or 1: the multiplication moves byte `i`'s flag to bit 56 + `i`
                // without carries (the other products land below bit 56 or above bit 63).
                let bits = u64::from_le_bytes(x).wrapping_mul(0x0102_0408_1020_4080) >> 56;
                *w |= bits << (8 * k);
            }
        }
        ByteSet(s)
    }

    /// The set of the given bytes.
    pub const fn from_bytes(bytes: &[u8]) -> ByteSet {
        let mut s = [0u64; 4];
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            s[(b >> 6) as usize] |= 1 << (b & 63);
            i += 1;
        }
        ByteSet(s)
    }

    /// Whether `b` is in the set.
    pub fn contains(&self, b: u8) -> bool {
        self.0[usize::from(b >> 6)] & (1 << (b & 63)) != 0
    }

    /// Adds `b`.
    pub fn insert(&mut self, b: u8) {
        self.0[usize::from(b >> 6)] |= 1 << (b & 63);
    }

    /// Both sets' bytes.
    pub fn union(self, o: ByteSet) -> ByteSet {
        ByteSet([
            self.0[0] | o.0[0],
            self.0[1] | o.0[1],
            self.0[2] | o.0[2],
            self.0[3] | o.0[3],
        ])
    }

    /// Whether the sets share a byte.
    pub fn intersects(&self, o: &ByteSet) -> bool {
        (self.0[0] & o.0[0]) | (self.0[1] & o.0[1]) | (self.0[2] & o.0[2]) | (self.0[3] & o.0[3]) != 0
    }

    /// Whether every byte of `self` is in `o`.
    pub fn is_subset(&self, o: &ByteSet) -> bool {
        (0..4).all(|i| self.0[i] & !o.0[i] == 0)
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0 == [0; 4]
    }

    /// The bytes in the set, in increasing order.
    pub fn bytes(&self) -> impl Iterator<Item = u8> + '_ {
        self.0.iter().enumerate().flat_map(|(w, &word)| {
            let mut bits = word;
            std::iter::from_fn(move || {
                (bits != 0).then(|| {
                    let b = (w * 64) as u32 + bits.trailing_zeros();
                    bits &= bits - 1;
                    b as u8
                })
            })
        })
    }

    /// Calls `f` on each byte in the set, in increasing order (a plain loop over the words,
    /// cheaper than [`ByteSet::bytes`]).
    #[inline]
    pub fn for_each(&self, mut f: impl FnMut(u8)) {
        for (w, &word) in self.0.iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                f((w * 64) as u8 | bits.trailing_zeros() as u8);
                bits &= bits - 1;
            }
        }
    }

    /// The bytes of both sets.
    pub fn intersection(self, o: ByteSet) -> ByteSet {
        ByteSet([
            self.0[0] & o.0[0],
            self.0[1] & o.0[1],
            self.0[2] & o.0[2],
            self.0[3] & o.0[3],
        ])
    }

    /// The set with upper-case ASCII letters replaced by their lower-case forms.
    pub fn lowercased(self) -> ByteSet {
        let up = self.0[1] & UPPER_WORD1;
        ByteSet([self.0[0], (self.0[1] & !UPPER_WORD1) | (up << 32), self.0[2], self.0[3]])
    }

    /// The set with both ASCII cases of every letter in it.
    pub fn both_cases(self) -> ByteSet {
        let up = self.0[1] & UPPER_WORD1;
        let low = (self.0[1] >> 32) & UPPER_WORD1;
        ByteSet([self.0[0], self.0[1] | (up << 32) | low, self.0[2], self.0[3]])
    }

    /// How likely a typical API value (identifiers, amounts, prose) holds a byte of the set:
    /// a rough weight used only to choose among sound screens.
    fn cost(&self) -> f64 {
        let mut sum = 0.0;
        for (w, &word) in self.0.iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                let b = (w * 64 + bits.trailing_zeros() as usize) as u8;
                bits &= bits - 1;
                sum += match b {
                    b'a'..=b'z' => 0.25,
                    b'0'..=b'9' => 0.2,
                    b'A'..=b'Z' | b' ' => 0.1,
                    b'.' | b',' | b'-' | b'_' | b'/' | b':' | b'@' | b'=' | b'&' | b'+' | b'%' => 0.05,
                    b'(' | b')' | b'#' | b'\'' | b';' => 0.03,
                    _ => 0.005,
                };
            }
        }
        sum
    }
}

/// What `cmdLine` turns into a space.
const CMD_SPACES: ByteSet = ByteSet::from_bytes(b" \t\n\r\x0b\x0c,;");
/// What `compressWhitespace` turns into a space.
const WIDE_SPACES: ByteSet = ByteSet::from_bytes(b" \t\n\r\x0b\x0c\xa0");
/// Bytes 0x80-0xff.
const NON_ASCII: ByteSet = ByteSet([0, 0, u64::MAX, u64::MAX]);
/// What `utf8toUnicode` writes for a multi-byte character.
const UNICODE_ESCAPE: ByteSet = ByteSet::from_bytes(b"%u0123456789abcdef");

impl Transform {
    /// A superset of the bytes of `self.apply(v)` for every `v` whose bytes are in `s`.
    pub fn byte_image(self, s: ByteSet) -> ByteSet {
        let space = |mut x: ByteSet| {
            x.insert(b' ');
            x
        };
        match self {
            Transform::Lowercase => s.lowercased(),
            // An escape can stand for any byte.
            Transform::UrlDecodeUni | Transform::UrlDecode => {
                if s.contains(b'%') {
                    ByteSet::ALL
                } else if s.contains(b'+') {
                    space(s)
                } else {
                    s
                }
            }
            Transform::HtmlEntityDecode => {
                if s.contains(b'&') {
                    ByteSet::ALL
                } else {
                    s
                }
            }
            Transform::JsDecode | Transform::CssDecode | Transform::EscapeSeqDecode => {
                if s.contains(b'\\') {
                    ByteSet::ALL
                } else {
                    s
                }
            }
            Transform::RemoveNulls | Transform::RemoveWhitespace => s,
            Transform::RemoveCommentsChar | Transform::RemoveComments => s,
            // A multi-byte character becomes `%uXXXX` (lower-case hex); others stay.
            Transform::Utf8ToUnicode => {
                if s.intersects(&NON_ASCII) {
                    s.union(UNICODE_ESCAPE)
                } else {
                    s
                }
            }
            // Drops `\ " ' ^`, turns whitespace, `,` and `;` into a space, lower-cases the rest.
            Transform::CmdLine => {
                let l = s.lowercased();
                if s.intersects(&CMD_SPACES) {
                    space(l)
                } else {
                    l
                }
            }
            // Segments of the input joined by `/`, which only an input with a `/` has.
            Transform::NormalizePath => s,
            Transform::NormalizePathWin => {
                if s.contains(b'\\') {
                    let mut x = s;
                    x.insert(b'/');
                    x
                } else {
                    s
                }
            }
            Transform::CompressWhitespace => {
                if s.intersects(&WIDE_SPACES) {
                    space(s)
                } else {
                    s
                }
            }
            Transform::ReplaceComments => {
                if s.contains(b'/') {
                    space(s)
                } else {
                    s
                }
            }
            Transform::Base64Decode => ByteSet::ALL,
            Transform::Length => ByteSet::from_bytes(b"0123456789"),
        }
    }
}

/// The bytes a pipeline's output can hold, for an input of bytes `s`.
pub fn pipeline_image(pipeline: &[Transform], s: ByteSet) -> ByteSet {
    pipeline.iter().fold(s, |x, t| t.byte_image(x))
}

/// Most sets a screen keeps (each costs a few instructions per check).
const MAX_SETS: usize = 3;
/// A set this likely to be present (see `ByteSet::cost`) screens out too little to keep.
const USELESS: f64 = 0.9;
/// Most branches of an alternation screened one by one (each costs a few set tests per check:
/// on the bench's 1 KB request, 4 cost least; 3 to 8 are within 2 K instructions of it, 16
/// costs 10 K more, 2 loses 932130's three branches).
const MAX_BRANCHES: usize = 4;

/// A necessary condition for an operator to match: the value holds a byte of each set, and,
/// when the expression is an alternation, a byte of each set of one of its branches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Screen {
    sets: Vec<ByteSet>,
    /// Per branch of the expression's alternation (the first one at its top, under captures
    /// and concatenations, with the sets of the concatenation's other parts added): sets a
    /// match through that branch holds a byte of each of. Empty when not known for every
    /// branch. A match goes through one branch, so it satisfies that branch's sets: stronger
    /// than `sets`, which take one set of each branch's union.
    branches: Vec<Vec<ByteSet>>,
}

impl Screen {
    /// Whether a value whose bytes are within `bytes` may match (false: it certainly does not).
    /// Monotone: a superset of an admitted set is admitted.
    pub fn admits(&self, bytes: &ByteSet) -> bool {
        self.sets.iter().all(|s| s.intersects(bytes))
            && (self.branches.is_empty() || self.branches.iter().any(|b| b.iter().all(|s| s.intersects(bytes))))
    }

    /// Whether the screen can reject anything.
    pub fn is_useful(&self) -> bool {
        !self.sets.is_empty() || !self.branches.is_empty()
    }

    /// The sets, most selective first.
    pub fn sets(&self) -> &[ByteSet] {
        &self.sets
    }

    /// The screen of an expression as the engine compiles it (bytes, no Unicode); `None` when
    /// nothing useful is known.
    pub fn of_regex(pattern: &str) -> Option<Screen> {
        Screen::of_hir(&crate::prefilter::parse(pattern).ok()?)
    }

    /// [`Screen::of_regex`] of an expression already parsed ([`crate::prefilter::parse`]).
    pub fn of_hir(hir: &Hir) -> Option<Screen> {
        Screen::from_parts(need(hir), branch_needs(hir).unwrap_or_default())
    }

    /// The screen of a case-insensitive phrase list (`@pm`, `@contains` and the like): a match
    /// holds one of the phrases, so a byte (in either case) of the phrase it holds. `None` when
    /// a phrase is empty or nothing useful is known.
    pub fn of_phrases<'p>(phrases: impl IntoIterator<Item = &'p [u8]>) -> Option<Screen> {
        let mut per: Vec<Vec<ByteSet>> = Vec::new();
        for p in phrases {
            if p.is_empty() {
                return None;
            }
            per.push(rank(
                p.iter().map(|&b| ByteSet::from_bytes(&[b]).both_cases()).collect(),
            ));
        }
        if per.is_empty() {
            return None;
        }
        let branches = if per.len() <= MAX_BRANCHES {
            per.clone()
        } else {
            Vec::new()
        };
        Screen::from_parts(alternation(&per), branches)
    }

    fn from_parts(sets: Vec<ByteSet>, branches: Vec<Vec<ByteSet>>) -> Option<Screen> {
        let useful =
            |sets: Vec<ByteSet>| -> Vec<ByteSet> { rank(sets).into_iter().filter(|s| s.cost() < USELESS).collect() };
        let sets = useful(sets);
        let mut kept = Vec::with_capacity(branches.len());
        for b in branches {
            let b = useful(b);
            if b.is_empty() {
                // A branch that admits everything: the branches reject nothing.
                kept.clear();
                break;
            }
            kept.push(b);
        }
        // When `sets` imply one branch (each of its sets holds one of them), every value they
        // admit passes that branch: the branches would reject nothing more.
        if kept
            .iter()
            .any(|b| b.iter().all(|s| sets.iter().any(|k| k.is_subset(s))))
        {
            kept.clear();
        }
        (!sets.is_empty() || !kept.is_empty()).then_some(Screen { sets, branches: kept })
    }
}

/// Per branch of the first alternation at the top of `h` (under captures and
/// concatenations): the sets every match through that branch holds a byte of each of (those
/// of the branch and of the concatenation's other parts); `None` without such an alternation
/// or with more than [`MAX_BRANCHES`] branches.
fn branch_needs(h: &Hir) -> Option<Vec<Vec<ByteSet>>> {
    match h.kind() {
        HirKind::Capture(c) => branch_needs(&c.sub),
        HirKind::Alternation(subs) if subs.len() <= MAX_BRANCHES => Some(subs.iter().map(need).collect()),
        HirKind::Concat(subs) => {
            // The parts before and after an alternation are matched whatever branch it takes.
            let (at, inner) = subs.iter().enumerate().find_map(|(i, s)| Some((i, branch_needs(s)?)))?;
            let others: Vec<ByteSet> = subs
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != at)
                .flat_map(|(_, s)| need(s))
                .collect();
            Some(
                inner
                    .into_iter()
                    .map(|mut b| {
                        b.extend(others.iter().copied());
                        b
                    })
                    .collect(),
            )
        }
        _ => None,
    }
}

/// Sorts sets most selective first, drops duplicates and supersets of kept sets (implied by
/// them), keeps the best [`MAX_SETS`].
fn rank(sets: Vec<ByteSet>) -> Vec<ByteSet> {
    rank_up_to(sets, MAX_SETS)
}

/// [`rank`] keeping the best `max`.
fn rank_up_to(sets: Vec<ByteSet>, max: usize) -> Vec<ByteSet> {
    let mut costed: Vec<(f64, ByteSet)> = sets.into_iter().map(|s| (s.cost(), s)).collect();
    costed.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut out: Vec<ByteSet> = Vec::new();
    for (_, s) in costed {
        if out.len() == max {
            break;
        }
        if !out.iter().any(|k| k.is_subset(&s)) {
            out.push(s);
        }
    }
    out
}

/// Sets for an alternation whose branches need `per[i]` (each ranked, non-empty): the union of
/// one set of each branch is necessary; the `j`-th such union takes each branch's `j`-th set.
fn alternation(per: &[Vec<ByteSet>]) -> Vec<ByteSet> {
    let n = per.iter().map(Vec::len).max().unwrap_or(0);
    (0..n)
        .map(|j| {
            per.iter()
                .fold(ByteSet::EMPTY, |acc, b| acc.union(b[j.min(b.len() - 1)]))
        })
        .collect()
}

/// Sets of bytes each of which every match of `h` holds a byte of (empty: none known), the
/// best [`MAX_SETS`].
fn need(h: &Hir) -> Vec<ByteSet> {
    need_up_to(h, MAX_SETS)
}

/// The bytes (lower case) that every match of `h`, lower-cased, holds: those of the sets of
/// [`need_up_to`] without a bound that hold one byte up to ASCII case (`[mM]` in a
/// case-insensitive expression). A name whose lower-cased bytes miss one cannot match.
pub fn required_bytes(h: &Hir) -> ByteSet {
    need_up_to(h, usize::MAX)
        .into_iter()
        .map(ByteSet::lowercased)
        .filter(|s| s.bytes().nth(1).is_none())
        .fold(ByteSet::EMPTY, ByteSet::union)
}

/// [`need`] keeping the best `max` sets at each step.
fn need_up_to(h: &Hir, max: usize) -> Vec<ByteSet> {
    let need = |h: &Hir| need_up_to(h, max);
    let rank = |sets: Vec<ByteSet>| rank_up_to(sets, max);
    match h.kind() {
        HirKind::Empty | HirKind::Look(_) => Vec::new(),
        HirKind::Literal(l) => l.0.iter().map(|&b| ByteSet::from_bytes(&[b])).collect(),
        HirKind::Class(Class::Bytes(c)) => {
            let mut s = ByteSet::EMPTY;
            for r in c.ranges() {
                for b in r.start()..=r.end() {
                    s.insert(b);
                }
            }
            vec![s]
        }
        HirKind::Class(Class::Unicode(c)) => {
            // Only ASCII ranges are read as bytes; anything else is left unknown.
            let mut s = ByteSet::EMPTY;
            for r in c.ranges() {
                let (a, b) = (u32::from(r.start()), u32::from(r.end()));
                if b >= 0x80 {
                    return Vec::new();
                }
                for x in a..=b {
                    s.insert(x as u8);
                }
            }
            vec![s]
        }
        HirKind::Capture(c) => need(&c.sub),
        HirKind::Repetition(r) => {
            if r.min == 0 {
                Vec::new()
            } else {
                need(&r.sub)
            }
        }
        HirKind::Concat(subs) => rank(subs.iter().flat_map(need).collect()),
        HirKind::Alternation(subs) => {
            let mut per = Vec::with_capacity(subs.len());
            for s in subs {
                let n = rank(need(s));
                if n.is_empty() {
                    return Vec::new();
                }
                per.push(n);
            }
            rank(alternation(&per))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex::bytes::RegexBuilder;

    const ALL_TRANSFORMS: [Transform; 19] = Transform::ALL;

    use crate::testrng::Rng;

    const PIECES: &[&[u8]] = &[
        b"%3c",
        b"%u003c",
        b"%uff1c",
        b"&lt;",
        b"&#x3c;",
        b"&#60",
        b"\\x3c",
        b"\\u0073",
        b"\\3c ",
        b"/*x*/",
        b"--",
        b"../",
        b"..\\",
        b"caf\xc3\xa9",
        b"\xef\xbc\x9c",
        b"aGVsbG8=",
        b"<script>",
        b"union select",
        b" or 1=1",
        b";cat /etc/passwd",
        b"$(id)",
        b"${jndi:",
        b"javascript:",
        b"<?php",
        b"eval(",
        b"SELECT",
        b"\x00",
    ];

    #[test]
    fn byte_images_bound_the_outputs() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut samples: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        for _ in 0..20_000 {
            samples.push(rng.value(PIECES));
        }
        for t in ALL_TRANSFORMS {
            for s in &samples {
                let out = ByteSet::of(&t.apply(s));
                assert!(
                    out.is_subset(&t.byte_image(ByteSet::of(s))),
                    "{t:?} on {:?}",
                    String::from_utf8_lossy(s)
                );
            }
        }
        // Whole pipelines, as the rule table chains them.
        let rs = crate::rules::RuleSet::crs().expect("rule table");
        for p in &rs.pipelines {
            for s in &samples {
                let out = p.iter().fold(s.clone(), |v, t| t.apply(&v));
                assert!(ByteSet::of(&out).is_subset(&pipeline_image(p, ByteSet::of(s))), "{p:?}");
            }
        }
    }

    /// `for_each` visits exactly the bytes `contains` reports, in increasing order, as `bytes`
    /// does, on 20,000 random sets of random sizes.
    #[test]
    fn for_each_visits_the_members_in_order() {
        let mut rng = Rng(0x1f83_d9ab_fb41_bd6b);
        for _ in 0..20_000 {
            let mut set = ByteSet::EMPTY;
            for _ in 0..rng.below(40) {
                set.insert(rng.next() as u8);
            }
            let mut seen = Vec::new();
            set.for_each(|b| seen.push(b));
            let want: Vec<u8> = (0..=255u8).filter(|&b| set.contains(b)).collect();
            assert_eq!(seen, want);
            assert_eq!(set.bytes().collect::<Vec<u8>>(), want);
        }
    }

    #[test]
    fn sets_and_case() {
        let s = ByteSet::of(b"AbZ9");
        assert!(s.contains(b'A') && s.contains(b'9') && !s.contains(b'a'));
        let l = s.lowercased();
        assert_eq!(l, ByteSet::of(b"abz9"));
        assert_eq!(s.both_cases(), ByteSet::of(b"AaBbZz9"));
        assert_eq!(ByteSet::of(b"").union(ByteSet::ALL), ByteSet::ALL);
        assert!(ByteSet::of(b"(").intersects(&ByteSet::of(b"x(")));
    }

    #[test]
    fn screens_of_expressions() {
        let s = Screen::of_regex("(?i)union[\\s]+select").expect("screen");
        assert!(!s.admits(&ByteSet::of(b"hello world 123")));
        assert!(s.admits(&ByteSet::of(b"UNION SELECT")));
        assert!(Screen::of_regex("a*").is_none());
        assert!(Screen::of_regex("x?|y").is_none());
        let s = Screen::of_regex("\\$\\(|`").expect("screen");
        assert!(!s.admits(&ByteSet::of(b"Cotton tee (blue) x1")));
        // One branch needs `$`, the other `/`, `[` and `]`: a name with brackets but neither
        // `$` nor `/` passes the sets taken across the branches, not the branches.
        let s = Screen::of_regex("\\$\\(|/[a-z]*\\[[^\\]]+\\]").expect("screen");
        assert!(!s.admits(&ByteSet::of(b"metadata[line_0]")));
        assert!(s.admits(&ByteSet::of(b"/x[y]")) && s.admits(&ByteSet::of(b"$(")));
        let p = Screen::of_phrases([&b"<script"[..], b"onload"]).expect("screen");
        assert!(p.admits(&ByteSet::of(b"ONLOAD")));
    }

    /// The table path of [`ByteSet::of`] (values from `OF_TABLE_FROM` bytes) gives the set the
    /// bitmap loop ([`ByteSet::from_bytes`]) gives: 20,000 random values of 0 to 600 bytes, from
    /// a few bytes (every byte at every flag position of a gathered word) to all 256, and every
    /// single byte repeated to the threshold's length.
    #[test]
    fn byte_sets_of_long_values_agree() {
        let mut rng = Rng(0x5eed_b17e_5e75);
        let mut long = 0;
        for _ in 0..20_000 {
            let len = match rng.below(3) {
                0 => OF_TABLE_FROM - 2 + rng.below(5),
                1 => rng.below(600),
                _ => OF_TABLE_FROM + rng.below(2_000),
            };
            // An alphabet of 1 to 256 byte values, so that sets of every density occur.
            let width = 1 + rng.below(256);
            let base = rng.below(256);
            let v: Vec<u8> = (0..len).map(|_| ((base + rng.below(width)) % 256) as u8).collect();
            long += usize::from(v.len() >= OF_TABLE_FROM);
            assert_eq!(ByteSet::of(&v), ByteSet::from_bytes(&v), "{v:?}");
        }
        assert!(long > 8_000, "{long} values took the table path");
        for b in 0..=255u8 {
            let v = vec![b; OF_TABLE_FROM];
            assert_eq!(ByteSet::of(&v), ByteSet::from_bytes(&v), "byte {b}");
            let mut w = vec![0u8; OF_TABLE_FROM];
            w[OF_TABLE_FROM / 2] = b;
            assert_eq!(ByteSet::of(&w), ByteSet::from_bytes(&w), "byte {b} among zeros");
        }
    }

    /// Soundness on the shipped rule table: for every expression and phrase list, on random
    /// values built from attack fragments and on the fragments themselves, a value the
    /// operator matches is always admitted by its screen, and holds (lower-cased) every byte of
    /// [`required_bytes`].
    #[test]
    fn screens_never_reject_a_match() {
        let table: serde_json::Value = serde_json::from_str(crate::rules::CRS_JSON).expect("table");
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let mut pats: Vec<String> = Vec::new();
        let mut collect = |r: &serde_json::Value| {
            if let Some(p) = r["op"].as_str().and_then(|o| o.strip_prefix("@rx ")) {
                pats.push(p.to_owned());
            }
        };
        for r in table["rules"].as_array().into_iter().flatten() {
            collect(r);
            for c in r["chain_rules"].as_array().into_iter().flatten() {
                collect(c);
            }
        }
        let (mut checked, mut screened, mut required_checked) = (0usize, 0usize, 0usize);
        for p in &pats {
            let bytes = crate::rules::pcre_bytes(p);
            let screen = Screen::of_regex(&bytes);
            // The bytes every match holds (lower-cased), as the key expressions use them.
            let required = crate::prefilter::parse(&bytes).map_or(ByteSet::EMPTY, |h| required_bytes(&h));
            if screen.is_none() && required.is_empty() {
                continue;
            }
            screened += usize::from(screen.is_some());
            let Ok(re) = RegexBuilder::new(&bytes).unicode(false).build() else {
                continue;
            };
            // Values from the expression's own literal pieces match far more often.
            let mut pieces: Vec<Vec<u8>> = PIECES.iter().map(|x| x.to_vec()).collect();
            for w in bytes
                .split(|c: char| !c.is_ascii_alphanumeric())
                .filter(|w| w.len() > 1)
            {
                pieces.push(w.as_bytes().to_vec());
            }
            let pieces: Vec<&[u8]> = pieces.iter().map(Vec::as_slice).collect();
            for _ in 0..400 {
                let v = rng.value(&pieces);
                if re.is_match(&v) {
                    checked += 1;
                    assert!(
                        screen.as_ref().is_none_or(|s| s.admits(&ByteSet::of(&v))),
                        "{p} matches {:?} but its screen rejects it",
                        String::from_utf8_lossy(&v)
                    );
                    assert!(
                        required.is_subset(&ByteSet::of(&v).lowercased()),
                        "{p} matches {:?} without its required bytes",
                        String::from_utf8_lossy(&v)
                    );
                    required_checked += usize::from(!required.is_empty());
                }
            }
        }
        assert!(screened > 100, "only {screened} expressions screened");
        assert!(checked > 1000, "only {checked} matches checked");
        assert!(required_checked > 500, "only {required_checked} requirements checked");
    }

    /// The per-branch screens of alternations: on 1,500 random values for each such expression
    /// (over 100,000 in all) built from its own literal pieces and attack fragments, a value it matches
    /// is admitted by its screen; and the values the branches reject beyond what the plain
    /// sets reject (checked to be many) are never matched.
    #[test]
    fn branch_screens_never_reject_a_match() {
        let table: serde_json::Value = serde_json::from_str(crate::rules::CRS_JSON).expect("table");
        let mut rng = Rng(0x6a09_e667_f3bc_c908);
        let mut pats: Vec<String> = Vec::new();
        for r in table["rules"].as_array().into_iter().flatten() {
            for x in std::iter::once(r).chain(r["chain_rules"].as_array().into_iter().flatten()) {
                if let Some(p) = x["op"].as_str().and_then(|o| o.strip_prefix("@rx ")) {
                    pats.push(crate::rules::pcre_bytes(p).into_owned());
                }
            }
        }
        let (mut cases, mut matches, mut extra) = (0usize, 0usize, 0usize);
        let mut with_branches = 0usize;
        for p in &pats {
            let Some(screen) = Screen::of_regex(p) else { continue };
            if screen.branches.is_empty() {
                continue;
            }
            with_branches += 1;
            let sets_only = Screen {
                sets: screen.sets.clone(),
                branches: Vec::new(),
            };
            let Ok(re) = RegexBuilder::new(p).unicode(false).build() else {
                continue;
            };
            let mut pieces: Vec<Vec<u8>> = PIECES.iter().map(|x| x.to_vec()).collect();
            for w in p.split(|c: char| c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()) {
                // The punctuation between words too: the branches tell them apart.
                pieces.push(w.replace('\\', "").into_bytes());
            }
            pieces.extend(crate::testrng::words(p));
            pieces.extend(crate::testrng::literal_runs(p));
            let pieces: Vec<&[u8]> = pieces.iter().map(Vec::as_slice).collect();
            for _ in 0..1500 {
                let v = rng.value(&pieces);
                cases += 1;
                let bytes = ByteSet::of(&v);
                let admitted = screen.admits(&bytes);
                if re.is_match(&v) {
                    matches += 1;
                    assert!(
                        admitted,
                        "{p} matches {:?} but its screen rejects it",
                        String::from_utf8_lossy(&v)
                    );
                }
                if !admitted && sets_only.admits(&bytes) {
                    extra += 1;
                }
            }
        }
        assert!(
            with_branches > 50,
            "only {with_branches} expressions with branch screens"
        );
        assert!(cases >= 100_000, "only {cases} cases");
        assert!(matches > 1000, "only {matches} matches checked");
        assert!(extra > 1000, "only {extra} values rejected by the branches alone");
    }
}
