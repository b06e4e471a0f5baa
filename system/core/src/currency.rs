//! ISO 4217 currencies as Stripe settles them.
//!
//! `exponent` is the number of decimal places an API `amount` carries for the currency, which is
//! what Stripe calls the "minor unit": 2 for USD (cents), 0 for the zero-decimal currencies such
//! as JPY and KRW, 3 for BHD, JOD, KWD, OMR and TND. Where Stripe's API exponent differs from the
//! ISO 4217 one (ISK, HUF, TWD, UGX are two-decimal in Stripe's API although ISO or the issuing
//! banks treat them as whole units; MGA is zero-decimal at Stripe) `iso_exponent` keeps the ISO
//! value and `settlement_divisor` says what a charged amount must be a multiple of.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// One currency: its lowercase code, as Stripe writes it, and how its amounts are expressed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency {
    index: u16,
}

/// The static facts about a currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CurrencyInfo {
    /// Lowercase ISO 4217 alphabetic code (`"usd"`).
    pub code: &'static str,
    /// ISO 4217 numeric code.
    pub numeric: u16,
    /// English name.
    pub name: &'static str,
    /// Decimal places of an API amount (Stripe's minor unit).
    pub exponent: u8,
    /// Decimal places per ISO 4217.
    pub iso_exponent: u8,
    /// A charged amount must be a multiple of this (100 for ISK/HUF/TWD/UGX, 10 for the
    /// three-decimal currencies, 1 otherwise).
    pub settlement_divisor: u32,
}

macro_rules! currencies {
    ($( $code:literal, $num:literal, $exp:literal, $iso:literal, $div:literal, $name:literal; )*) => {
        const TABLE: &[CurrencyInfo] = &[
            $( CurrencyInfo { code: $code, numeric: $num, name: $name, exponent: $exp, iso_exponent: $iso, settlement_divisor: $div }, )*
        ];
    };
}

