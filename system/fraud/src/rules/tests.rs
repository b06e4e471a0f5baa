use super::*;
use proptest::prelude::*;

fn lists() -> MemoryLists {
    let mut l = MemoryLists::new();
    l.create("trusted_cards", true);
    l.add("trusted_cards", "fp_trusted");
    l.create("blocked_emails", false);
    l.add("blocked_emails", "Bad@Example.com");
    l
}

fn facts(pairs: &[(Attr, Value)]) -> Facts {
    let mut f = Facts::default();
    for (a, v) in pairs {
        f.set(*a, Some(v.clone()));
    }
    f
}

fn num(s: &str) -> Value {
    Value::Num(Decimal::parse(s).unwrap())
}

fn s(v: &str) -> Value {
    Value::Str(v.into())
}

#[test]
fn the_issues_example_rules_compile_and_match() {
    let l = lists();
    let r = compile_rule("Block if :risk_score: > 75", &l).unwrap();
    assert!(r.matches(&facts(&[(Attr::RiskScore, num("76"))]), &l));
    assert!(!r.matches(&facts(&[(Attr::RiskScore, num("75"))]), &l));
    let r = compile_rule("Review if :risk_level: = 'elevated'", &l).unwrap();
    assert!(r.matches(&facts(&[(Attr::RiskLevel, s("elevated"))]), &l));
    let r = compile_rule("Allow if :card_fingerprint: in @trusted_cards", &l).unwrap();
    assert!(r.matches(&facts(&[(Attr::CardFingerprint, s("fp_trusted"))]), &l));
    assert!(!r.matches(&facts(&[(Attr::CardFingerprint, s("FP_TRUSTED"))]), &l));
    let r = compile_rule("Block if :card_country: != :ip_country: and :amount_in_usd: > 500", &l).unwrap();
    let base = [(Attr::CardCountry, s("US")), (Attr::IpCountry, s("DE"))];
    let mut f = facts(&base);
    f.set(Attr::AmountInUsd, Some(num("500.01")));
    assert!(r.matches(&f, &l));
    f.set(Attr::AmountInUsd, Some(num("500")));
    assert!(!r.matches(&f, &l));
    // Missing IP country: the comparison is false, so the rule does not fire.
    f.set(Attr::AmountInUsd, Some(num("900")));
    f.set(Attr::IpCountry, None);
    assert!(!r.matches(&f, &l));
    let r = compile_rule("Block if ::order_type:: = 'gift_card'", &l).unwrap();
    let mut f = Facts::default();
    f.metadata.insert("order_type".into(), "gift_card".into());
    assert!(r.matches(&f, &l));
    assert!(!r.matches(&Facts::default(), &l));
    let r = compile_rule("block IF :email: IN @blocked_emails AND NOT :livemode:", &l).unwrap();
    assert!(r.matches(
        &facts(&[
            (Attr::Email, s("bad@example.com")),
            (Attr::Livemode, Value::Bool(false))
        ]),
        &l
    ));
}

#[test]
fn operators_precedence_and_sets() {
    let l = lists();
    let f = facts(&[
        (Attr::RiskScore, num("50")),
        (Attr::CardCountry, s("US")),
        (Attr::RiskLevel, s("elevated")),
        (Attr::CvcCheck, s("fail")),
    ]);
    let m = |t: &str| compile_rule(t, &l).unwrap().matches(&f, &l);
    assert!(m("Block if :risk_score: >= 50 and :risk_score: <= 50"));
    assert!(!m("Block if :risk_score: < 50 or :risk_score: > 50"));
    // and binds tighter than or.
    assert!(m(
        "Block if :risk_score: = 1 and :risk_score: = 2 or :card_country: = 'US'"
    ));
    assert!(!m(
        "Block if :risk_score: = 1 and (:risk_score: = 2 or :card_country: = 'US')"
    ));
    assert!(m("Block if not :risk_score: = 1"));
    assert!(m("Block if :card_country: in ('US', 'CA')"));
    assert!(m("Block if :card_country: not in ('DE')"));
    assert!(!m("Block if :card_country: not in ('US')"));
    assert!(m("Block if :risk_level: >= 'elevated' and :risk_level: < 'highest'"));
    assert!(m("Block if :cvc_check: = 'fail'"));
    assert!(m("Block if 50 = :risk_score:"));
    assert!(m("Block if :risk_score: = 50.000"));
    // Missing values: every comparison and in/not in is false.
    assert!(!m("Block if :ip_country: != 'US'"));
    assert!(!m("Block if :ip_country: not in ('US')"));
    assert!(m("Block if not :ip_country: = 'US'"));
    assert!(!m("Block if :card_attempts_1h: > 10"));
}

