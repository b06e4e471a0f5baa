//! Steps in the merchant's language: keys, cards, payments, refunds, idempotent retries,
//! least privilege, authentication failures and hostile input.

use crate::scan;
use crate::world::{PciWorld, PlantedCard};
use cucumber::{given, then, when};
use pay_net::ratelimit::RateLimit;

type StepResult = Result<(), String>;

// ---------------------------------------------------------------- merchants and configuration

#[given("a merchant with a secret key")]
async fn a_merchant(w: &mut PciWorld) -> StepResult {
    let sys = w.system().await?;
    let base = sys.base_url.clone();
    let a = w.get("/v1/payment_intents?limit=1").await?;
    if a.status != 200 {
        return Err(format!(
            "the merchant's secret key is not accepted: {} {}",
            a.status, a.json
        ));
    }
    w.note(format!(
        "merchant secret key accepted by {base} (GET /v1/payment_intents → 200)"
    ));
    Ok(())
}

#[given(expr = "the system locks a client out after {int} failed authentications")]
async fn lockout_config(w: &mut PciWorld, n: u32) -> StepResult {
    if w.ctx()?.spec.is_embedded() {
        w.tuning.api.auth_failure_rate = RateLimit {
            per_second: 0.01,
            burst: f64::from(n),
        };
        w.note(format!(
            "embedded node configured: lockout after {n} failed authentications per client IP"
        ));
    } else {
        w.note("deployed target: its configured lockout threshold applies");
    }
    Ok(())
}

#[given(expr = "the system limits each API key to a burst of {int} requests")]
async fn key_rate_config(w: &mut PciWorld, n: u32) -> StepResult {
    if w.ctx()?.spec.is_embedded() {
        w.tuning.api.key_rate = RateLimit {
            per_second: 1.0,
            burst: f64::from(n),
        };
        w.note(format!(
            "embedded node configured: per-key burst of {n} requests, 1 request/s refill"
        ));
    } else {
        w.note("deployed target: its configured per-key rate limit applies");
    }
    Ok(())
}

// ---------------------------------------------------------------- cards

fn card_form<'a>(pan: &'a str, cvc: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut form = vec![
        ("type", "card"),
        ("card[number]", pan),
        ("card[exp_month]", "12"),
        ("card[exp_year]", "2034"),
    ];
    if !cvc.is_empty() {
        form.push(("card[cvc]", cvc));
    }
    form
}

pub(crate) async fn tokenize(w: &mut PciWorld, pan: &str, cvc: &str) -> StepResult {
    let a = w.post("/v1/payment_methods", &card_form(pan, cvc), None).await?;
    if a.status != 200 {
        return Err(format!(
            "tokenizing {} failed: {} {}",
            scan::mask(pan),
            a.status,
            a.json
        ));
    }
    let pm = a.str("/id").ok_or("no payment method id")?.to_owned();
    let fingerprint = a.str("/card/fingerprint").map(str::to_owned);
    w.note(format!(
        "POST /v1/payment_methods with card {} → 200 {pm}, card shown as brand {} last4 {}",
        scan::mask(pan),
        a.str("/card/brand").unwrap_or("?"),
        a.str("/card/last4").unwrap_or("?")
    ));
    let ctx = w.ctx()?;
    if ctx.fault == crate::target::FaultInjection::RawPanInLogs {
        // The deliberately broken target: a component that logs the request body raw.
        ctx.logs.append_raw(&format!(
            "{{\"level\":\"DEBUG\",\"fields\":{{\"message\":\"tokenize request\",\"body\":\"card[number]={pan}&card[cvc]={cvc}\"}},\"target\":\"fault_injection\"}}"
        ));
    }
    w.cards.push(PlantedCard {
        pan: pan.to_owned(),
        cvc: cvc.to_owned(),
        payment_method: pm,
        fingerprint,
    });
    Ok(())
}

