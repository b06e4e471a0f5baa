//! A sound literal prefilter for the rule table.
//!
//! Most rules can only match a value that contains one of a few literal strings: `(?i)union\s+select`
//! needs `union`, a phrase list needs one of its phrases, libinjection's XSS detector needs a `<` or
//! a `=`. [`rx_atoms`] derives such a set ("atoms") from a regular expression's syntax tree; the
//! engine puts every rule's atoms into one Aho-Corasick automaton, scans each distinct transformed
//! value once, and evaluates only the rules whose atoms occur, on only the values where they occur.
//!
//! Soundness is the whole point: the atoms of a rule are a *necessary* condition for a match, so
//! skipping a rule whose atoms are absent cannot change a verdict. Atoms are lower case and
//! matched ASCII-case-insensitively, which can only find more of them than a case-sensitive
//! pattern needs. A pattern whose analysis finds no such set (for example one that can match the
//! empty string, or starts with a large class) gets `None` and its rule is always evaluated.

use regex_syntax::hir::{Class, Hir, HirKind};
use std::collections::BTreeSet;

/// Largest set of alternatives kept while multiplying out a concatenation.
const MAX_SET: usize = 64;
/// Largest character class expanded into single-byte alternatives.
const MAX_CLASS: usize = 10;
/// An optional part whose non-empty matches need atoms this rare (see [`cost`]) is assumed
/// empty, and its atoms are added to the result instead (a "guard"). Zero: no guards. At 0.25,
/// the evasion padding between the letters of command names (`["')[\\]*`) made its bytes atoms
/// of the command-injection expressions, so every value with a parenthesis, a bracket, a quote,
/// a backslash or a slash was a candidate for them, and those one-byte atoms (with `+`, `-`
/// and the like from other expressions) sent every such value through the found-atom loop.
/// Without guards those expressions run unfiltered behind their byte screens, and inspection
/// costs less overall: 5% fewer instructions on the bench's 1 KB request, 2.0% on the 300
/// payment-API requests and 2.8% on the CRS corpus cases (docs/waf.md).
const GUARD_COST: f64 = 0.0;
/// The guard bound for an expression that has no useful set without guards (932230's and
/// 932235's command names with their padding): a set with guards still keeps the expression off
/// the values that hold none of its atoms.
const FALLBACK_GUARD_COST: f64 = 0.25;
/// A set costlier than this selects most values: no better than evaluating the rule always,
/// and its frequent atoms would slow the scan for every other rule.
const USELESS_COST: f64 = 1.0;

type Set = BTreeSet<Vec<u8>>;

/// What is known about the strings a sub-expression matches: every match contains an atom of
/// `guard`, or else it is one of `exact` (when known) and contains an atom of `req` (when
/// known). The guard lets evasion padding such as `["'\\]*` between the letters of a command
/// name be read as empty, at the price of its characters becoming atoms too.
#[derive(Clone)]
struct Info {
    exact: Option<Set>,
    req: Option<Set>,
    guard: Set,
}

impl Info {
    fn exact(s: Set) -> Info {
        Info {
            req: Some(s.clone()),
            exact: Some(s),
            guard: Set::new(),
        }
    }

    fn unknown() -> Info {
        Info {
            exact: None,
            req: None,
            guard: Set::new(),
        }
    }

    /// The best requirement: the exact set or the required set.
    fn required(&self) -> Option<&Set> {
        self.exact.as_ref().or(self.req.as_ref())
    }

    /// Everything a match must contain: the requirement or a guard atom.
    fn atoms(&self) -> Option<Set> {
        let mut s = self.required()?.clone();
        s.extend(self.guard.iter().cloned());
        Some(s)
    }
}

/// A rough chance that an atom occurs in ordinary text: letters, digits and spaces are common,
/// most punctuation is rare. Used only to choose between sound sets.
fn atom_cost(a: &[u8]) -> f64 {
    if a.is_empty() {
        return f64::INFINITY;
    }
    a.iter()
        .map(|&b| match b {
            b'a'..=b'z' | b'0'..=b'9' => 0.3,
            b' ' => 0.5,
            b'.' | b',' | b'-' | b'_' | b'/' | b':' | b'(' | b')' | b'@' | b'=' | b'\t' | b'\n' | b'\r' => 0.1,
            _ => 0.02,
        })
        .product()
}