#[test]
fn ruleset_order_is_allow_block_review_first_match_wins() {
    let l = lists();
    let mut rs = RuleSet::empty();
    rs.add("r_review", "Review if :risk_score: > 10", &l).unwrap();
    rs.add("r_block", "Block if :risk_score: > 20", &l).unwrap();
    rs.add("r_block2", "Block if :risk_score: > 5", &l).unwrap();
    rs.add("r_allow", "Allow if :card_fingerprint: in @trusted_cards", &l)
        .unwrap();
    let f = facts(&[(Attr::RiskScore, num("30"))]);
    assert_eq!(rs.evaluate(&f, &l).unwrap().id, "r_block");
    let f = facts(&[(Attr::RiskScore, num("15"))]);
    assert_eq!(rs.evaluate(&f, &l).unwrap().id, "r_block2");
    let f = facts(&[(Attr::RiskScore, num("30")), (Attr::CardFingerprint, s("fp_trusted"))]);
    assert_eq!(rs.evaluate(&f, &l).unwrap().id, "r_allow");
    assert!(rs.remove("r_block2"));
    assert!(!rs.remove("r_block2"));
    let f = facts(&[(Attr::RiskScore, num("15"))]);
    assert_eq!(rs.evaluate(&f, &l).unwrap().id, "r_review");
    assert!(rs.evaluate(&facts(&[(Attr::RiskScore, num("1"))]), &l).is_none());
    // Replacing by id keeps one rule.
    rs.add("r_review", "Review if :risk_score: > 0", &l).unwrap();
    assert_eq!(rs.len(), 3);
    let d = RuleSet::radar_defaults();
    assert_eq!(d.len(), 2);
    assert_eq!(
        d.evaluate(&facts(&[(Attr::RiskLevel, s("highest"))]), &l)
            .unwrap()
            .compiled
            .action(),
        Action::Block
    );
}

fn err(text: &str) -> ParseError {
    compile_rule(text, &lists()).unwrap_err()
}

#[test]
fn validation_errors_have_positions_and_hints() {
    let e = err("Block if :risk_scor: > 75");
    assert_eq!((e.line, e.column), (1, 10));
    assert!(e.message.contains("unknown attribute :risk_scor:"), "{}", e.message);
    assert!(e.message.contains("did you mean :risk_score:?"), "{}", e.message);
    let e = err("Block if :email: in @nope");
    assert_eq!((e.line, e.column), (1, 21));
    assert!(e.message.contains("unknown list @nope"));
    let e = err("Block if :risk_score: > 'high'");
    assert_eq!(e.column, 25);
    assert!(e.message.contains("type mismatch"), "{}", e.message);
    let e = err("Block if :livemode: > false");
    assert!(e.message.contains("booleans cannot be ordered"), "{}", e.message);
    let e = err("Block if :card_country: < 'US'");
    assert!(e.message.contains("cannot be ordered"), "{}", e.message);
    let e = err("Block if :risk_score:");
    assert!(e.message.contains("not a condition"), "{}", e.message);
    let e = err("Review if\n  :risk_level: = 'hihgest'");
    assert_eq!((e.line, e.column), (2, 18));
    assert!(e.message.contains("did you mean 'highest'?"), "{}", e.message);
    let e = err("Block if :cvc_check: in ('pass', 'failed')");
    assert!(e.message.contains("'failed' is not a possible value"), "{}", e.message);
    let e = err("Block if ::k:: in (1)");
    assert!(e.message.contains("type mismatch"), "{}", e.message);
}

