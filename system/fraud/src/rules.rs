//! A rule language like Stripe Radar's.
//!
//! ```text
//! rule        = action "if" condition
//! action      = "Allow" | "Block" | "Review"
//! condition   = conjunction { "or" conjunction }
//! conjunction = negation { "and" negation }
//! negation    = "not" negation | primary
//! primary     = "(" condition ")" | predicate
//! predicate   = operand [ cmp_op operand | [ "not" ] "in" set ]
//! cmp_op      = "=" | "!=" | "<" | ">" | "<=" | ">="
//! operand     = ":" name ":"            (an attribute, see ATTRIBUTES)
//!             | "::" key "::"           (a metadata value of the payment)
//!             | literal
//! set         = "@" list_name | "(" [ literal { "," literal } ] ")"
//! literal     = 'quoted string' (with \' and \\ escapes) | decimal number | true | false
//! ```
//!
//! Keywords are case-insensitive. [`parse_rule`] checks syntax; [`compile_rule`] also checks
//! meaning (attributes exist, lists exist, types agree, enum values are possible, conditions are
//! boolean) and every error carries the line and column it refers to.
//!
//! Semantics: a comparison or `in`/`not in` whose operand has no value for the payment (no IP,
//! no metadata key, velocity unknown) is false. Numbers are exact decimals. A [`RuleSet`]
//! evaluates Allow rules first, then Block, then Review, each group in insertion order; the
//! first rule that matches decides.

use crate::decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};

/// Where something is in the rule text (1-based). Positions are not part of a rule's meaning:
/// two positions always compare equal, so ASTs compare by structure alone.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Pos {
    /// Line, from 1.
    pub line: u32,
    /// Column in characters, from 1.
    pub column: u32,
}

impl PartialEq for Pos {
    fn eq(&self, _: &Pos) -> bool {
        true
    }
}

/// A syntax or validation error at a position of the rule text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("line {line}, column {column}: {message}")]
pub struct ParseError {
    /// Line, from 1.
    pub line: u32,
    /// Column in characters, from 1.
    pub column: u32,
    /// What is wrong.
    pub message: String,
}

impl ParseError {
    fn at(pos: Pos, message: impl Into<String>) -> ParseError {
        ParseError {
            line: pos.line,
            column: pos.column,
            message: message.into(),
        }
    }
}

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Let the payment through regardless of later rules.
    Allow,
    /// Decline it as fraudulent.
    Block,
    /// Authorize it but open a review.
    Review,
}

impl Action {
    /// `Allow`, `Block` or `Review`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "Allow",
            Action::Block => "Block",
            Action::Review => "Review",
        }
    }
}

/// A literal value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Literal {
    /// `'text'`.
    Str(String),
    /// `12.5`.
    Num(Decimal),
    /// `true` / `false`.
    Bool(bool),
}

/// One side of a comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Operand {
    /// `:name:`.
    Attr(String, Pos),
    /// `::key::`.
    Meta(String, Pos),
    /// A literal.
    Lit(Literal, Pos),
}

impl Operand {
    fn pos(&self) -> Pos {
        match self {
            Operand::Attr(_, p) | Operand::Meta(_, p) | Operand::Lit(_, p) => *p,
        }
    }
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CmpOp {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `>`
    Gt,
    /// `<=`
    Le,
    /// `>=`
    Ge,
}

impl CmpOp {
    /// The operator's symbol.
    pub fn as_str(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Gt => ">",
            CmpOp::Le => "<=",
            CmpOp::Ge => ">=",
        }
    }
    fn is_ordering(self) -> bool {
        !matches!(self, CmpOp::Eq | CmpOp::Ne)
    }
}

/// The right side of `in`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SetExpr {
    /// `@alias`.
    List(String, Pos),
    /// `('a', 'b')`.
    Items(Vec<(Literal, Pos)>),
}

/// A condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Cond {
    /// `a or b`.
    Or(Box<Cond>, Box<Cond>),
    /// `a and b`.
    And(Box<Cond>, Box<Cond>),
    /// `not a`.
    Not(Box<Cond>),
    /// `a op b`.
    Cmp(Operand, CmpOp, Operand),
    /// `a [not] in set`.
    In {
        /// The tested value.
        operand: Operand,
        /// `not in`.
        negated: bool,
        /// The set.
        set: SetExpr,
    },
    /// A boolean operand used as a condition.
    Truth(Operand),
}

/// A parsed rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleAst {
    /// What it does.
    pub action: Action,
    /// When.
    pub condition: Cond,
}

// ---------------------------------------------------------------------------------------------
// Lexer

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Attr(String),
    Meta(String),
    List(String),
    Str(String),
    Num(Decimal),
    Op(CmpOp),
    LParen,
    RParen,
    Comma,
    End,
}

struct Lexer<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    line: u32,
    column: u32,
}

const MAX_RULE_LEN: usize = 10_000;

