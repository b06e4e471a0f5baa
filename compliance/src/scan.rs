//! Scanners for cardholder data in text: stored records, log lines and API responses.
//!
//! These are the detectors behind the "no PAN" and "no CVC" controls, so they err on the side
//! of finding things: a PAN is found as its plain digits, with spaces or dashes between groups,
//! as hex or base64 of its ASCII digits, and any Luhn-valid 13–19 digit run is reported as a
//! possible PAN. A CVC is found as a field that names it (`cvc`, `cvv`, `card[cvc]`, …) carrying
//! a value, or as the exact CVC value quoted as a JSON string.

use base64::Engine;

/// One finding: where, and a masked excerpt (a finding never repeats the full secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Where the text came from (`table.column`, `log line 12`, `GET /v1/…`).
    pub location: String,
    /// What was found, masked.
    pub what: String,
}

/// The encodings of `pan` a careless program could store or log.
pub fn pan_encodings(pan: &str) -> Vec<(String, &'static str)> {
    let mut v = vec![(pan.to_owned(), "plain digits")];
    if pan.len() >= 16 {
        let groups: Vec<&str> = pan
            .as_bytes()
            .chunks(4)
            .filter_map(|c| std::str::from_utf8(c).ok())
            .collect();
        v.push((groups.join(" "), "digits in groups with spaces"));
        v.push((groups.join("-"), "digits in groups with dashes"));
    }
    v.push((hex::encode(pan.as_bytes()), "hex of the digits"));
    v.push((
        base64::engine::general_purpose::STANDARD.encode(pan.as_bytes()),
        "base64 of the digits",
    ));
    v
}

/// Masks a PAN to BIN + last four for evidence text.
pub fn mask(pan: &str) -> String {
    if pan.len() < 10 {
        return "*".repeat(pan.len());
    }
    format!("{}{}{}", &pan[..6], "*".repeat(pan.len() - 10), &pan[pan.len() - 4..])
}

/// Finds `pan` (in any of its [`pan_encodings`]) in `text`.
pub fn find_pan(location: &str, text: &str, pan: &str) -> Vec<Finding> {
    let mut out = vec![];
    if pan.is_empty() {
        return out;
    }
    for (needle, how) in pan_encodings(pan) {
        if text.contains(&needle) {
            out.push(Finding {
                location: location.to_owned(),
                what: format!("card number {} as {how}", mask(pan)),
            });
        }
    }
    out
}

/// Finds any run of 13–19 digits that passes the Luhn check and is not masked (a possible PAN
/// that the scenario did not plant). Runs longer than 19 digits (ids, hashes) are ignored.
pub fn find_pan_like(location: &str, text: &str) -> Vec<Finding> {
    let bytes = text.as_bytes();
    let mut out = vec![];
    for r in pay_core::card::digit_runs(bytes) {
        let (start, end) = (r.start, r.end);
        let run = &text[start..end];
        // A digit run glued to letters is part of an identifier (pm_…, hex), not a card number.
        let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        let glued = (start > 0 && ident(bytes[start - 1])) || (end < bytes.len() && ident(bytes[end]));
        if (13..=19).contains(&run.len()) && !glued && pay_core::card::luhn_valid(run) && looks_like_card(run) {
            out.push(Finding {
                location: location.to_owned(),
                what: format!("a Luhn-valid {}-digit number {}", run.len(), mask(run)),
            });
        }
    }
    out
}

/// Whether a digit run has a card network's leading digits (cuts false positives on
/// timestamps and counters, which never start with 2–6 and pass Luhn by chance only).
fn looks_like_card(run: &str) -> bool {
    !matches!(
        pay_core::card::CardBrand::detect(run),
        pay_core::card::CardBrand::Unknown
    )
}

/// Field names that hold a card verification code.
const CVC_FIELDS: &[&str] = &[
    "cvc",
    "cvv",
    "cvv2",
    "cvc2",
    "cid",
    "csc",
    "card_code",
    "security_code",
    "card[cvc]",
    "card_cvc",
    "cvn",
];

