//! Masking of anything that looks like a card number in free text (log lines, error texts).
//!
//! This is the safety net behind the rule that no code logs a PAN: a run of 13–19 digits,
//! optionally grouped by single spaces or dashes, that passes the Luhn check is replaced by its
//! first six and last four digits around asterisks, even if some code path logged it by
//! mistake. Longer digit runs that contain such a number are masked whole.

use crate::card::luhn_valid_bytes;
use std::borrow::Cow;

/// Returns `text` with every PAN-like digit run masked; borrows when nothing changed.
pub fn redact_pans(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    // Fast path: fewer than 13 digits in total cannot hold a PAN.
    if bytes.iter().filter(|b| b.is_ascii_digit()).count() < 13 {
        return Cow::Borrowed(text);
    }
    let mut out: Option<String> = None;
    let mut copied_to = 0;
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        // A candidate run: digits, allowing one space or dash between digit groups.
        let start = i;
        let mut digits: Vec<u8> = Vec::with_capacity(24);
        let mut end = i;
        let mut j = i;
        while j < bytes.len() {
            let b = bytes[j];
            if b.is_ascii_digit() {
                digits.push(b);
                j += 1;
                end = j;
            } else if (b == b' ' || b == b'-') && j + 1 < bytes.len() && bytes[j + 1].is_ascii_digit() && j > start {
                j += 1;
            } else {
                break;
            }
        }
        if looks_like_pan(&digits) {
            let buf = out.get_or_insert_with(|| String::with_capacity(text.len()));
            buf.push_str(&text[copied_to..start]);
            buf.push_str(&mask(&digits));
            copied_to = end;
        }
        i = end.max(i + 1);
    }
    match out {
        Some(mut buf) => {
            buf.push_str(&text[copied_to..]);
            Cow::Owned(buf)
        }
        None => Cow::Borrowed(text),
    }
}

fn looks_like_pan(digits: &[u8]) -> bool {
    let n = digits.len();
    if n < 13 {
        return false;
    }
    if n <= 19 {
        return luhn_valid_bytes(digits);
    }
    // A long run may embed a PAN: check every window that starts with a card-network digit.
    (0..=n - 13).any(|s| {
        matches!(digits[s], b'2'..=b'6') && (13..=19).any(|len| s + len <= n && luhn_valid_bytes(&digits[s..s + len]))
    })
}

fn mask(digits: &[u8]) -> String {
    let n = digits.len();
    if n > 19 {
        return "*".repeat(n.min(32));
    }
    let first = String::from_utf8_lossy(&digits[..6]);
    let last = String::from_utf8_lossy(&digits[n - 4..]);
    format!("{first}{}{last}", "*".repeat(n - 10))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_plain_and_grouped_pans() {
        assert_eq!(redact_pans("card 4242424242424242 ok"), "card 424242******4242 ok");
        assert_eq!(redact_pans("4242 4242 4242 4242"), "424242******4242");
        assert_eq!(redact_pans("x=4000-0000-0000-0002;"), "x=400000******0002;");
        assert_eq!(
            redact_pans("{\"n\":\"378282246310005\"}"),
            "{\"n\":\"378282*****0005\"}"
        );
    }

    #[test]
    fn leaves_other_numbers_alone() {
        let s = "amount=1000 ts=1764064800123 order 4242424242424241";
        assert!(matches!(redact_pans(s), Cow::Borrowed(_)));
        assert_eq!(redact_pans("phone 555-1234"), "phone 555-1234");
    }

    #[test]
    fn masks_pan_hidden_in_long_run() {
        let s = "id 99994242424242424242999";
        let r = redact_pans(s);
        assert!(!r.contains("4242424242424242"), "{r}");
    }

    #[test]
    fn never_panics_on_odd_text() {
        for s in [
            "",
            "-",
            " 1",
            "1 ",
            "é4242424242424242é",
            "4242424242424242-",
            "- 4242 4242 4242 4242 -",
        ] {
            let r = redact_pans(s);
            assert!(!r.contains("4242424242424242"));
        }
    }
}