impl<'a> Lexer<'a> {
    fn new(text: &'a str) -> Lexer<'a> {
        Lexer {
            chars: text.chars().peekable(),
            line: 1,
            column: 1,
        }
    }

    fn pos(&self) -> Pos {
        Pos {
            line: self.line,
            column: self.column,
        }
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.chars.next()?;
        if c == '\n' {
            self.line += 1;
            self.column = 1;
        } else {
            self.column += 1;
        }
        Some(c)
    }

    fn tokens(mut self) -> Result<Vec<(Tok, Pos)>, ParseError> {
        let mut out = vec![];
        loop {
            while self.chars.peek().is_some_and(|c| c.is_whitespace()) {
                self.bump();
            }
            let pos = self.pos();
            let Some(&c) = self.chars.peek() else {
                out.push((Tok::End, pos));
                return Ok(out);
            };
            let tok = match c {
                '(' => {
                    self.bump();
                    Tok::LParen
                }
                ')' => {
                    self.bump();
                    Tok::RParen
                }
                ',' => {
                    self.bump();
                    Tok::Comma
                }
                '=' => {
                    self.bump();
                    Tok::Op(CmpOp::Eq)
                }
                '!' => {
                    self.bump();
                    if self.chars.peek() == Some(&'=') {
                        self.bump();
                        Tok::Op(CmpOp::Ne)
                    } else {
                        return Err(ParseError::at(pos, "expected `!=`"));
                    }
                }
                '<' | '>' => {
                    self.bump();
                    let eq = self.chars.peek() == Some(&'=');
                    if eq {
                        self.bump();
                    }
                    Tok::Op(match (c, eq) {
                        ('<', false) => CmpOp::Lt,
                        ('<', true) => CmpOp::Le,
                        ('>', false) => CmpOp::Gt,
                        _ => CmpOp::Ge,
                    })
                }
                ':' => self.attr_or_meta(pos)?,
                '@' => {
                    self.bump();
                    let name = self.ident(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                    if name.is_empty() {
                        return Err(ParseError::at(pos, "expected a list name after `@`"));
                    }
                    Tok::List(name)
                }
                '\'' => self.string(pos)?,
                '-' | '0'..='9' => self.number(pos)?,
                c if c.is_ascii_alphabetic() => Tok::Word(self.ident(|c| c.is_ascii_alphanumeric() || c == '_')),
                other => return Err(ParseError::at(pos, format!("unexpected character `{other}`"))),
            };
            out.push((tok, pos));
        }
    }

    fn ident(&mut self, ok: impl Fn(char) -> bool) -> String {
        let mut s = String::new();
        while let Some(&c) = self.chars.peek() {
            if !ok(c) {
                break;
            }
            s.push(c);
            self.bump();
        }
        s
    }

    fn attr_or_meta(&mut self, pos: Pos) -> Result<Tok, ParseError> {
        self.bump();
        if self.chars.peek() == Some(&':') {
            self.bump();
            let mut key = String::new();
            loop {
                match self.bump() {
                    Some(':') if self.chars.peek() == Some(&':') => {
                        self.bump();
                        break;
                    }
                    Some(':') => return Err(ParseError::at(pos, "a metadata key ends with `::`")),
                    Some(c) if !c.is_control() => key.push(c),
                    _ => {
                        return Err(ParseError::at(
                            pos,
                            "unterminated metadata reference (expected `::key::`)",
                        ))
                    }
                }
            }
            if key.trim().is_empty() {
                return Err(ParseError::at(pos, "empty metadata key"));
            }
            return Ok(Tok::Meta(key));
        }
        let name = self.ident(|c| c.is_ascii_alphanumeric() || c == '_');
        if name.is_empty() || self.chars.peek() != Some(&':') {
            return Err(ParseError::at(pos, "expected an attribute like `:risk_score:`"));
        }
        self.bump();
        Ok(Tok::Attr(name))
    }

    fn string(&mut self, pos: Pos) -> Result<Tok, ParseError> {
        self.bump();
        let mut s = String::new();
        loop {
            match self.bump() {
                Some('\'') => return Ok(Tok::Str(s)),
                Some('\\') => match self.bump() {
                    Some(c @ ('\'' | '\\')) => s.push(c),
                    _ => return Err(ParseError::at(pos, "only \\' and \\\\ may be escaped in a string")),
                },
                Some(c) => s.push(c),
                None => return Err(ParseError::at(pos, "unterminated string")),
            }
        }
    }

    fn number(&mut self, pos: Pos) -> Result<Tok, ParseError> {
        let text = self.ident(|c| c.is_ascii_digit() || c == '.' || c == '-' || c.is_ascii_alphabetic());
        Decimal::parse(&text)
            .map(Tok::Num)
            .map_err(|e| ParseError::at(pos, format!("invalid number `{}`: {e}", truncate(&text))))
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

// ---------------------------------------------------------------------------------------------
// Parser

struct Parser {
    toks: Vec<(Tok, Pos)>,
    i: usize,
    depth: usize,
}

const MAX_DEPTH: usize = 64;

fn kw(t: &Tok, word: &str) -> bool {
    matches!(t, Tok::Word(w) if w.eq_ignore_ascii_case(word))
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Word(w) => format!("`{}`", truncate(w)),
        Tok::Attr(a) => format!("`:{}:`", truncate(a)),
        Tok::Meta(m) => format!("`::{}::`", truncate(m)),
        Tok::List(l) => format!("`@{}`", truncate(l)),
        Tok::Str(_) => "a string".into(),
        Tok::Num(n) => format!("`{n}`"),
        Tok::Op(o) => format!("`{}`", o.as_str()),
        Tok::LParen => "`(`".into(),
        Tok::RParen => "`)`".into(),
        Tok::Comma => "`,`".into(),
        Tok::End => "the end of the rule".into(),
    }
}

impl Parser {
    fn peek(&self) -> &(Tok, Pos) {
        // The token list always ends with End, and `i` never moves past it.
        &self.toks[self.i.min(self.toks.len() - 1)]
    }

    fn next(&mut self) -> (Tok, Pos) {
        let t = self.peek().clone();
        if self.i < self.toks.len() - 1 {
            self.i += 1;
        }
        t
    }

    fn expected(&self, what: &str) -> ParseError {
        let (t, p) = self.peek();
        ParseError::at(*p, format!("expected {what}, found {}", describe(t)))
    }

    fn rule(&mut self) -> Result<RuleAst, ParseError> {
        let (t, p) = self.next();
        let action = match &t {
            Tok::Word(w) if w.eq_ignore_ascii_case("allow") => Action::Allow,
            Tok::Word(w) if w.eq_ignore_ascii_case("block") => Action::Block,
            Tok::Word(w) if w.eq_ignore_ascii_case("review") => Action::Review,
            _ => {
                return Err(ParseError::at(
                    p,
                    format!("expected `Allow`, `Block` or `Review`, found {}", describe(&t)),
                ))
            }
        };
        if !kw(&self.peek().0, "if") {
            return Err(self.expected("`if`"));
        }
        self.next();
        let condition = self.condition()?;
        if self.peek().0 != Tok::End {
            return Err(self.expected("`and`, `or` or the end of the rule"));
        }
        Ok(RuleAst { action, condition })
    }

    fn enter(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ParseError::at(self.peek().1, "rule nested too deeply"));
        }
        Ok(())
    }

    fn condition(&mut self) -> Result<Cond, ParseError> {
        self.enter()?;
        let mut c = self.conjunction()?;
        while kw(&self.peek().0, "or") {
            self.next();
            let r = self.conjunction()?;
            c = Cond::Or(Box::new(c), Box::new(r));
        }
        self.depth -= 1;
        Ok(c)
    }

    fn conjunction(&mut self) -> Result<Cond, ParseError> {
        let mut c = self.negation()?;
        while kw(&self.peek().0, "and") {
            self.next();
            let r = self.negation()?;
            c = Cond::And(Box::new(c), Box::new(r));
        }
        Ok(c)
    }

    fn negation(&mut self) -> Result<Cond, ParseError> {
        if kw(&self.peek().0, "not") {
            self.next();
            self.enter()?;
            let inner = self.negation()?;
            self.depth -= 1;
            return Ok(Cond::Not(Box::new(inner)));
        }
        if self.peek().0 == Tok::LParen {
            self.next();
            let c = self.condition()?;
            if self.peek().0 != Tok::RParen {
                return Err(self.expected("`)`"));
            }
            self.next();
            return Ok(c);
        }
        self.predicate()
    }

    fn operand(&mut self) -> Result<Operand, ParseError> {
        let (t, p) = self.peek().clone();
        let op = match t {
            Tok::Attr(a) => Operand::Attr(a, p),
            Tok::Meta(m) => Operand::Meta(m, p),
            _ => match self.literal_tok(&t) {
                Some(l) => Operand::Lit(l, p),
                None => return Err(self.expected("an attribute, a `::metadata::` reference or a value")),
            },
        };
        self.next();
        Ok(op)
    }

    fn literal_tok(&self, t: &Tok) -> Option<Literal> {
        match t {
            Tok::Str(s) => Some(Literal::Str(s.clone())),
            Tok::Num(n) => Some(Literal::Num(*n)),
            Tok::Word(w) if w.eq_ignore_ascii_case("true") => Some(Literal::Bool(true)),
            Tok::Word(w) if w.eq_ignore_ascii_case("false") => Some(Literal::Bool(false)),
            _ => None,
        }
    }

    fn predicate(&mut self) -> Result<Cond, ParseError> {
        let left = self.operand()?;
        let (t, _) = self.peek().clone();
        if let Tok::Op(op) = t {
            self.next();
            let right = self.operand()?;
            return Ok(Cond::Cmp(left, op, right));
        }
        let negated = kw(&t, "not") && self.toks.get(self.i + 1).is_some_and(|(n, _)| kw(n, "in"));
        if negated {
            self.next();
        }
        if kw(&self.peek().0, "in") {
            self.next();
            let set = self.set()?;
            return Ok(Cond::In {
                operand: left,
                negated,
                set,
            });
        }
        Ok(Cond::Truth(left))
    }

    fn set(&mut self) -> Result<SetExpr, ParseError> {
        let (t, p) = self.peek().clone();
        match t {
            Tok::List(name) => {
                self.next();
                Ok(SetExpr::List(name, p))
            }
            Tok::LParen => {
                self.next();
                let mut items = vec![];
                if self.peek().0 == Tok::RParen {
                    self.next();
                    return Ok(SetExpr::Items(items));
                }
                loop {
                    let (t, p) = self.peek().clone();
                    let Some(l) = self.literal_tok(&t) else {
                        return Err(self.expected("a value"));
                    };
                    self.next();
                    items.push((l, p));
                    match self.peek().0 {
                        Tok::Comma => {
                            self.next();
                        }
                        Tok::RParen => {
                            self.next();
                            return Ok(SetExpr::Items(items));
                        }
                        _ => return Err(self.expected("`,` or `)`")),
                    }
                }
            }
            _ => Err(self.expected("`@list` or `(` after `in`")),
        }
    }
}

/// Parses a rule (syntax only).
pub fn parse_rule(text: &str) -> Result<RuleAst, ParseError> {
    if text.len() > MAX_RULE_LEN {
        return Err(ParseError {
            line: 1,
            column: 1,
            message: format!("rule longer than {MAX_RULE_LEN} bytes"),
        });
    }
    let toks = Lexer::new(text).tokens()?;
    Parser { toks, i: 0, depth: 0 }.rule()
}

// ---------------------------------------------------------------------------------------------
// Printer

fn print_lit(l: &Literal, out: &mut String) {
    match l {
        Literal::Str(s) => {
            out.push('\'');
            for c in s.chars() {
                if c == '\'' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('\'');
        }
        Literal::Num(n) => {
            let _ = write!(out, "{n}");
        }
        Literal::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
    }
}

fn print_operand(o: &Operand, out: &mut String) {
    match o {
        Operand::Attr(a, _) => {
            let _ = write!(out, ":{a}:");
        }
        Operand::Meta(m, _) => {
            let _ = write!(out, "::{m}::");
        }
        Operand::Lit(l, _) => print_lit(l, out),
    }
}

/// Binding strength: or < and < not/predicate.
fn level(c: &Cond) -> u8 {
    match c {
        Cond::Or(..) => 0,
        Cond::And(..) => 1,
        _ => 2,
    }
}

fn print_cond(c: &Cond, out: &mut String) {
    let child = |c: &Cond, min: u8, out: &mut String| {
        if level(c) < min {
            out.push('(');
            print_cond(c, out);
            out.push(')');
        } else {
            print_cond(c, out);
        }
    };
    match c {
        // Left-associative: the left child may be the same operator, the right one may not.
        Cond::Or(l, r) => {
            child(l, 0, out);
            out.push_str(" or ");
            child(r, 1, out);
        }
        Cond::And(l, r) => {
            child(l, 1, out);
            out.push_str(" and ");
            child(r, 2, out);
        }
        Cond::Not(x) => {
            out.push_str("not ");
            child(x, 2, out);
        }
        Cond::Cmp(l, op, r) => {
            print_operand(l, out);
            let _ = write!(out, " {} ", op.as_str());
            print_operand(r, out);
        }
        Cond::In { operand, negated, set } => {
            print_operand(operand, out);
            out.push_str(if *negated { " not in " } else { " in " });
            match set {
                SetExpr::List(name, _) => {
                    let _ = write!(out, "@{name}");
                }
                SetExpr::Items(items) => {
                    out.push('(');
                    for (i, (l, _)) in items.iter().enumerate() {
                        if i > 0 {
                            out.push_str(", ");
                        }
                        print_lit(l, out);
                    }
                    out.push(')');
                }
            }
        }
        Cond::Truth(o) => print_operand(o, out),
    }
}

impl fmt::Display for RuleAst {
    /// The canonical text: parsing it gives back an equal AST.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        print_cond(&self.condition, &mut s);
        write!(f, "{} if {s}", self.action.as_str())
    }
}

// ---------------------------------------------------------------------------------------------
// Attributes and values

/// The type of an attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    /// Exact decimal.
    Num,
    /// Text.
    Str,
    /// True/false.
    Bool,
    /// One of a fixed set of strings; `ordered` when `<`/`>` compare by position in the set.
    Enum {
        /// Possible values.
        values: &'static [&'static str],
        /// Comparable with `<`, `>`.
        ordered: bool,
    },
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Ty::Num => "a number",
            Ty::Str | Ty::Enum { .. } => "a string",
            Ty::Bool => "a boolean",
        }
    }
    fn stringy(self) -> bool {
        matches!(self, Ty::Str | Ty::Enum { .. })
    }
}