#[given(expr = "the merchant tokenizes the card {string} with CVC {string}")]
#[when(expr = "the merchant tokenizes the card {string} with CVC {string}")]
async fn tokenizes(w: &mut PciWorld, pan: String, cvc: String) -> StepResult {
    tokenize(w, &pan, &cvc).await
}

#[when(expr = "the merchant submits the card {string} with an invalid expiry month")]
async fn bad_card(w: &mut PciWorld, pan: String) -> StepResult {
    let a = w
        .post(
            "/v1/payment_methods",
            &[
                ("type", "card"),
                ("card[number]", &pan),
                ("card[exp_month]", "13"),
                ("card[exp_year]", "2034"),
                ("card[cvc]", "123"),
            ],
            None,
        )
        .await?;
    if !(400..500).contains(&a.status) {
        return Err(format!("an invalid card was not rejected: {} {}", a.status, a.json));
    }
    w.note(format!(
        "POST /v1/payment_methods with card {} and expiry month 13 → {} {}",
        scan::mask(&pan),
        a.status,
        a.code().unwrap_or("")
    ));
    // Remember the number so every later scan looks for it too.
    w.cards.push(PlantedCard {
        pan,
        cvc: "123".into(),
        payment_method: String::new(),
        fingerprint: None,
    });
    Ok(())
}

// ---------------------------------------------------------------- payments and refunds

pub(crate) async fn charge(w: &mut PciWorld, amount: i64, currency: &str, idem: Option<&str>) -> StepResult {
    let pm = w.card()?.payment_method.clone();
    let amount = amount.to_string();
    let form: Vec<(String, String)> = vec![
        ("amount".into(), amount),
        ("currency".into(), currency.to_ascii_lowercase()),
        ("payment_method".into(), pm),
        ("confirm".into(), "true".into()),
        ("expand[]".into(), "latest_charge".into()),
    ];
    send_payment(w, form, idem).await
}

async fn send_payment(w: &mut PciWorld, form: Vec<(String, String)>, idem: Option<&str>) -> StepResult {
    let pairs: Vec<(&str, &str)> = form.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let a = w.post("/v1/payment_intents", &pairs, idem).await?;
    w.note(format!(
        "POST /v1/payment_intents amount={} {}{} → {} {} {}",
        form.first().map(|f| f.1.as_str()).unwrap_or(""),
        form.get(1).map(|f| f.1.as_str()).unwrap_or(""),
        idem.map(|k| format!(" Idempotency-Key: {k}")).unwrap_or_default(),
        a.status,
        a.str("/id").unwrap_or(""),
        a.str("/status").or(a.code()).unwrap_or("")
    ));
    w.first = w.payment.take();
    w.payment = Some(a);
    w.last_form = form;
    Ok(())
}

#[when(expr = "the merchant charges {int} {word} to the card")]
async fn charges(w: &mut PciWorld, amount: i64, currency: String) -> StepResult {
    charge(w, amount, &currency, None).await
}

#[when(expr = "the merchant charges {int} {word} to the card with idempotency key {string}")]
async fn charges_idem(w: &mut PciWorld, amount: i64, currency: String, key: String) -> StepResult {
    charge(w, amount, &currency, Some(&key)).await
}

#[when(expr = "the merchant retries that request with idempotency key {string}")]
async fn retries(w: &mut PciWorld, key: String) -> StepResult {
    let form = w.last_form.clone();
    send_payment(w, form, Some(&key)).await
}

#[when(expr = "the merchant sends a different request with idempotency key {string}")]
async fn different(w: &mut PciWorld, key: String) -> StepResult {
    let mut form = w.last_form.clone();
    if let Some(a) = form.iter_mut().find(|(k, _)| k == "amount") {
        a.1 = format!("{}", a.1.parse::<i64>().unwrap_or(1000) + 1);
    }
    send_payment(w, form, Some(&key)).await
}

fn payment(w: &PciWorld) -> Result<&crate::target::Answer, String> {
    w.payment.as_ref().ok_or_else(|| "no payment was made".to_owned())
}