#[test]
fn syntax_errors_have_positions() {
    for (text, line, col, needle) in [
        ("", 1, 1, "expected `Allow`"),
        ("Deny if :risk_score: > 1", 1, 1, "expected `Allow`"),
        ("Block :risk_score: > 1", 1, 7, "expected `if`"),
        ("Block if :risk_score: > ", 1, 25, "expected an attribute"),
        ("Block if (:risk_score: > 1", 1, 27, "expected `)`"),
        ("Block if :risk_score: > 1 1", 1, 27, "expected `and`, `or`"),
        ("Block if 'abc", 1, 10, "unterminated string"),
        ("Block if :email: in", 1, 20, "expected `@list`"),
        ("Block if :email: in ('a' 'b')", 1, 26, "expected `,` or `)`"),
        ("Block if ::k", 1, 10, "unterminated metadata"),
        ("Block if :x > 1", 1, 10, "expected an attribute"),
        ("Block if 1.2.3 = 1", 1, 10, "invalid number"),
        ("Block if :a: ! 1", 1, 14, "expected `!=`"),
        ("Block\nif\n:a: # 1", 3, 5, "unexpected character `#`"),
    ] {
        let e = parse_rule(text).unwrap_err();
        assert_eq!((e.line, e.column), (line, col), "{text:?}: {}", e.message);
        assert!(e.message.contains(needle), "{text:?}: {}", e.message);
    }
    assert!(parse_rule(&format!("Block if {}:a:{}", "(".repeat(100), ")".repeat(100))).is_err());
}

#[test]
fn printer_gives_canonical_text() {
    let a = parse_rule("block IF (:a: = 1 OR :b: = 'x''') and not (:c: in @l or :d:) and :e: not in (1, -2.50)");
    assert!(a.is_err()); // '' is not an escape
    let a =
        parse_rule(r"block IF (:a: = 1 OR :b: = 'x\'') and not (:c: in @l or :d:) and :e: not in (1, -2.50)").unwrap();
    assert_eq!(
        a.to_string(),
        r"Block if (:a: = 1 or :b: = 'x\'') and not (:c: in @l or :d:) and :e: not in (1, -2.5)"
    );
    assert_eq!(parse_rule(&a.to_string()).unwrap(), a);
}

// ---- property tests

fn arb_lit() -> impl Strategy<Value = Literal> {
    prop_oneof![
        ".{0,8}".prop_map(Literal::Str),
        (-1_000_000_000i64..1_000_000_000, 0u32..6).prop_map(|(m, e)| {
            let d = Decimal::parse(&format!("{}", m)).unwrap();
            let scaled = Decimal::parse(&crate::decimal::Decimal::from_minor(m, e).to_string()).unwrap();
            Literal::Num(if e == 0 { d } else { scaled })
        }),
        any::<bool>().prop_map(Literal::Bool),
    ]
}

fn arb_operand() -> impl Strategy<Value = Operand> {
    prop_oneof![
        "[a-z_][a-z0-9_]{0,10}".prop_map(|a| Operand::Attr(a, Pos::default())),
        "[a-z_][a-z_ .-]{0,8}".prop_map(|k| Operand::Meta(k, Pos::default())),
        arb_lit().prop_map(|l| Operand::Lit(l, Pos::default())),
    ]
}

fn arb_op() -> impl Strategy<Value = CmpOp> {
    prop_oneof![
        Just(CmpOp::Eq),
        Just(CmpOp::Ne),
        Just(CmpOp::Lt),
        Just(CmpOp::Gt),
        Just(CmpOp::Le),
        Just(CmpOp::Ge)
    ]
}

fn arb_cond() -> impl Strategy<Value = Cond> {
    let leaf = prop_oneof![
        (arb_operand(), arb_op(), arb_operand()).prop_map(|(a, o, b)| Cond::Cmp(a, o, b)),
        (arb_operand(), any::<bool>(), "[a-z_][a-z0-9_-]{0,8}").prop_map(|(o, n, l)| Cond::In {
            operand: o,
            negated: n,
            set: SetExpr::List(l, Pos::default())
        }),
        (arb_operand(), any::<bool>(), proptest::collection::vec(arb_lit(), 0..4)).prop_map(|(o, n, items)| {
            Cond::In {
                operand: o,
                negated: n,
                set: SetExpr::Items(items.into_iter().map(|l| (l, Pos::default())).collect()),
            }
        }),
        arb_operand().prop_map(Cond::Truth),
    ];
    leaf.prop_recursive(5, 32, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Cond::Or(Box::new(a), Box::new(b))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Cond::And(Box::new(a), Box::new(b))),
            inner.prop_map(|a| Cond::Not(Box::new(a))),
        ]
    })
}