/// Risk levels, lowest first.
pub const RISK_LEVELS: &[&str] = &["normal", "elevated", "highest"];
/// CVC check results.
pub const CVC_RESULTS: &[&str] = &["pass", "fail", "unavailable", "unchecked"];
/// Funding types.
pub const FUNDING: &[&str] = &["credit", "debit", "prepaid", "unknown"];
/// Card networks.
pub const BRANDS: &[&str] = &[
    "visa",
    "mastercard",
    "amex",
    "discover",
    "jcb",
    "diners",
    "unionpay",
    "unknown",
];

macro_rules! attributes {
    ($($variant:ident = $name:literal : $ty:expr, $doc:literal;)*) => {
        /// An attribute a rule may reference as `:name:`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Attr {
            $( #[doc = $doc] $variant, )*
        }

        impl Attr {
            /// Every attribute.
            pub const ALL: &'static [Attr] = &[$(Attr::$variant),*];

            /// Its name in rules (without colons).
            pub fn name(self) -> &'static str {
                match self { $(Attr::$variant => $name),* }
            }

            /// Its type.
            pub fn ty(self) -> Ty {
                match self { $(Attr::$variant => $ty),* }
            }

            /// What it means.
            pub fn doc(self) -> &'static str {
                match self { $(Attr::$variant => $doc),* }
            }

            /// The attribute called `name`.
            pub fn from_name(name: &str) -> Option<Attr> {
                match name { $($name => Some(Attr::$variant),)* _ => None }
            }
        }
    };
}