#[then("the payment succeeds")]
async fn payment_succeeds(w: &mut PciWorld) -> StepResult {
    let p = payment(w)?;
    if p.status != 200 || p.str("/status") != Some("succeeded") {
        return Err(format!("the payment did not succeed: {} {}", p.status, p.json));
    }
    Ok(())
}

#[then("the retry is answered from the idempotency store with the same payment")]
async fn replayed(w: &mut PciWorld) -> StepResult {
    let (first, again) = match (&w.first, &w.payment) {
        (Some(a), Some(b)) => (a.clone(), b.clone()),
        _ => return Err("two requests are needed".into()),
    };
    if again.header("idempotent-replayed") != Some("true") || first.str("/id") != again.str("/id") {
        return Err(format!(
            "the retry was not replayed: Idempotent-Replayed {:?}, ids {:?} / {:?}",
            again.header("idempotent-replayed"),
            first.str("/id"),
            again.str("/id")
        ));
    }
    w.note(format!(
        "retry answered with Idempotent-Replayed: true and the same payment {}",
        again.str("/id").unwrap_or("")
    ));
    Ok(())
}

#[then("the different request is rejected as a reuse of the key")]
async fn reuse_rejected(w: &mut PciWorld) -> StepResult {
    let p = payment(w)?.clone();
    if p.status != 400 || p.code() != Some("idempotency_key_reused") {
        return Err(format!(
            "expected 400 idempotency_key_reused while the key is retained, got {} {}",
            p.status, p.json
        ));
    }
    w.note("while retained, the key is remembered: a different request with it → 400 idempotency_key_reused");
    Ok(())
}

#[then("the key is no longer remembered: a different request with it is not refused as a reuse")]
async fn key_forgotten(w: &mut PciWorld) -> StepResult {
    let p = payment(w)?.clone();
    if p.code() == Some("idempotency_key_reused") || p.header("idempotent-replayed").is_some() {
        return Err(format!(
            "PCI DSS 3.2.1 violated: the purged request copy is still used: {} {}",
            p.status, p.json
        ));
    }
    if p.status >= 500 {
        return Err(format!("the request after the purge failed: {} {}", p.status, p.json));
    }
    w.note(format!(
        "after the purge the stored request copy is gone: the different request is no longer refused as a reuse ({} {}); the payment record itself is business data and is kept",
        p.status,
        p.str("/id").unwrap_or("")
    ));
    Ok(())
}

#[then(expr = "the CVC check on the payment was {string}")]
async fn cvc_check(w: &mut PciWorld, expected: String) -> StepResult {
    let p = payment(w)?.clone();
    let got = p.str("/latest_charge/payment_method_details/card/checks/cvc_check");
    if got != Some(expected.as_str()) {
        return Err(format!("cvc_check was {got:?}, expected {expected}: {}", p.json));
    }
    w.note(format!(
        "charge {}: cvc_check = {expected}",
        p.str("/latest_charge/id").unwrap_or("")
    ));
    Ok(())
}

#[then("no CVC was available to check on the payment")]
async fn no_cvc_check(w: &mut PciWorld) -> StepResult {
    let p = payment(w)?.clone();
    match p
        .json
        .pointer("/latest_charge/payment_method_details/card/checks/cvc_check")
    {
        Some(serde_json::Value::Null) | None if p.status == 200 => {
            w.note(format!(
                "second charge {}: cvc_check = null (the CVC was not kept after the first authorization)",
                p.str("/latest_charge/id").unwrap_or("")
            ));
            Ok(())
        }
        other => Err(format!(
            "PCI DSS 3.3.1 violated: the CVC was still available after authorization (cvc_check {other:?}, status {})",
            p.status
        )),
    }
}

#[when("the merchant refunds the payment")]
async fn refunds(w: &mut PciWorld) -> StepResult {
    let id = payment(w)?.str("/id").ok_or("no payment id")?.to_owned();
    let a = w.post("/v1/refunds", &[("payment_intent", &id)], None).await?;
    w.note(format!(
        "POST /v1/refunds payment_intent={id} → {} {}",
        a.status,
        a.str("/status").unwrap_or("")
    ));
    if a.status != 200 || a.str("/status") != Some("succeeded") {
        return Err(format!("the refund failed: {} {}", a.status, a.json));
    }
    Ok(())
}