// code, numeric, Stripe exponent, ISO exponent, settlement divisor, name.
// Sorted by code: `Currency::parse` binary-searches this table.
currencies! {
    "aed", 784, 2, 2, 1, "UAE Dirham";
    "afn", 971, 2, 2, 1, "Afghan Afghani";
    "all", 8, 2, 2, 1, "Albanian Lek";
    "amd", 51, 2, 2, 1, "Armenian Dram";
    "ang", 532, 2, 2, 1, "Netherlands Antillean Guilder";
    "aoa", 973, 2, 2, 1, "Angolan Kwanza";
    "ars", 32, 2, 2, 1, "Argentine Peso";
    "aud", 36, 2, 2, 1, "Australian Dollar";
    "awg", 533, 2, 2, 1, "Aruban Florin";
    "azn", 944, 2, 2, 1, "Azerbaijani Manat";
    "bam", 977, 2, 2, 1, "Bosnia-Herzegovina Convertible Mark";
    "bbd", 52, 2, 2, 1, "Barbados Dollar";
    "bdt", 50, 2, 2, 1, "Bangladeshi Taka";
    "bgn", 975, 2, 2, 1, "Bulgarian Lev";
    "bhd", 48, 3, 3, 10, "Bahraini Dinar";
    "bif", 108, 0, 0, 1, "Burundian Franc";
    "bmd", 60, 2, 2, 1, "Bermudian Dollar";
    "bnd", 96, 2, 2, 1, "Brunei Dollar";
    "bob", 68, 2, 2, 1, "Bolivian Boliviano";
    "brl", 986, 2, 2, 1, "Brazilian Real";
    "bsd", 44, 2, 2, 1, "Bahamian Dollar";
    "bwp", 72, 2, 2, 1, "Botswana Pula";
    "byn", 933, 2, 2, 1, "Belarusian Ruble";
    "bzd", 84, 2, 2, 1, "Belize Dollar";
    "cad", 124, 2, 2, 1, "Canadian Dollar";
    "cdf", 976, 2, 2, 1, "Congolese Franc";
    "chf", 756, 2, 2, 1, "Swiss Franc";
    "clp", 152, 0, 0, 1, "Chilean Peso";
    "cny", 156, 2, 2, 1, "Chinese Yuan";
    "cop", 170, 2, 2, 1, "Colombian Peso";
    "crc", 188, 2, 2, 1, "Costa Rican Colon";
    "cve", 132, 2, 2, 1, "Cape Verdean Escudo";
    "czk", 203, 2, 2, 1, "Czech Koruna";
    "djf", 262, 0, 0, 1, "Djiboutian Franc";
    "dkk", 208, 2, 2, 1, "Danish Krone";
    "dop", 214, 2, 2, 1, "Dominican Peso";
    "dzd", 12, 2, 2, 1, "Algerian Dinar";
    "egp", 818, 2, 2, 1, "Egyptian Pound";
    "etb", 230, 2, 2, 1, "Ethiopian Birr";
    "eur", 978, 2, 2, 1, "Euro";
    "fjd", 242, 2, 2, 1, "Fiji Dollar";
    "fkp", 238, 2, 2, 1, "Falkland Islands Pound";
    "gbp", 826, 2, 2, 1, "Pound Sterling";
    "gel", 981, 2, 2, 1, "Georgian Lari";
    "ghs", 936, 2, 2, 1, "Ghanaian Cedi";
    "gip", 292, 2, 2, 1, "Gibraltar Pound";
    "gmd", 270, 2, 2, 1, "Gambian Dalasi";
    "gnf", 324, 0, 0, 1, "Guinean Franc";
    "gtq", 320, 2, 2, 1, "Guatemalan Quetzal";
    "gyd", 328, 2, 2, 1, "Guyanese Dollar";
    "hkd", 344, 2, 2, 1, "Hong Kong Dollar";
    "hnl", 340, 2, 2, 1, "Honduran Lempira";
    "hrk", 191, 2, 2, 1, "Croatian Kuna";
    "htg", 332, 2, 2, 1, "Haitian Gourde";
    "huf", 348, 2, 2, 100, "Hungarian Forint";
    "idr", 360, 2, 2, 1, "Indonesian Rupiah";
    "ils", 376, 2, 2, 1, "Israeli New Shekel";
    "inr", 356, 2, 2, 1, "Indian Rupee";
    "isk", 352, 2, 0, 100, "Icelandic Krona";
    "jmd", 388, 2, 2, 1, "Jamaican Dollar";
    "jod", 400, 3, 3, 10, "Jordanian Dinar";
    "jpy", 392, 0, 0, 1, "Japanese Yen";
    "kes", 404, 2, 2, 1, "Kenyan Shilling";
    "kgs", 417, 2, 2, 1, "Kyrgyzstani Som";
    "khr", 116, 2, 2, 1, "Cambodian Riel";
    "kmf", 174, 0, 0, 1, "Comorian Franc";
    "krw", 410, 0, 0, 1, "South Korean Won";
    "kwd", 414, 3, 3, 10, "Kuwaiti Dinar";
    "kyd", 136, 2, 2, 1, "Cayman Islands Dollar";
    "kzt", 398, 2, 2, 1, "Kazakhstani Tenge";
    "lak", 418, 2, 2, 1, "Lao Kip";
    "lbp", 422, 2, 2, 1, "Lebanese Pound";
    "lkr", 144, 2, 2, 1, "Sri Lankan Rupee";
    "lrd", 430, 2, 2, 1, "Liberian Dollar";
    "lsl", 426, 2, 2, 1, "Lesotho Loti";
    "mad", 504, 2, 2, 1, "Moroccan Dirham";
    "mdl", 498, 2, 2, 1, "Moldovan Leu";
    "mga", 969, 0, 2, 1, "Malagasy Ariary";
    "mkd", 807, 2, 2, 1, "Macedonian Denar";
    "mmk", 104, 2, 2, 1, "Myanmar Kyat";
    "mnt", 496, 2, 2, 1, "Mongolian Tugrik";
    "mop", 446, 2, 2, 1, "Macanese Pataca";
    "mro", 478, 2, 2, 1, "Mauritanian Ouguiya (pre-2018)";
    "mur", 480, 2, 2, 1, "Mauritian Rupee";
    "mvr", 462, 2, 2, 1, "Maldivian Rufiyaa";
    "mwk", 454, 2, 2, 1, "Malawian Kwacha";
    "mxn", 484, 2, 2, 1, "Mexican Peso";
    "myr", 458, 2, 2, 1, "Malaysian Ringgit";
    "mzn", 943, 2, 2, 1, "Mozambican Metical";
    "nad", 516, 2, 2, 1, "Namibian Dollar";
    "ngn", 566, 2, 2, 1, "Nigerian Naira";
    "nio", 558, 2, 2, 1, "Nicaraguan Cordoba";
    "nok", 578, 2, 2, 1, "Norwegian Krone";
    "npr", 524, 2, 2, 1, "Nepalese Rupee";
    "nzd", 554, 2, 2, 1, "New Zealand Dollar";
    "omr", 512, 3, 3, 10, "Omani Rial";
    "pab", 590, 2, 2, 1, "Panamanian Balboa";
    "pen", 604, 2, 2, 1, "Peruvian Sol";
    "pgk", 598, 2, 2, 1, "Papua New Guinean Kina";
    "php", 608, 2, 2, 1, "Philippine Peso";
    "pkr", 586, 2, 2, 1, "Pakistani Rupee";
    "pln", 985, 2, 2, 1, "Polish Zloty";
    "pyg", 600, 0, 0, 1, "Paraguayan Guarani";
    "qar", 634, 2, 2, 1, "Qatari Riyal";
    "ron", 946, 2, 2, 1, "Romanian Leu";
    "rsd", 941, 2, 2, 1, "Serbian Dinar";
    "rub", 643, 2, 2, 1, "Russian Ruble";
    "rwf", 646, 0, 0, 1, "Rwandan Franc";
    "sar", 682, 2, 2, 1, "Saudi Riyal";
    "sbd", 90, 2, 2, 1, "Solomon Islands Dollar";
    "scr", 690, 2, 2, 1, "Seychellois Rupee";
    "sek", 752, 2, 2, 1, "Swedish Krona";
    "sgd", 702, 2, 2, 1, "Singapore Dollar";
    "shp", 654, 2, 2, 1, "Saint Helena Pound";
    "sle", 925, 2, 2, 1, "Sierra Leonean Leone";
    "sll", 694, 2, 2, 1, "Sierra Leonean Leone (pre-2022)";
    "sos", 706, 2, 2, 1, "Somali Shilling";
    "srd", 968, 2, 2, 1, "Surinamese Dollar";
    "std", 678, 2, 2, 1, "Sao Tome and Principe Dobra (pre-2018)";
    "szl", 748, 2, 2, 1, "Swazi Lilangeni";
    "thb", 764, 2, 2, 1, "Thai Baht";
    "tjs", 972, 2, 2, 1, "Tajikistani Somoni";
    "tnd", 788, 3, 3, 10, "Tunisian Dinar";
    "top", 776, 2, 2, 1, "Tongan Pa'anga";
    "try", 949, 2, 2, 1, "Turkish Lira";
    "ttd", 780, 2, 2, 1, "Trinidad and Tobago Dollar";
    "twd", 901, 2, 2, 100, "New Taiwan Dollar";
    "tzs", 834, 2, 2, 1, "Tanzanian Shilling";
    "uah", 980, 2, 2, 1, "Ukrainian Hryvnia";
    "ugx", 800, 2, 0, 100, "Ugandan Shilling";
    "usd", 840, 2, 2, 1, "US Dollar";
    "uyu", 858, 2, 2, 1, "Uruguayan Peso";
    "uzs", 860, 2, 2, 1, "Uzbekistani Som";
    "vnd", 704, 0, 0, 1, "Vietnamese Dong";
    "vuv", 548, 0, 0, 1, "Vanuatu Vatu";
    "wst", 882, 2, 2, 1, "Samoan Tala";
    "xaf", 950, 0, 0, 1, "Central African CFA Franc";
    "xcd", 951, 2, 2, 1, "East Caribbean Dollar";
    "xof", 952, 0, 0, 1, "West African CFA Franc";
    "xpf", 953, 0, 0, 1, "CFP Franc";
    "yer", 886, 2, 2, 1, "Yemeni Rial";
    "zar", 710, 2, 2, 1, "South African Rand";
    "zmw", 967, 2, 2, 1, "Zambian Kwacha";
}