attributes! {
    RiskScore = "risk_score": Ty::Num, "The model's score, 0–99.";
    RiskLevel = "risk_level": Ty::Enum { values: RISK_LEVELS, ordered: true }, "normal, elevated or highest.";
    Amount = "amount": Ty::Num, "The amount in major units of the payment's currency (12.34).";
    AmountInUsd = "amount_in_usd": Ty::Num, "The amount converted to US dollars with the configured FX table.";
    Currency = "currency": Ty::Str, "Three-letter lowercase currency code.";
    CardBrand = "card_brand": Ty::Enum { values: BRANDS, ordered: false }, "Card network.";
    CardBin = "card_bin": Ty::Str, "First six digits of the card.";
    CardLast4 = "card_last4": Ty::Str, "Last four digits of the card.";
    CardCountry = "card_country": Ty::Str, "Issuing country (ISO alpha-2) from the IIN table.";
    CardFunding = "card_funding": Ty::Enum { values: FUNDING, ordered: false }, "credit, debit, prepaid or unknown.";
    CardFingerprint = "card_fingerprint": Ty::Str, "Keyed fingerprint of the card number.";
    CvcCheck = "cvc_check": Ty::Enum { values: CVC_RESULTS, ordered: false }, "pass, fail, unavailable or unchecked.";
    IpAddress = "ip_address": Ty::Str, "The client's IP address.";
    IpCountry = "ip_country": Ty::Str, "Country of the IP address from the IP-range table.";
    Email = "email": Ty::Str, "The customer's email address (lowercase).";
    EmailDomain = "email_domain": Ty::Str, "Domain of the email address (lowercase).";
    IsDisposableEmail = "is_disposable_email": Ty::Bool, "The email domain belongs to a disposable-mail provider.";
    Customer = "customer": Ty::Str, "The customer id.";
    CustomerAgeDays = "customer_age_days": Ty::Num, "Whole days since the customer was created.";
    Livemode = "livemode": Ty::Bool, "True for live payments, false in test mode.";
    CardAttempts1h = "card_attempts_1h": Ty::Num, "Attempts on this card in the last hour (this one included; counted up to 1,000).";
    CardAttempts24h = "card_attempts_24h": Ty::Num, "Attempts on this card in the last 24 hours (counted up to 1,000).";
    CardDeclines1h = "card_declines_1h": Ty::Num, "Declined or blocked attempts on this card in the last hour (counted up to 1,000).";
    CardDeclines24h = "card_declines_24h": Ty::Num, "Declined or blocked attempts on this card in the last 24 hours (counted up to 1,000).";
    IpAttempts1h = "ip_attempts_1h": Ty::Num, "Attempts from this IP address in the last hour (counted up to 1,000).";
    IpAttempts24h = "ip_attempts_24h": Ty::Num, "Attempts from this IP address in the last 24 hours (counted up to 1,000).";
    CustomerDistinctCards24h = "customer_distinct_cards_24h": Ty::Num, "Distinct cards this customer used in 24 hours (counted up to 1,000).";
    IpDistinctCards24h = "ip_distinct_cards_24h": Ty::Num, "Distinct cards used from this IP address in 24 hours (counted up to 1,000).";
}