#[when("the merchant reads back the payment, its charge, the card and the list of cards")]
async fn reads_back(w: &mut PciWorld) -> StepResult {
    let p = payment(w)?.clone();
    // A declined payment comes back as an error carrying the PaymentIntent.
    let pi = p
        .str("/id")
        .or(p.str("/error/payment_intent/id"))
        .ok_or("no payment id")?
        .to_owned();
    let charge = p
        .str("/latest_charge/id")
        .or(p.str("/error/payment_intent/latest_charge"))
        .or(p.str("/error/payment_intent/latest_charge/id"))
        .map(str::to_owned);
    let pm = w.card()?.payment_method.clone();
    let mut paths = vec![format!(
        "/v1/payment_intents/{pi}?expand[]=latest_charge&expand[]=payment_method"
    )];
    if let Some(c) = charge {
        paths.push(format!("/v1/charges/{c}"));
    }
    paths.extend([
        format!("/v1/payment_methods/{pm}"),
        "/v1/payment_methods?type=card&limit=100".to_owned(),
        "/v1/charges?limit=100".to_owned(),
        "/v1/events?limit=100".to_owned(),
    ]);
    for path in paths {
        let a = w.get(&path).await?;
        if a.status != 200 {
            return Err(format!("GET {path} → {} {}", a.status, a.json));
        }
        w.note(format!("GET {path} → 200 ({} bytes)", a.raw.len()));
    }
    Ok(())
}

// ---------------------------------------------------------------- least privilege

#[then("the publishable key cannot create a payment")]
async fn pk_cannot_charge(w: &mut PciWorld) -> StepResult {
    let sys = w.system().await?;
    let pk = sys
        .publishable_key
        .clone()
        .ok_or("this check needs the merchant's publishable key (--publishable-key)")?;
    let c = sys.client.with_key(&pk);
    let a = c
        .post(
            "/v1/payment_intents",
            &[("amount", "1000"), ("currency", "usd"), ("confirm", "true")],
            None,
        )
        .await
        .map_err(|e| e.to_string())?;
    let list = c.get("/v1/charges").await.map_err(|e| e.to_string())?;
    w.saw(a.clone());
    w.saw(list.clone());
    w.note(format!(
        "publishable key: POST /v1/payment_intents → {} {}; GET /v1/charges → {}",
        a.status,
        a.str("/error/message").unwrap_or(""),
        list.status
    ));
    if a.status != 403 || list.status != 403 {
        return Err(format!(
            "PCI DSS 7.2.2 violated: a publishable key reached secret-key operations ({} / {})",
            a.status, list.status
        ));
    }
    Ok(())
}

#[then("the publishable key can still tokenize a card in the browser")]
async fn pk_can_tokenize(w: &mut PciWorld) -> StepResult {
    let sys = w.system().await?;
    let pk = sys.publishable_key.clone().ok_or("no publishable key")?;
    let c = sys.client.with_key(&pk);
    let a = c
        .post("/v1/payment_methods", &card_form("4242424242424242", ""), None)
        .await
        .map_err(|e| e.to_string())?;
    w.saw(a.clone());
    w.note(format!(
        "publishable key: POST /v1/payment_methods → {} (its one intended use)",
        a.status
    ));
    if a.status != 200 {
        return Err(format!("the publishable key cannot tokenize: {} {}", a.status, a.json));
    }
    w.cards.push(PlantedCard {
        pan: "4242424242424242".into(),
        cvc: String::new(),
        payment_method: a.str("/id").unwrap_or("").to_owned(),
        fingerprint: None,
    });
    Ok(())
}