/// Why a currency code was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CurrencyError {
    /// The code is not three ASCII letters.
    #[error("invalid currency code `{0}`: expected a three-letter ISO 4217 code such as `usd`")]
    Malformed(String),
    /// Three letters, but not a currency this system settles.
    #[error("unsupported currency `{0}`: see the list of supported currencies")]
    Unsupported(String),
}

impl Currency {
    /// US dollars, the most common currency in tests and examples.
    pub const USD: Currency = Currency { index: usd_index() };

    /// Looks up a currency by its ISO 4217 alphabetic code, case-insensitively.
    pub fn parse(code: &str) -> Result<Currency, CurrencyError> {
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_alphabetic()) {
            // Do not echo arbitrarily long user input back.
            let shown: String = code.chars().take(16).collect();
            return Err(CurrencyError::Malformed(shown));
        }
        let lower = code.to_ascii_lowercase();
        TABLE
            .binary_search_by(|c| c.code.cmp(lower.as_str()))
            .map(|index| Currency { index: index as u16 })
            .map_err(|_| CurrencyError::Unsupported(lower))
    }

    /// All currencies, sorted by code.
    pub fn all() -> impl Iterator<Item = Currency> {
        (0..TABLE.len()).map(|index| Currency { index: index as u16 })
    }

    /// The static facts about this currency.
    pub fn info(self) -> &'static CurrencyInfo {
        &TABLE[self.index as usize]
    }

    /// Lowercase code, as in Stripe's API.
    pub fn code(self) -> &'static str {
        self.info().code
    }

    /// Decimal places of an API amount in this currency.
    pub fn exponent(self) -> u8 {
        self.info().exponent
    }

    /// True for Stripe's zero-decimal currencies (JPY, KRW, ...).
    pub fn is_zero_decimal(self) -> bool {
        self.exponent() == 0
    }

    /// The number of minor units in one major unit (100 for USD, 1 for JPY, 1000 for KWD).
    pub fn minor_per_major(self) -> i64 {
        10_i64.pow(u32::from(self.exponent()))
    }
}