/// A runtime value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// Number.
    Num(Decimal),
    /// String.
    Str(String),
    /// Boolean.
    Bool(bool),
}

impl From<&Literal> for Value {
    fn from(l: &Literal) -> Value {
        match l {
            Literal::Str(s) => Value::Str(s.clone()),
            Literal::Num(n) => Value::Num(*n),
            Literal::Bool(b) => Value::Bool(*b),
        }
    }
}

/// What the rules see of one payment: a value (or none) per attribute, plus metadata.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    values: BTreeMap<Attr, Value>,
    /// The payment's metadata.
    pub metadata: BTreeMap<String, String>,
}

impl Facts {
    /// Sets an attribute (`None` leaves it missing).
    pub fn set(&mut self, a: Attr, v: Option<Value>) {
        match v {
            Some(v) => {
                self.values.insert(a, v);
            }
            None => {
                self.values.remove(&a);
            }
        }
    }

    /// An attribute's value.
    pub fn get(&self, a: Attr) -> Option<&Value> {
        self.values.get(&a)
    }
}

/// Radar value lists as the rule engine sees them.
pub trait ValueLists: Send + Sync {
    /// True when a list with this alias exists.
    fn exists(&self, alias: &str) -> bool;
    /// True when the list contains `value` (lists decide their own case sensitivity).
    fn contains(&self, alias: &str, value: &str) -> bool;
}