/// Asks the tokenizer to decrypt the card and forward an authorization, as `who` (`api`,
/// `payments`, or anyone else = no service token).
async fn detokenize_as(w: &mut PciWorld, who: &str) -> StepResult {
    use paymentd::wiring::Role;
    let pm = w.card()?.payment_method.clone();
    let sys = w.system().await?;
    let node = sys
        .node
        .as_ref()
        .ok_or("this check acts as an internal service: it needs the embedded target")?;
    let tokenizer_url = node.topology.url(Role::Tokenizer)?.to_owned();
    let account = node.account.clone().ok_or("no account")?;
    let issuer = match who {
        "api" | "payments" => {
            let role = if who == "api" { Role::Api } else { Role::Payments };
            let key = node.service_keys.get(&role).cloned().ok_or("no service key")?;
            Some(std::sync::Arc::new(pay_net::TokenIssuer::new(
                key,
                pay_core::Env::real(role.name()),
                std::time::Duration::from_secs(60),
            )))
        }
        _ => None,
    };
    // The vault token of the card, as the payment service knows it from its record.
    let db = pay_store::Db::new(
        sys.backend.clone().ok_or("no store access")?,
        pay_core::Env::real("pcicheck"),
    );
    let token = match db
        .execute(pay_store::Request::Get {
            table: pay_store::Table::PaymentMethods,
            id: pm.clone(),
        })
        .await
        .map_err(|e| e.to_string())?
    {
        pay_store::Response::Record { record: Some(r) } => r
            .body
            .to_value()
            .map_err(|e| e.to_string())?
            .get("token")
            .and_then(|t| t.as_str())
            .map(str::to_owned)
            .ok_or("payment method has no vault token")?,
        _ => return Err(format!("payment method {pm} not found in the store")),
    };
    let token = pay_core::VaultTokenId::parse(&token).map_err(|e| e.to_string())?;
    let client = pay_proto::tokenizer::TokenizerClient::new(pay_net::ServiceClient::new(
        pay_net::HttpClient::new(std::sync::Arc::new(pay_net::TcpTransport)),
        "tokenizer",
        &tokenizer_url,
        issuer,
    ));
    let req = pay_proto::tokenizer::ForwardAuthorize {
        account,
        token,
        amount: 100,
        currency: pay_core::Currency::USD,
        capture: false,
        idempotency_key: format!("pcicheck-{who}-{pm}"),
    };
    let status = match client.authorize(&req).await {
        Ok(_) => 200,
        Err(pay_net::CallError::Api(e)) => e.status,
        Err(e) => return Err(format!("the tokenizer could not be reached: {e}")),
    };
    w.note(format!(
        "tokenizer POST /v1/forward/authorize (decrypts the card for the acquirer) as {} → {status}",
        match who {
            "api" => "the public API service (signed service token)",
            "payments" => "the payment service (signed service token)",
            _ => "an unauthenticated caller",
        }
    ));
    w.internal_status = Some(status);
    Ok(())
}

#[when("the public API service asks the tokenizer to detokenize the card")]
async fn detok_api(w: &mut PciWorld) -> StepResult {
    detokenize_as(w, "api").await
}

#[when("an unauthenticated caller asks the tokenizer to detokenize the card")]
async fn detok_anon(w: &mut PciWorld) -> StepResult {
    detokenize_as(w, "anonymous").await
}

#[when("the payment service asks the tokenizer to detokenize the card")]
async fn detok_payments(w: &mut PciWorld) -> StepResult {
    detokenize_as(w, "payments").await
}

#[then(expr = "the tokenizer answers {int}")]
async fn tokenizer_answers(w: &mut PciWorld, expected: u16) -> StepResult {
    match w.internal_status {
        Some(s) if s == expected => Ok(()),
        other => Err(format!(
            "PCI DSS 7.2 violated: the tokenizer answered {other:?}, expected {expected}"
        )),
    }
}

// ---------------------------------------------------------------- authentication

#[when("a client calls the API without a key")]
async fn no_key(w: &mut PciWorld) -> StepResult {
    let c = w.system().await?.client.with_key("");
    let a = c.get("/v1/payment_intents").await.map_err(|e| e.to_string())?;
    w.note(format!("GET /v1/payment_intents without a key → {}", a.status));
    w.saw(a);
    Ok(())
}