const fn usd_index() -> u16 {
    let mut i = 0;
    while i < TABLE.len() {
        let c = TABLE[i].code.as_bytes();
        if c[0] == b'u' && c[1] == b's' && c[2] == b'd' {
            return i as u16;
        }
        i += 1;
    }
    panic!("usd missing from the currency table");
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl std::str::FromStr for Currency {
    type Err = CurrencyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Currency::parse(s)
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Currency::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_unique_and_large_enough() {
        for pair in TABLE.windows(2) {
            assert!(pair[0].code < pair[1].code, "{} before {}", pair[0].code, pair[1].code);
        }
        assert!(TABLE.len() >= 135, "only {} currencies", TABLE.len());
    }

    #[test]
    fn exponents_follow_stripe() {
        for code in ["jpy", "krw", "vnd", "clp", "xof", "bif", "mga"] {
            assert_eq!(Currency::parse(code).unwrap().exponent(), 0, "{code}");
        }
        for code in ["bhd", "kwd", "jod", "omr", "tnd"] {
            let c = Currency::parse(code).unwrap();
            assert_eq!(c.exponent(), 3, "{code}");
            assert_eq!(c.info().settlement_divisor, 10);
        }
        assert_eq!(Currency::parse("isk").unwrap().info().iso_exponent, 0);
        assert_eq!(Currency::USD.code(), "usd");
        assert_eq!(Currency::USD.minor_per_major(), 100);
    }

    #[test]
    fn parse_is_case_insensitive_and_errors_are_precise() {
        assert_eq!(Currency::parse("EUR").unwrap().code(), "eur");
        assert!(matches!(Currency::parse("xyz"), Err(CurrencyError::Unsupported(_))));
        assert!(matches!(Currency::parse("us"), Err(CurrencyError::Malformed(_))));
        assert!(matches!(Currency::parse("u$d"), Err(CurrencyError::Malformed(_))));
        let long = "a".repeat(10_000);
        let msg = Currency::parse(&long).unwrap_err().to_string();
        assert!(msg.len() < 200);
    }
}