/// Value lists in memory.
#[derive(Debug, Clone, Default)]
pub struct MemoryLists {
    lists: BTreeMap<String, (bool, BTreeSet<String>)>,
}

impl MemoryLists {
    /// No lists.
    pub fn new() -> MemoryLists {
        MemoryLists::default()
    }

    /// Creates (or empties) a list. Case-insensitive lists compare lowercase.
    pub fn create(&mut self, alias: &str, case_sensitive: bool) {
        self.lists.insert(alias.to_owned(), (case_sensitive, BTreeSet::new()));
    }

    /// Adds an item; false when the list does not exist.
    pub fn add(&mut self, alias: &str, value: &str) -> bool {
        match self.lists.get_mut(alias) {
            Some((cs, items)) => {
                items.insert(if *cs { value.to_owned() } else { value.to_lowercase() });
                true
            }
            None => false,
        }
    }

    /// Removes an item.
    pub fn remove(&mut self, alias: &str, value: &str) {
        if let Some((cs, items)) = self.lists.get_mut(alias) {
            let v = if *cs { value.to_owned() } else { value.to_lowercase() };
            items.remove(&v);
        }
    }

    /// Deletes a list.
    pub fn delete(&mut self, alias: &str) {
        self.lists.remove(alias);
    }
}

impl ValueLists for MemoryLists {
    fn exists(&self, alias: &str) -> bool {
        self.lists.contains_key(alias)
    }
    fn contains(&self, alias: &str, value: &str) -> bool {
        match self.lists.get(alias) {
            Some((true, items)) => items.contains(value),
            Some((false, items)) => items.contains(&value.to_lowercase()),
            None => false,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Validation

#[derive(Debug, Clone, PartialEq)]
enum COperand {
    Attr(Attr),
    Meta(String),
    Lit(Value),
}

#[derive(Debug, Clone, PartialEq)]
enum CCond {
    Or(Box<CCond>, Box<CCond>),
    And(Box<CCond>, Box<CCond>),
    Not(Box<CCond>),
    Cmp(COperand, CmpOp, COperand, Option<&'static [&'static str]>),
    InList(COperand, bool, String),
    InItems(COperand, bool, Vec<Value>),
    Truth(COperand),
}

/// A validated rule, ready to evaluate.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledRule {
    /// The rule as parsed.
    pub ast: RuleAst,
    cond: CCond,
}

impl CompiledRule {
    /// What it does.
    pub fn action(&self) -> Action {
        self.ast.action
    }