#[when(expr = "a client calls the API with the wrong secret key {string}")]
async fn wrong_key(w: &mut PciWorld, key: String) -> StepResult {
    let c = w.system().await?.client.with_key(&key);
    let a = c.get("/v1/payment_intents").await.map_err(|e| e.to_string())?;
    w.wrong_keys.push(key.clone());
    w.note(format!(
        "GET /v1/payment_intents with key {} → {}",
        pay_api::keys::mask_key(&key),
        a.status
    ));
    w.saw(a);
    Ok(())
}

#[then(expr = "the API answers {int}")]
async fn api_answers(w: &mut PciWorld, expected: u16) -> StepResult {
    let a = w.last.as_ref().ok_or("no request was made")?;
    if a.status != expected {
        return Err(format!("expected {expected}, got {} {}", a.status, a.json));
    }
    Ok(())
}

#[then(expr = "the error does not echo the key {string}")]
async fn no_echo(w: &mut PciWorld, key: String) -> StepResult {
    let a = w.last.as_ref().ok_or("no request was made")?;
    let text = String::from_utf8_lossy(&a.raw);
    let secret_part = key.get(8..).unwrap_or(&key);
    if text.contains(secret_part) {
        return Err("PCI DSS 8.3 violated: the error message repeats the presented key".into());
    }
    w.note("the error body does not repeat the presented key");
    Ok(())
}

#[when(expr = "a client presents a wrong secret key {int} times")]
async fn wrong_key_times(w: &mut PciWorld, n: u32) -> StepResult {
    let c = w
        .system()
        .await?
        .client
        .with_key("sk_test_pcicheck_wrong_key_0000000000");
    let mut statuses = vec![];
    for _ in 0..n {
        let a = c.get("/v1/payment_intents").await.map_err(|e| e.to_string())?;
        statuses.push(a.status);
        if a.status == 429 {
            let retry = a.header("retry-after").unwrap_or("-").to_owned();
            w.note(format!("attempt {}: 429 (Retry-After: {retry})", statuses.len()));
            w.saw(a);
            break;
        }
    }
    w.note(format!("statuses of the failed attempts: {statuses:?}"));
    w.statuses = statuses;
    Ok(())
}

#[then("the client is locked out before the last attempt")]
async fn locked_out(w: &mut PciWorld) -> StepResult {
    let s = &w.statuses;
    let first_429 = s.iter().position(|x| *x == 429);
    match first_429 {
        Some(i) if s[..i].iter().all(|x| *x == 401) => {
            w.note(format!("locked out after {i} failed authentications"));
            Ok(())
        }
        _ => Err(format!(
            "PCI DSS 8.3.4 violated: repeated authentication failures were not locked out: {s:?}"
        )),
    }
}

#[then("the merchant's valid key still works")]
async fn valid_still_works(w: &mut PciWorld) -> StepResult {
    let a = w.get("/v1/payment_intents?limit=1").await?;
    w.note(format!("the merchant's own key during the lockout → {}", a.status));
    if a.status != 200 {
        return Err(format!(
            "a valid key was refused during another client's lockout: {}",
            a.status
        ));
    }
    Ok(())
}