fn arb_rule() -> impl Strategy<Value = RuleAst> {
    (
        prop_oneof![Just(Action::Allow), Just(Action::Block), Just(Action::Review)],
        arb_cond(),
    )
        .prop_map(|(action, condition)| RuleAst { action, condition })
}

/// Every position in an error points inside the text or just past its end.
fn position_inside(text: &str, e: &ParseError) -> bool {
    let lines: Vec<&str> = text.split('\n').collect();
    let Some(line) = lines.get(e.line as usize - 1) else {
        return false;
    };
    e.line >= 1 && e.column >= 1 && (e.column as usize) <= line.chars().count() + 1
}

fn valid_facts() -> impl Strategy<Value = Facts> {
    proptest::collection::vec(
        (
            0usize..Attr::ALL.len(),
            prop_oneof![
                (-1000i64..1000).prop_map(|n| Value::Num(Decimal::from_int(n))),
                prop_oneof![
                    Just("normal"),
                    Just("elevated"),
                    Just("highest"),
                    Just("US"),
                    Just("pass")
                ]
                .prop_map(|s| Value::Str(s.into())),
                any::<bool>().prop_map(Value::Bool),
            ],
        ),
        0..20,
    )
    .prop_map(|pairs| {
        let mut f = Facts::default();
        for (i, v) in pairs {
            f.set(Attr::ALL[i], Some(v));
        }
        f.metadata.insert("k".into(), "v".into());
        f
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn print_then_parse_is_identity(rule in arb_rule()) {
        let text = rule.to_string();
        let back = parse_rule(&text);
        prop_assert!(back.is_ok(), "{text:?}: {:?}", back);
        prop_assert_eq!(back.unwrap(), rule);
    }

    #[test]
    fn parser_never_panics_and_errors_point_inside(text in "(?s).{0,80}") {
        if let Err(e) = compile_rule(&text, &lists()) {
            prop_assert!(position_inside(&text, &e), "{text:?} {e:?}");
        }
    }

    #[test]
    fn parser_survives_rule_shaped_noise(
        parts in proptest::collection::vec(prop_oneof![
            Just("Block"), Just("if"), Just(":risk_score:"), Just(">"), Just("75"), Just("and"), Just("or"),
            Just("not"), Just("in"), Just("("), Just(")"), Just("@trusted_cards"), Just("'x'"), Just(","),
            Just("::k::"), Just(":risk_level:"), Just("'highest'"), Just("="), Just("\n"), Just(":livemode:"),
        ], 0..20)
    ) {
        let text = parts.join(" ");
        if let Err(e) = compile_rule(&text, &lists()) {
            prop_assert!(position_inside(&text, &e), "{text:?} {e:?}");
        }
    }

    #[test]
    fn evaluator_is_total_on_valid_rules(rule in arb_rule(), f in valid_facts()) {
        // Whatever compiles evaluates, on any facts, without panicking.
        if let Ok(c) = compile_ast(rule, &lists()) {
            let _ = c.matches(&f, &lists());
        }
    }

    #[test]
    fn missing_values_make_comparisons_false(attr in 0usize..Attr::ALL.len(), op in arb_op(), lit in arb_lit()) {
        let a = Attr::ALL[attr];
        let rule = RuleAst {
            action: Action::Block,
            condition: Cond::Cmp(Operand::Attr(a.name().into(), Pos::default()), op, Operand::Lit(lit.clone(), Pos::default())),
        };
        if let Ok(c) = compile_ast(rule, &lists()) {
            prop_assert!(!c.matches(&Facts::default(), &lists()));
        }
        let rule = RuleAst {
            action: Action::Block,
            condition: Cond::In { operand: Operand::Attr(a.name().into(), Pos::default()), negated: true, set: SetExpr::Items(vec![(lit, Pos::default())]) },
        };
        if let Ok(c) = compile_ast(rule, &lists()) {
            prop_assert!(!c.matches(&Facts::default(), &lists()));
        }
    }
}