/// Finds a CVC in a piece of text: a JSON field or form parameter named like a CVC that carries
/// a value, or the exact `cvc` quoted as a JSON string (`"739"`).
pub fn find_cvc(location: &str, text: &str, cvc: &str) -> Vec<Finding> {
    let mut out = vec![];
    let lower = text.to_ascii_lowercase();
    for field in CVC_FIELDS {
        for quoted in [format!("\"{field}\":"), format!("\"{field}\" :")] {
            if let Some(pos) = lower.find(&quoted) {
                let rest = lower[pos + quoted.len()..].trim_start();
                // `"cvc": null` is a field declared empty, not a stored code.
                if !rest.starts_with("null") {
                    out.push(Finding {
                        location: location.to_owned(),
                        what: format!("a field named `{field}` with a value"),
                    });
                }
            }
        }
        let form = format!("{field}=");
        if let Some(pos) = lower.find(&form) {
            let before_ok =
                pos == 0 || !lower.as_bytes()[pos - 1].is_ascii_alphanumeric() && lower.as_bytes()[pos - 1] != b'_';
            if before_ok {
                out.push(Finding {
                    location: location.to_owned(),
                    what: format!("a parameter `{field}=`"),
                });
            }
        }
    }
    if !cvc.is_empty() && text.contains(&format!("\"{cvc}\"")) {
        out.push(Finding {
            location: location.to_owned(),
            what: "the CVC value as a quoted string".to_owned(),
        });
    }
    out
}

/// Scans log text line by line for the PANs (and Luhn-valid card-like runs) and the CVCs;
/// returns (lines scanned, findings).
pub fn scan_log(text: &str, pans: &[String], cvcs: &[String]) -> (usize, Vec<Finding>) {
    let mut findings = vec![];
    let mut lines = 0;
    for (n, line) in text.lines().enumerate() {
        lines += 1;
        let loc = format!("log line {}", n + 1);
        for pan in pans {
            findings.extend(find_pan(&loc, line, pan));
        }
        findings.extend(find_pan_like(&loc, line));
        for cvc in cvcs {
            findings.extend(find_cvc(&loc, line, cvc));
        }
    }
    findings.dedup();
    (lines, findings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_planted_pan_is_found_in_every_encoding() {
        let pan = "4242424242424242";
        for (enc, how) in pan_encodings(pan) {
            let text = format!("{{\"msg\":\"debug {enc} end\"}}");
            assert!(!find_pan("x", &text, pan).is_empty(), "{how}");
        }
        assert!(find_pan("x", "424242******4242", pan).is_empty());
        assert_eq!(mask(pan), "424242******4242");
    }

    #[test]
    fn luhn_valid_runs_are_found_but_ids_and_masks_are_not() {
        assert_eq!(find_pan_like("x", "charge 5555555555554444 ok").len(), 1);
        assert!(find_pan_like("x", "pm_5555555555554444").is_empty(), "glued to an id");
        assert!(find_pan_like("x", "555555******4444").is_empty());
        assert!(
            find_pan_like("x", "ts 1764534000123").is_empty(),
            "not a card prefix or not Luhn"
        );
        assert!(find_pan_like("x", "12345678901234567890123").is_empty(), "too long");
    }

    #[test]
    fn the_log_scanner_fails_on_a_planted_line_and_passes_a_clean_log() {
        let pans = vec!["4242424242424242".to_owned()];
        let cvcs = vec!["739".to_owned()];
        let clean =
            "{\"level\":\"INFO\",\"fields\":{\"message\":\"tokenized\",\"last4\":\"4242\",\"bin\":\"424242\"}}\n\
                     {\"level\":\"INFO\",\"fields\":{\"message\":\"request\",\"status\":200}}\n";
        let (lines, f) = scan_log(clean, &pans, &cvcs);
        assert_eq!((lines, f.len()), (2, 0), "{f:?}");
        let planted =
            format!("{clean}{{\"level\":\"DEBUG\",\"fields\":{{\"message\":\"card 4242424242424242 cvc=739\"}}}}\n");
        let (lines, f) = scan_log(&planted, &pans, &cvcs);
        assert_eq!(lines, 3);
        assert!(
            f.iter()
                .any(|x| x.location == "log line 3" && x.what.contains("plain digits")),
            "{f:?}"
        );
        assert!(f.iter().any(|x| x.what.contains("cvc=")), "{f:?}");
        assert!(
            f.iter().all(|x| !x.what.contains("4242424242424242")),
            "findings never repeat the PAN"
        );
    }

    #[test]
    fn cvc_fields_are_found_but_check_results_are_not() {
        assert!(!find_cvc("x", "{\"card\":{\"cvc\":\"739\"}}", "739").is_empty());
        assert!(!find_cvc("x", "type=card&card[cvc]=739", "739").is_empty());
        assert!(find_cvc("x", "{\"checks\":{\"cvc_check\":\"pass\"}}", "739").is_empty());
        assert!(find_cvc("x", "{\"amount\":7390}", "739").is_empty());
        assert!(find_cvc("x", "{\"cvc\": null}", "739").is_empty());
    }
}