#[when(expr = "the merchant sends up to {int} requests as fast as possible")]
async fn burst(w: &mut PciWorld, n: u32) -> StepResult {
    let c = w.system().await?.client.clone();
    // Batches of concurrent requests, so a deployment's refill rate cannot keep up with one
    // client's round-trip time; stop at the first batch with a 429.
    const BATCH: u32 = 32;
    let mut statuses = vec![];
    let mut throttled = None;
    while statuses.len() < n as usize && throttled.is_none() {
        let batch = futures::future::join_all((0..BATCH).map(|_| {
            let c = c.clone();
            async move { c.get("/v1/payment_intents?limit=1").await }
        }))
        .await;
        for a in batch {
            let a = a.map_err(|e| e.to_string())?;
            statuses.push(a.status);
            if a.status == 429 && throttled.is_none() {
                throttled = Some(a);
            }
        }
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    w.note(format!(
        "{} requests sent in concurrent batches of {BATCH}: {ok} answered 200, {} answered 429",
        statuses.len(),
        statuses.iter().filter(|s| **s == 429).count()
    ));
    if let Some(a) = throttled {
        w.saw(a);
    } else if let Some(s) = statuses.last() {
        w.note(format!("last status {s}"));
        w.last = None;
    }
    w.statuses = statuses;
    Ok(())
}

#[then("the merchant is throttled with a Retry-After header")]
async fn throttled(w: &mut PciWorld) -> StepResult {
    let Some(a) = w.last.clone().filter(|a| a.status == 429) else {
        return Err(format!(
            "PCI DSS 8.3.4 violated: no throttling after {} requests",
            w.statuses.len()
        ));
    };
    if a.header("retry-after").is_none() {
        return Err("the 429 answer has no Retry-After header".into());
    }
    w.note(format!(
        "429 {} with Retry-After: {}",
        a.code().unwrap_or(""),
        a.header("retry-after").unwrap_or("")
    ));
    Ok(())
}

// ---------------------------------------------------------------- hostile requests

#[when(expr = "an attacker sends {string} as the {string} parameter of a payment")]
async fn hostile_param(w: &mut PciWorld, payload: String, param: String) -> StepResult {
    let mut form: Vec<(&str, &str)> = vec![("amount", "1000"), ("currency", "usd")];
    form.retain(|(k, _)| *k != param.as_str());
    form.push((param.as_str(), payload.as_str()));
    let a = w.post("/v1/payment_intents", &form, None).await?;
    w.note(format!(
        "POST /v1/payment_intents with {param}={payload:?} → {} {}",
        a.status,
        a.code().unwrap_or("")
    ));
    w.payload = Some(payload);
    Ok(())
}

#[when(expr = "an attacker sends {string} in the query string of a payment search")]
async fn hostile_query(w: &mut PciWorld, payload: String) -> StepResult {
    let q: String = form_urlencoded::byte_serialize(payload.as_bytes()).collect();
    let a = w.get(&format!("/v1/payment_intents?customer={q}")).await?;
    w.note(format!(
        "GET /v1/payment_intents?customer={payload:?} → {} {}",
        a.status,
        a.code().unwrap_or("")
    ));
    w.payload = Some(payload);
    Ok(())
}

#[when(expr = "an attacker requests the path {string}")]
async fn hostile_path(w: &mut PciWorld, path: String) -> StepResult {
    let a = w.get(&path).await?;
    w.note(format!("GET {path} → {}", a.status));
    w.payload = Some(path);
    Ok(())
}

#[then("the request is refused with a client error, not a server error")]
async fn client_error(w: &mut PciWorld) -> StepResult {
    let a = w.last.clone().ok_or("no request")?;
    if !(400..500).contains(&a.status) {
        return Err(format!(
            "PCI DSS 6.2.4: hostile input was not refused with a 4xx: {} {}",
            a.status, a.json
        ));
    }
    let ct = a.header("content-type").unwrap_or("");
    if !ct.starts_with("application/json") {
        return Err(format!(
            "the refusal is not JSON (content-type {ct:?}): it could be rendered as HTML"
        ));
    }
    Ok(())
}

#[then("the request is blocked by the web application firewall")]
async fn waf_blocked(w: &mut PciWorld) -> StepResult {
    let a = w.last.clone().ok_or("no request")?;
    if a.status != 403 {
        return Err(format!(
            "PCI DSS 6.4.1/6.4.2: the attack was not blocked (status {}, expected 403 from the WAF)",
            a.status
        ));
    }
    let text = String::from_utf8_lossy(&a.raw);
    if let Some(p) = &w.payload {
        if text.contains(p.as_str()) {
            return Err("the block page reflects the attack payload".into());
        }
    }
    w.note(format!("blocked: 403 {}", text.chars().take(160).collect::<String>()));
    Ok(())
}
