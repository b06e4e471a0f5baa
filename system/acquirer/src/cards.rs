//! How the simulated network answers for a card: Stripe's documented test card numbers, and
//! approval for any other valid card.

use pay_core::card::luhn_valid;
use pay_core::Timestamp;
use pay_proto::acquirer::Decline;
use pay_proto::objects::CheckResult;

/// The network's decision on an authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Declined with this reason, or approved when `None`.
    pub decline: Option<Decline>,
    /// CVC verification.
    pub cvc_check: Option<CheckResult>,
}

fn decline(code: &str, decline_code: &str, message: &str) -> Option<Decline> {
    Some(Decline {
        code: code.to_owned(),
        decline_code: decline_code.to_owned(),
        message: message.to_owned(),
    })
}

/// Decides an authorization for a card number (digits only), expiry and optional CVC at `now`.
pub fn decide(number: &str, exp_month: u32, exp_year: i32, cvc: Option<&str>, now: Timestamp) -> Decision {
    let cvc_check = match cvc {
        None => None,
        Some(_) if number == "4000000000000127" => Some(CheckResult::Fail),
        Some(c) if c.len() < 3 || c.len() > 4 || !c.bytes().all(|b| b.is_ascii_digit()) => Some(CheckResult::Fail),
        Some(_) => Some(CheckResult::Pass),
    };
    let (year, month) = now.year_month();
    let expired = exp_year < year || (exp_year == year && exp_month < month) || !(1..=12).contains(&exp_month);
    let decline = if !luhn_valid(number) || !(12..=19).contains(&number.len()) {
        decline("incorrect_number", "incorrect_number", "Your card number is incorrect.")
    } else if expired || number == "4000000000000069" {
        decline("expired_card", "expired_card", "Your card has expired.")
    } else if number == "4000000000000127" || cvc_check == Some(CheckResult::Fail) {
        decline(
            "incorrect_cvc",
            "incorrect_cvc",
            "Your card's security code is incorrect.",
        )
    } else {
        match number {
            "4000000000000002" | "4000000000000341" => {
                decline("card_declined", "generic_decline", "Your card was declined.")
            }
            "4000000000009995" => decline(
                "card_declined",
                "insufficient_funds",
                "Your card has insufficient funds.",
            ),
            "4000000000009987" => decline("card_declined", "lost_card", "Your card was declined."),
            "4000000000009979" => decline("card_declined", "stolen_card", "Your card was declined."),
            "4000000000000119" => decline(
                "processing_error",
                "processing_error",
                "An error occurred while processing your card. Try again in a little bit.",
            ),
            "4000000000006975" => decline(
                "card_declined",
                "card_velocity_exceeded",
                "Your card was declined for making repeated attempts too frequently or exceeding its amount limit.",
            ),
            _ => None,
        }
    };
    Decision { decline, cvc_check }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        Timestamp::from_secs(1_764_064_800) // 2025-11-25
    }

    fn code(n: &str) -> Option<String> {
        decide(n, 12, 2030, Some("123"), now()).decline.map(|d| d.decline_code)
    }

    #[test]
    fn stripe_test_cards() {
        assert_eq!(code("4242424242424242"), None);
        assert_eq!(code("5555555555554444"), None);
        assert_eq!(code("4000000000000002").as_deref(), Some("generic_decline"));
        assert_eq!(code("4000000000009995").as_deref(), Some("insufficient_funds"));
        assert_eq!(code("4000000000009987").as_deref(), Some("lost_card"));
        assert_eq!(code("4000000000009979").as_deref(), Some("stolen_card"));
        assert_eq!(code("4000000000000069").as_deref(), Some("expired_card"));
        assert_eq!(code("4000000000000127").as_deref(), Some("incorrect_cvc"));
        assert_eq!(code("4000000000000119").as_deref(), Some("processing_error"));
        assert_eq!(code("4000000000006975").as_deref(), Some("card_velocity_exceeded"));
        assert_eq!(code("4000000000000341").as_deref(), Some("generic_decline"));
        assert_eq!(
            decide("4000000000000002", 12, 2030, None, now()).decline.unwrap().code,
            "card_declined"
        );
    }

    #[test]
    fn expiry_and_cvc_checks() {
        assert_eq!(
            decide("4242424242424242", 10, 2025, None, now()).decline.unwrap().code,
            "expired_card"
        );
        assert!(decide("4242424242424242", 11, 2025, None, now()).decline.is_none());
        assert_eq!(decide("4242424242424242", 12, 2030, None, now()).cvc_check, None);
        assert_eq!(
            decide("4242424242424242", 12, 2030, Some("123"), now()).cvc_check,
            Some(CheckResult::Pass)
        );
        assert_eq!(
            decide("4000000000000127", 12, 2030, Some("123"), now()).cvc_check,
            Some(CheckResult::Fail)
        );
        assert_eq!(
            decide("4242424242424241", 12, 2030, None, now()).decline.unwrap().code,
            "incorrect_number"
        );
    }
}