/// The chance that a set selects a value (infinite when it holds the empty string).
fn cost(s: &Set) -> f64 {
    s.iter().map(|a| atom_cost(a)).sum()
}

fn better(a: Option<Set>, b: Option<&Set>) -> Option<Set> {
    match (a, b) {
        (None, b) => b.filter(|s| cost(s).is_finite()).cloned(),
        (Some(a), Some(b)) if cost(b) < cost(&a) => Some(b.clone()),
        (a, _) => a,
    }
}

fn cross(a: &Set, b: &Set) -> Set {
    let mut out = Set::new();
    for x in a {
        for y in b {
            let mut s = x.clone();
            s.extend_from_slice(y);
            out.insert(s);
        }
    }
    out
}

fn class_bytes(c: &Class) -> Option<Set> {
    let mut out = Set::new();
    match c {
        Class::Bytes(b) => {
            for r in b.ranges() {
                for x in r.start()..=r.end() {
                    out.insert(vec![x.to_ascii_lowercase()]);
                    if out.len() > MAX_CLASS {
                        return None;
                    }
                }
            }
        }
        Class::Unicode(u) => {
            for r in u.ranges() {
                let (a, b) = (u32::from(r.start()), u32::from(r.end()));
                if b.saturating_sub(a) as usize > MAX_CLASS {
                    return None;
                }
                for x in a..=b {
                    let ch = char::from_u32(x)?;
                    let mut buf = [0u8; 4];
                    out.insert(ch.encode_utf8(&mut buf).as_bytes().to_ascii_lowercase());
                    if out.len() > MAX_CLASS {
                        return None;
                    }
                }
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

/// An optional part (`x?`, `x*`): `x?` of a short list becomes that list or the empty string;
/// otherwise the part is read as empty with its atoms as a guard, when they are rare.
fn optional(sub: Info, max_one: bool, guard_cost: f64) -> Info {
    if max_one {
        if let Some(mut e) = sub.exact.clone().filter(|e| e.len() < MAX_SET) {
            e.insert(Vec::new());
            let mut i = Info::exact(e);
            i.guard = sub.guard;
            return i;
        }
    }
    match sub.atoms() {
        Some(atoms) if cost(&atoms) <= guard_cost => {
            let mut i = Info::exact(Set::from([Vec::new()]));
            i.guard = atoms;
            i
        }
        _ => Info::unknown(),
    }
}

fn info(h: &Hir, g: f64) -> Info {
    match h.kind() {
        HirKind::Empty | HirKind::Look(_) => Info::exact(Set::from([Vec::new()])),
        HirKind::Literal(l) => Info::exact(Set::from([l.0.to_ascii_lowercase()])),
        HirKind::Class(c) => match class_bytes(c) {
            Some(s) => Info::exact(s),
            None => Info::unknown(),
        },
        HirKind::Capture(c) => info(&c.sub, g),
        HirKind::Repetition(r) => {
            let sub = info(&r.sub, g);
            if r.min == 0 {
                optional(sub, r.max == Some(1), g)
            } else if r.min == 1 && r.max == Some(1) {
                sub
            } else {
                // At least one occurrence: whatever one occurrence requires.
                Info {
                    exact: None,
                    req: sub.required().cloned(),
                    guard: sub.guard,
                }
            }
        }
        HirKind::Concat(subs) => {
            let mut best: Option<Set> = None;
            let mut run: Set = Set::from([Vec::new()]);
            let mut all_exact = true;
            let mut guard = Set::new();
            for s in subs {
                let i = info(s, g);
                guard.extend(i.guard.iter().cloned());
                match &i.exact {
                    Some(e) if run.len() * e.len() <= MAX_SET => run = cross(&run, e),
                    // Too many alternatives: an optional part with rare atoms becomes a guard.
                    Some(e)
                        if e.contains(&Vec::new()) && {
                            let rest: Set = e.iter().filter(|x| !x.is_empty()).cloned().collect();
                            cost(&rest) <= g
                        } =>
                    {
                        guard.extend(e.iter().filter(|x| !x.is_empty()).cloned());
                    }
                    Some(e) => {
                        all_exact = false;
                        best = better(best, Some(&run));
                        run = e.clone();
                    }
                    None => {
                        all_exact = false;
                        best = better(best, Some(&run));
                        best = better(best, i.req.as_ref());
                        run = Set::from([Vec::new()]);
                    }
                }
            }
            let mut out = if all_exact {
                Info::exact(run)
            } else {
                Info {
                    exact: None,
                    req: better(best, Some(&run)),
                    guard: Set::new(),
                }
            };
            out.guard = guard;
            out
        }
        HirKind::Alternation(subs) => {
            let infos: Vec<Info> = subs.iter().map(|s| info(s, g)).collect();
            let mut guard = Set::new();
            for i in &infos {
                guard.extend(i.guard.iter().cloned());
            }
            if infos.iter().all(|i| i.exact.is_some()) {
                let mut all = Set::new();
                for i in &infos {
                    all.extend(i.exact.iter().flatten().cloned());
                }
                if all.len() <= MAX_SET {
                    let mut out = Info::exact(all);
                    out.guard = guard;
                    return out;
                }
            }
            // Any match is a match of one branch, so contains what that branch requires.
            let mut req = Set::new();
            for i in &infos {
                match i.required() {
                    Some(s) if cost(s).is_finite() => req.extend(s.iter().cloned()),
                    _ => return Info::unknown(),
                }
            }
            Info {
                exact: None,
                req: Some(req),
                guard,
            }
        }
    }
}

/// Literal strings (lower case) one of which every match of `pattern` contains, or `None` when
/// no useful set is known. `pattern` is read as the engine compiles it: bytes, no Unicode classes.
pub fn rx_atoms(pattern: &str) -> Option<Vec<Vec<u8>>> {
    hir_atoms(&parse(pattern).ok()?)
}

/// [`rx_atoms`] of an expression already parsed (by [`parse`]).
pub fn hir_atoms(hir: &Hir) -> Option<Vec<Vec<u8>>> {
    // Without guards first; an expression that then has no useful set (it would run on every
    // value) takes the set with guards, when that one is useful.
    [GUARD_COST, FALLBACK_GUARD_COST].into_iter().find_map(|g| {
        let set = info(hir, g).atoms()?;
        (cost(&set) < USELESS_COST).then(|| set.into_iter().collect())
    })
}

/// Parses an expression as the engine compiles it: bytes, no Unicode classes.
pub fn parse(pattern: &str) -> Result<Hir, regex_syntax::Error> {
    regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .build()
        .parse(pattern)
}

/// The length of the shortest string `pattern` matches (0 when unknown), read as the engine
/// compiles it.
pub fn min_len(pattern: &str) -> usize {
    regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .build()
        .parse(pattern)
        .ok()
        .and_then(|h| h.properties().minimum_len())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex::bytes::RegexBuilder;

    /// Every `@rx` expression of the shipped rule table, chain links included, as the engine
    /// reads it.
    fn shipped_rx_expressions(table: &serde_json::Value) -> Vec<String> {
        let mut out = Vec::new();
        for r in table["rules"].as_array().into_iter().flatten() {
            for x in std::iter::once(r).chain(r["chain_rules"].as_array().into_iter().flatten()) {
                if let Some(p) = x["op"].as_str().and_then(|o| o.strip_prefix("@rx ")) {
                    out.push(crate::rules::pcre_bytes(p).into_owned());
                }
            }
        }
        out
    }

    /// Whether `re` (the expression `p`) matches `v`; when it does, one of `atoms` must occur in
    /// `v`, case-folded.
    fn match_holds_an_atom(p: &str, re: &regex::bytes::Regex, atoms: &[Vec<u8>], v: &[u8]) -> bool {
        if !re.is_match(v) {
            return false;
        }
        let lower = v.to_ascii_lowercase();
        assert!(
            atoms.iter().any(|a| memchr::memmem::find(&lower, a).is_some()),
            "{p} matched {:?} without any of its atoms",
            String::from_utf8_lossy(v)
        );
        true
    }

    fn atoms(p: &str) -> Vec<String> {
        rx_atoms(p)
            .unwrap_or_default()
            .into_iter()
            .map(|a| String::from_utf8_lossy(&a).into_owned())
            .collect()
    }

    #[test]
    fn literals_and_classes() {
        assert_eq!(atoms("(?i)union[\\s]+select"), vec!["select"]);
        // Evasion padding between letters: without guards (`GUARD_COST` 0), a letter the
        // padded word holds in any case.
        assert_eq!(atoms("(?i)c[\"'\\\\]*a[\"'\\\\]*t\\b"), vec!["c"]);
        assert_eq!(atoms("abc|x[yz]"), vec!["abc", "xy", "xz"]);
        assert_eq!(atoms("<script"), vec!["<script"]);
        assert_eq!(atoms("(?i)xa(?:b|c)?d"), vec!["xabd", "xacd", "xad"]);
        assert_eq!(atoms("\\[?\\$(?:abs|add)"), vec!["$abs", "$add", "[$abs", "[$add"]);
    }

    #[test]
    fn shortest_match() {
        assert_eq!(min_len("abc|de"), 2);
        assert_eq!(min_len("x{12}"), 12);
        assert_eq!(min_len("a*"), 0);
        assert_eq!(min_len("("), 0);
    }

    #[test]
    fn unknown_when_it_can_match_anything() {
        assert!(rx_atoms("a*").is_none());
        assert!(rx_atoms("[^x]+").is_none());
        assert!(rx_atoms("x?").is_none());
        assert!(rx_atoms("^").is_none());
        assert!(rx_atoms("(").is_none());
    }

    /// Soundness on the shipped rule table, on random values: for every expression with atoms,
    /// 150 values built from its own literal runs and words, its atoms and attack fragments
    /// (over 25,000 in all); each value it matches holds one of its atoms, ASCII case ignored.
    #[test]
    fn atoms_are_necessary_on_random_values() {
        let table: serde_json::Value = serde_json::from_str(crate::rules::CRS_JSON).expect("table");
        let mut rng = crate::testrng::Rng(0x9b05_688c_2b3e_6c1f);
        let fragments: [&[u8]; 10] = [
            b"1' or 1=1--",
            b"<script>",
            b"../",
            b"; cat /etc/passwd",
            b"${jndi:",
            b"<?php",
            b"$(id)",
            b"c'a\\t",
            b"Cotton tee (blue)",
            b"%27",
        ];
        let (mut cases, mut matches) = (0usize, 0usize);
        for p in shipped_rx_expressions(&table) {
            let Some(atoms) = rx_atoms(&p) else { continue };
            let Ok(re) = RegexBuilder::new(&p).unicode(false).build() else {
                continue;
            };
            let mut pieces: Vec<Vec<u8>> = fragments.iter().map(|f| f.to_vec()).collect();
            pieces.extend(atoms.iter().cloned());
            pieces.extend(crate::testrng::literal_runs(&p));
            pieces.extend(crate::testrng::words(&p));
            let pieces: Vec<&[u8]> = pieces.iter().map(Vec::as_slice).collect();
            for _ in 0..150 {
                let v = rng.value(&pieces);
                cases += 1;
                matches += usize::from(match_holds_an_atom(&p, &re, &atoms, &v));
            }
        }
        assert!(cases > 25_000, "only {cases} cases");
        assert!(matches > 2_000, "only {matches} matches checked");
    }

    /// The evasion padding CRS puts after each letter of a command name.
    const PADDING: &str = r#"["'\)\[\x5c]*(?:(?:(?:\|\||&&)[\s\x0b]*)?\$[!#\(\*\-0-9\?@_a-\{]*)?\x5c?"#;

    /// The atoms with guards that an expression without a useful set of its own takes
    /// (`FALLBACK_GUARD_COST`; 932230's and 932235's command names between evasion padding):
    /// 20,000 random commands per such expression, a word of the expression with random padding
    /// (`"`, `'`, `)`, `[`, `\\`) between its letters after a random separator, 40,000 in all;
    /// each command the expression matches holds one of its atoms.
    #[test]
    fn fallback_atoms_are_necessary_on_padded_commands() {
        let table: serde_json::Value = serde_json::from_str(crate::rules::CRS_JSON).expect("table");
        let mut rng = crate::testrng::Rng(0x1f83_d9ab_5be0_cd19);
        let seps: [&[u8]; 9] = [b";", b"|", b"&&", b"\n", b"$(", b"`", b"", b" ", b"{"];
        let pads: [&[u8]; 6] = [b"\"", b"'", b")", b"[", b"\\", b"''"];
        let ends: [&[u8]; 6] = [b" /etc/passwd", b";", b")", b"", b" -la", b"|id"];
        let (mut exprs, mut cases, mut matches) = (0usize, 0usize, 0usize);
        for p in shipped_rx_expressions(&table) {
            let Ok(hir) = parse(&p) else { continue };
            let unguarded = info(&hir, GUARD_COST).atoms().filter(|s| cost(s) < USELESS_COST);
            if unguarded.is_some() {
                continue;
            }
            let Some(atoms) = hir_atoms(&hir) else { continue };
            let Ok(re) = RegexBuilder::new(&p).unicode(false).build() else {
                continue;
            };
            exprs += 1;
            // The command names between the padding, read without it.
            let plain = p.replace(PADDING, "");
            let words: Vec<&str> = plain
                .split(|c: char| !c.is_ascii_alphabetic())
                .filter(|w| w.len() > 1)
                .collect();
            for _ in 0..20_000 {
                let mut v = seps[rng.below(seps.len())].to_vec();
                let word = words[rng.below(words.len())];
                for (i, b) in word.bytes().enumerate() {
                    if i > 0 && rng.below(3) == 0 {
                        v.extend_from_slice(pads[rng.below(pads.len())]);
                    }
                    v.push(if rng.below(4) == 0 { b.to_ascii_uppercase() } else { b });
                }
                v.extend_from_slice(ends[rng.below(ends.len())]);
                cases += 1;
                matches += usize::from(match_holds_an_atom(&p, &re, &atoms, &v));
            }
        }
        assert!(exprs >= 2, "only {exprs} expressions take atoms with guards");
        assert!(cases >= 40_000, "{cases}");
        assert!(matches > 1_000, "only {matches} matches checked");
    }

    /// Soundness on the shipped rule table: every expression's atoms occur in every string it
    /// matches, checked on strings built from the atoms' neighbours and on the corpus patterns.
    #[test]
    fn atoms_are_necessary() {
        let table: serde_json::Value = serde_json::from_str(crate::rules::CRS_JSON).expect("table");
        let samples: Vec<&[u8]> = vec![
            b"1' or 1=1--",
            b"<script>alert(1)</script>",
            b"../../etc/passwd",
            b"; cat /etc/passwd",
            b"${jndi:ldap://x}",
            b"<?php system('id'); ?>",
            b"union select null,null",
            b"http://evil.example/x?",
            b"javascript:alert(1)",
            b"O'Brien & Sons (est. 1990)",
        ];
        let mut checked = 0;
        for r in table["rules"].as_array().into_iter().flatten() {
            let op = r["op"].as_str().unwrap_or("");
            let Some(p) = op.strip_prefix("@rx ") else { continue };
            let Some(atoms) = rx_atoms(p) else { continue };
            let Ok(re) = RegexBuilder::new(p).unicode(false).build() else {
                continue;
            };
            for s in &samples {
                if re.is_match(s) {
                    let lower = s.to_ascii_lowercase();
                    assert!(
                        atoms
                            .iter()
                            .any(|a| lower.windows(a.len().max(1)).any(|w| w == a.as_slice())),
                        "rule {} matched {:?} without any atom",
                        r["id"],
                        String::from_utf8_lossy(s)
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 10, "only {checked} matches checked");
    }
}