    /// True when the rule's condition holds for `facts`.
    pub fn matches(&self, facts: &Facts, lists: &dyn ValueLists) -> bool {
        eval(&self.cond, facts, lists)
    }
}

/// Edit distance, for "did you mean".
fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

fn closest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(2);
    candidates
        .map(|c| (levenshtein(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn compile_operand(o: &Operand) -> Result<(COperand, Ty), ParseError> {
    match o {
        Operand::Attr(name, p) => match Attr::from_name(name) {
            Some(a) => Ok((COperand::Attr(a), a.ty())),
            None => {
                let hint = closest(name, Attr::ALL.iter().map(|a| a.name()))
                    .map(|c| format!(" (did you mean :{c}:?)"))
                    .unwrap_or_default();
                Err(ParseError::at(
                    *p,
                    format!("unknown attribute :{}:{hint}", truncate(name)),
                ))
            }
        },
        Operand::Meta(k, _) => Ok((COperand::Meta(k.clone()), Ty::Str)),
        Operand::Lit(l, _) => Ok((
            COperand::Lit(Value::from(l)),
            match l {
                Literal::Str(_) => Ty::Str,
                Literal::Num(_) => Ty::Num,
                Literal::Bool(_) => Ty::Bool,
            },
        )),
    }
}

fn describe_operand(o: &Operand) -> String {
    let mut s = String::new();
    print_operand(o, &mut s);
    truncate(&s)
}

/// Checks that a string literal is a possible value of an enum-typed operand.
fn check_enum_literal(attr: &Operand, ty: Ty, lit: &Literal, pos: Pos) -> Result<(), ParseError> {
    if let (Ty::Enum { values, .. }, Literal::Str(s)) = (ty, lit) {
        if !values.contains(&s.as_str()) {
            let hint = closest(s, values.iter().copied())
                .map(|c| format!(" (did you mean '{c}'?)"))
                .unwrap_or_default();
            return Err(ParseError::at(
                pos,
                format!(
                    "'{}' is not a possible value of {}: expected one of {}{hint}",
                    truncate(s),
                    describe_operand(attr),
                    values.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

fn compatible(a: Ty, b: Ty) -> bool {
    match (a, b) {
        (Ty::Enum { values: x, .. }, Ty::Enum { values: y, .. }) => std::ptr::eq(x, y),
        _ => a == b || (a.stringy() && b.stringy()),
    }
}

fn compile_cond(c: &Cond, lists: &dyn ValueLists) -> Result<CCond, ParseError> {
    Ok(match c {
        Cond::Or(l, r) => CCond::Or(Box::new(compile_cond(l, lists)?), Box::new(compile_cond(r, lists)?)),
        Cond::And(l, r) => CCond::And(Box::new(compile_cond(l, lists)?), Box::new(compile_cond(r, lists)?)),
        Cond::Not(x) => CCond::Not(Box::new(compile_cond(x, lists)?)),
        Cond::Truth(o) => {
            let (co, ty) = compile_operand(o)?;
            if ty != Ty::Bool {
                return Err(ParseError::at(
                    o.pos(),
                    format!(
                        "{} is {}, not a condition: compare it with an operator such as `=`",
                        describe_operand(o),
                        ty.name()
                    ),
                ));
            }
            CCond::Truth(co)
        }
        Cond::Cmp(l, op, r) => {
            let (cl, tl) = compile_operand(l)?;
            let (cr, tr) = compile_operand(r)?;
            if !compatible(tl, tr) {
                return Err(ParseError::at(
                    r.pos(),
                    format!(
                        "type mismatch: {} is {} but {} is {}",
                        describe_operand(l),
                        tl.name(),
                        describe_operand(r),
                        tr.name()
                    ),
                ));
            }
            if let Operand::Lit(lit, p) = r {
                check_enum_literal(l, tl, lit, *p)?;
            }
            if let Operand::Lit(lit, p) = l {
                check_enum_literal(r, tr, lit, *p)?;
            }
            let mut order = None;
            if op.is_ordering() {
                let enum_ty = [tl, tr].into_iter().find(|t| matches!(t, Ty::Enum { .. }));
                match (tl, enum_ty) {
                    (Ty::Num, _) => {}
                    (_, Some(Ty::Enum { values, ordered: true })) => order = Some(values),
                    (Ty::Bool, _) => {
                        return Err(ParseError::at(
                            l.pos(),
                            format!("booleans cannot be ordered with `{}`; use `=` or `!=`", op.as_str()),
                        ))
                    }
                    _ => {
                        return Err(ParseError::at(
                            l.pos(),
                            format!(
                                "{} cannot be ordered with `{}`; only numbers and :risk_level: can",
                                describe_operand(l),
                                op.as_str()
                            ),
                        ))
                    }
                }
            }
            CCond::Cmp(cl, *op, cr, order)
        }
        Cond::In { operand, negated, set } => {
            let (co, ty) = compile_operand(operand)?;
            if ty == Ty::Bool {
                return Err(ParseError::at(
                    operand.pos(),
                    format!(
                        "{} is a boolean and cannot be tested with `in`",
                        describe_operand(operand)
                    ),
                ));
            }
            match set {
                SetExpr::List(name, p) => {
                    if !lists.exists(name) {
                        return Err(ParseError::at(*p, format!("unknown list @{}", truncate(name))));
                    }
                    CCond::InList(co, *negated, name.clone())
                }
                SetExpr::Items(items) => {
                    let mut vals = vec![];
                    for (lit, p) in items {
                        let lt = match lit {
                            Literal::Str(_) => Ty::Str,
                            Literal::Num(_) => Ty::Num,
                            Literal::Bool(_) => Ty::Bool,
                        };
                        if !compatible(ty, lt) {
                            return Err(ParseError::at(
                                *p,
                                format!(
                                    "type mismatch: {} is {} but this value is {}",
                                    describe_operand(operand),
                                    ty.name(),
                                    lt.name()
                                ),
                            ));
                        }
                        check_enum_literal(operand, ty, lit, *p)?;
                        vals.push(Value::from(lit));
                    }
                    CCond::InItems(co, *negated, vals)
                }
            }
        }
    })
}

/// Parses and validates a rule against the known attributes and `lists`.
pub fn compile_rule(text: &str, lists: &dyn ValueLists) -> Result<CompiledRule, ParseError> {
    let ast = parse_rule(text)?;
    compile_ast(ast, lists)
}

/// Validates a parsed rule.
pub fn compile_ast(ast: RuleAst, lists: &dyn ValueLists) -> Result<CompiledRule, ParseError> {
    let cond = compile_cond(&ast.condition, lists)?;
    Ok(CompiledRule { ast, cond })
}

// ---------------------------------------------------------------------------------------------
// Evaluation

fn resolve<'a>(o: &'a COperand, facts: &'a Facts) -> Option<std::borrow::Cow<'a, Value>> {
    use std::borrow::Cow;
    match o {
        COperand::Attr(a) => facts.get(*a).map(Cow::Borrowed),
        COperand::Meta(k) => facts.metadata.get(k).map(|s| Cow::Owned(Value::Str(s.clone()))),
        COperand::Lit(v) => Some(Cow::Borrowed(v)),
    }
}

fn compare(a: &Value, b: &Value, order: Option<&'static [&'static str]>) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::Num(x), Value::Num(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        (Value::Str(x), Value::Str(y)) => match order {
            Some(values) => {
                let ix = values.iter().position(|v| v == x)?;
                let iy = values.iter().position(|v| v == y)?;
                Some(ix.cmp(&iy))
            }
            None => Some(x.cmp(y)),
        },
        _ => None,
    }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::Num(n) => n.to_string(),
        Value::Str(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
    }
}

fn eval(c: &CCond, facts: &Facts, lists: &dyn ValueLists) -> bool {
    use std::cmp::Ordering::*;
    match c {
        CCond::Or(l, r) => eval(l, facts, lists) || eval(r, facts, lists),
        CCond::And(l, r) => eval(l, facts, lists) && eval(r, facts, lists),
        CCond::Not(x) => !eval(x, facts, lists),
        CCond::Truth(o) => matches!(resolve(o, facts).as_deref(), Some(Value::Bool(true))),
        CCond::Cmp(l, op, r, order) => {
            let (Some(a), Some(b)) = (resolve(l, facts), resolve(r, facts)) else {
                return false;
            };
            let order = if op.is_ordering() { *order } else { None };
            let Some(ord) = compare(&a, &b, order) else {
                return false;
            };
            match op {
                CmpOp::Eq => ord == Equal,
                CmpOp::Ne => ord != Equal,
                CmpOp::Lt => ord == Less,
                CmpOp::Gt => ord == Greater,
                CmpOp::Le => ord != Greater,
                CmpOp::Ge => ord != Less,
            }
        }
        CCond::InList(o, negated, list) => match resolve(o, facts) {
            Some(v) => lists.contains(list, &value_text(&v)) != *negated,
            None => false,
        },
        CCond::InItems(o, negated, items) => match resolve(o, facts) {
            Some(v) => items.contains(&v) != *negated,
            None => false,
        },
    }
}

// ---------------------------------------------------------------------------------------------
// Rule sets

/// A rule in a set.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Its id (`rule_…` or a name).
    pub id: String,
    /// The rule as written (canonical form).
    pub text: String,
    /// The compiled rule.
    pub compiled: CompiledRule,
}

/// An ordered collection of rules.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
}

impl RuleSet {
    /// No rules: every payment is allowed by the rules (the model still scores it).
    pub fn empty() -> RuleSet {
        RuleSet::default()
    }

    /// Radar's default rules: block the highest risk level, review elevated.
    pub fn radar_defaults() -> RuleSet {
        let mut s = RuleSet::empty();
        let none = MemoryLists::new();
        for (id, text) in [
            ("block_if_high_risk", "Block if :risk_level: = 'highest'"),
            ("review_if_elevated_risk", "Review if :risk_level: = 'elevated'"),
        ] {
            // Both rules are constant and covered by tests.
            if let Ok(r) = compile_rule(text, &none) {
                s.insert(id, r);
            }
        }
        s
    }

    /// Validates and adds a rule (replacing one with the same id).
    pub fn add(&mut self, id: &str, text: &str, lists: &dyn ValueLists) -> Result<&Rule, ParseError> {
        let compiled = compile_rule(text, lists)?;
        Ok(self.insert(id, compiled))
    }

    /// Adds an already compiled rule (replacing one with the same id).
    pub fn insert(&mut self, id: &str, compiled: CompiledRule) -> &Rule {
        let rule = Rule {
            id: id.to_owned(),
            text: compiled.ast.to_string(),
            compiled,
        };
        match self.rules.iter().position(|r| r.id == id) {
            Some(i) => {
                self.rules[i] = rule;
                &self.rules[i]
            }
            None => {
                self.rules.push(rule);
                let last = self.rules.len() - 1;
                &self.rules[last]
            }
        }
    }

    /// Removes a rule; false if there was none with that id.
    pub fn remove(&mut self, id: &str) -> bool {
        let before = self.rules.len();
        self.rules.retain(|r| r.id != id);
        before != self.rules.len()
    }

    /// The rules in insertion order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// True when there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The first matching rule, Allow rules first, then Block, then Review.
    pub fn evaluate(&self, facts: &Facts, lists: &dyn ValueLists) -> Option<&Rule> {
        [Action::Allow, Action::Block, Action::Review]
            .into_iter()
            .find_map(|action| {
                self.rules
                    .iter()
                    .filter(|r| r.compiled.action() == action)
                    .find(|r| r.compiled.matches(facts, lists))
            })
    }
}

#[cfg(test)]
mod tests;
