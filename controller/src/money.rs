//! Money: `rust_decimal::Decimal` in Rust and on the wire (as a JSON string, never a
//! float), integer minor units in SQLite so sums are exact. The currency and its
//! minor-unit digits are installation settings, pinned in the database on first start.

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serializer};

use crate::error::{Error, Result};

/// Largest magnitude any single amount may have, in minor units (10^13: ten billion
/// currency units at two digits), far from i64 overflow even when summed.
pub const MAX_MINOR: i64 = 10_000_000_000_000;

/// The installation's currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Currency {
    /// ISO 4217 code, e.g. `USD`.
    pub code: String,
    /// Digits after the decimal point (2 for USD, 0 for JPY, 3 for KWD).
    pub minor_units: u32,
}

impl Currency {
    /// Converts a decimal amount to minor units, refusing more precision than the
    /// currency has (nothing is rounded away silently).
    pub fn to_minor(&self, field: &str, d: Decimal) -> Result<i64> {
        let d = d.normalize();
        if d.scale() > self.minor_units {
            return Err(Error::invalid(format!(
                "{field}: {d} has more than {} decimal place(s) for {}",
                self.minor_units, self.code
            )));
        }
        let scaled = d * Decimal::from(10i64.pow(self.minor_units));
        let minor: i64 = scaled
            .trunc()
            .try_into()
            .map_err(|_| Error::invalid(format!("{field}: {d} is out of range")))?;
        if minor.abs() > MAX_MINOR {
            return Err(Error::invalid(format!("{field}: {d} is out of range")));
        }
        Ok(minor)
    }

    pub fn from_minor(&self, minor: i64) -> Decimal {
        Decimal::new(minor, self.minor_units)
    }

    /// A positive amount (transfers, payments, refunds).
    pub fn positive(&self, field: &str, d: Decimal) -> Result<i64> {
        let m = self.to_minor(field, d)?;
        if m <= 0 {
            return Err(Error::invalid(format!("{field} must be greater than zero")));
        }
        Ok(m)
    }

    /// Formats minor units with exactly the currency's digits, e.g. `-23.50`.
    pub fn format(&self, minor: i64) -> String {
        let mut d = self.from_minor(minor);
        d.rescale(self.minor_units);
        d.to_string()
    }
}

/// What an amount field of a request may hold. Each rule is declared in the OpenAPI
/// document as a `pattern` ([`amount_pattern`]) and enforced by the same rule when the
/// field is read (an [`Amount`]), so the two cannot disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AmountRule {
    /// Zero or more (prices, credit limits).
    NonNegative,
    /// More than zero (payments, transfers, refunds).
    Positive,
    /// Any sign, not zero (adjustments).
    NonZero,
}

/// Digits before the decimal point an amount may have: 999 999 999 units, which stays
/// within [`MAX_MINOR`] for any currency of up to four minor digits.
pub const AMOUNT_INT_DIGITS: usize = 9;
/// Digits after the point that may be written: the currency's own, then zeros, up to 4.
pub const AMOUNT_FRAC_DIGITS: u32 = 4;

/// The regular expression an amount of `rule` matches, for a currency of `minor`
/// digits: a decimal string such as `12.50`, no exponent, no `+`, no spaces; zeros after
/// the currency's digits are allowed (`7.3500` is 7.35 in USD).
pub fn amount_pattern(rule: AmountRule, minor: u32) -> String {
    let minor = minor.min(AMOUNT_FRAC_DIGITS) as usize;
    let pad = AMOUNT_FRAC_DIGITS as usize - minor;
    let int = AMOUNT_INT_DIGITS;
    // Any fraction the currency can hold.
    let frac = if minor == 0 {
        format!(r"(?:\.0{{1,{pad}}})?")
    } else {
        format!(r"(?:\.[0-9]{{1,{minor}}}0{{0,{pad}}})?")
    };
    // An integer part that is not zero, with at most `int` digits: k leading zeros, then
    // a non-zero digit and the rest.
    let int_nz = (0..int)
        .map(|k| format!("0{{{k}}}[1-9][0-9]{{0,{}}}", int - 1 - k))
        .collect::<Vec<_>>()
        .join("|");
    // A fraction that is not zero.
    let frac_nz = (0..minor)
        .map(|k| format!("0{{{k}}}[1-9][0-9]{{0,{}}}", minor - 1 - k))
        .collect::<Vec<_>>()
        .join("|");
    let nonzero = if minor == 0 {
        format!("(?:{int_nz}){frac}")
    } else {
        format!(r"(?:(?:{int_nz}){frac}|0{{1,{int}}}\.(?:{frac_nz})0{{0,{pad}}})")
    };
    match rule {
        AmountRule::NonNegative => format!("^[0-9]{{1,{int}}}{frac}$"),
        AmountRule::Positive => format!("^{nonzero}$"),
        AmountRule::NonZero => format!("^-?{nonzero}$"),
    }
}

/// The OpenAPI schema of an amount of `rule` in a currency of `minor` digits.
pub fn amount_schema(rule: AmountRule, minor: u32) -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    let what = match rule {
        AmountRule::NonNegative => "zero or more",
        AmountRule::Positive => "more than zero",
        AmountRule::NonZero => "not zero; negative lowers",
    };
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(format!(
            "An amount as a decimal string ({what}), with at most {minor} decimal place(s) \
             beyond which only zeros may follow"
        )))
        .pattern(Some(amount_pattern(rule, minor)))
        .examples([serde_json::json!(if rule == AmountRule::NonZero {
            "-5.00"
        } else {
            "25.00"
        })])
        .into()
}

/// Reads the written form of an amount: an optional `-` (not for `NonNegative`), 1 to
/// [`AMOUNT_INT_DIGITS`] digits, then optionally `.` and 1 to [`AMOUNT_FRAC_DIGITS`]
/// digits; then the rule's sign. The currency's own digits are checked where the amount
/// is used ([`Currency::to_minor`]), which knows the currency.
pub fn parse_amount(s: &str, rule: AmountRule) -> std::result::Result<Decimal, String> {
    let bad = || {
        format!(
            "'{s}' is not an amount ({}), like \"12.50\"",
            match rule {
                AmountRule::NonNegative => "zero or more",
                AmountRule::Positive => "more than zero",
                AmountRule::NonZero => "not zero",
            }
        )
    };
    let body = match s.strip_prefix('-') {
        Some(rest) if rule != AmountRule::NonNegative => rest,
        Some(_) => return Err(bad()),
        None => s,
    };
    let (int, frac) = match body.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (body, None),
    };
    let digits = |d: &str, max: usize| {
        !d.is_empty() && d.len() <= max && d.bytes().all(|b| b.is_ascii_digit())
    };
    if !digits(int, AMOUNT_INT_DIGITS)
        || frac.is_some_and(|f| !digits(f, AMOUNT_FRAC_DIGITS as usize))
    {
        return Err(bad());
    }
    let d: Decimal = s.parse().map_err(|_| bad())?;
    let sign_ok = match rule {
        AmountRule::NonNegative => true,
        AmountRule::Positive => d > Decimal::ZERO,
        AmountRule::NonZero => !d.is_zero(),
    };
    if !sign_ok {
        return Err(bad());
    }
    Ok(d)
}

macro_rules! amount_type {
    ($(#[$doc:meta])* $name:ident, $rule:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name(pub Decimal);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                parse_amount(&s, $rule).map($name).map_err(serde::de::Error::custom)
            }
        }

        impl $name {
            pub const RULE: AmountRule = $rule;
        }

        impl utoipa::PartialSchema for $name {
            /// The document's default (two minor digits); the served document is
            /// rewritten for the installation's currency ([`currency_schemas`]).
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                amount_schema($rule, 2).into()
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

amount_type!(
    /// A price or limit in a request: zero or more.
    NonNegativeAmount,
    AmountRule::NonNegative
);
amount_type!(
    /// A payment, transfer or refund in a request: more than zero.
    PositiveAmount,
    AmountRule::Positive
);
amount_type!(
    /// An adjustment in a request: either sign, not zero.
    NonZeroAmount,
    AmountRule::NonZero
);

/// The amount schemas for `currency`, to put in the served document in place of the
/// two-digit defaults.
pub fn currency_schemas(
    currency: &Currency,
) -> [(&'static str, utoipa::openapi::schema::Schema); 3] {
    [
        (
            "NonNegativeAmount",
            amount_schema(AmountRule::NonNegative, currency.minor_units),
        ),
        (
            "PositiveAmount",
            amount_schema(AmountRule::Positive, currency.minor_units),
        ),
        (
            "NonZeroAmount",
            amount_schema(AmountRule::NonZero, currency.minor_units),
        ),
    ]
}

/// Serde for `Decimal` as a JSON string. Deserializing refuses JSON numbers: a float
/// like 0.1 is not exactly 0.1, and money must be.
pub mod decimal_str {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Decimal, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&d.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Decimal;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an amount as a decimal string, like \"12.50\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Decimal, E> {
                v.trim().parse::<Decimal>().map_err(|_| {
                    E::custom(format!("'{v}' is not a decimal amount, like \"12.50\""))
                })
            }
        }
        d.deserialize_str(V)
    }
}

/// The same for `Option<Decimal>`.
pub mod opt_decimal_str {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Option<Decimal>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&d.to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
        #[derive(Deserialize)]
        struct W(#[serde(with = "decimal_str")] Decimal);
        Ok(Option::<W>::deserialize(d)?.map(|w| w.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn usd() -> Currency {
        Currency {
            code: "USD".into(),
            minor_units: 2,
        }
    }

    #[test]
    fn converts_exactly_and_refuses_extra_precision() {
        let c = usd();
        assert_eq!(
            c.to_minor("a", Decimal::from_str("12.5").unwrap()).unwrap(),
            1250
        );
        assert_eq!(
            c.to_minor("a", Decimal::from_str("-0.01").unwrap())
                .unwrap(),
            -1
        );
        assert_eq!(
            c.to_minor("a", Decimal::from_str("7.3500").unwrap())
                .unwrap(),
            735,
            "trailing zeros are fine"
        );
        let e = c
            .to_minor("amount", Decimal::from_str("0.001").unwrap())
            .unwrap_err();
        assert!(e.message.contains("2 decimal place"), "{}", e.message);
        assert!(
            c.to_minor("a", Decimal::from_str("1e20").unwrap_or(Decimal::MAX))
                .is_err()
        );
        assert_eq!(c.format(-2350), "-23.50");
        assert_eq!(c.format(5), "0.05");
        let jpy = Currency {
            code: "JPY".into(),
            minor_units: 0,
        };
        assert_eq!(jpy.to_minor("a", Decimal::from(1500)).unwrap(), 1500);
        assert!(
            jpy.to_minor("a", Decimal::from_str("1.5").unwrap())
                .is_err()
        );
        assert_eq!(jpy.format(1500), "1500");
        assert!(c.positive("amount", Decimal::ZERO).is_err());
    }

    #[test]
    fn amounts_are_read_by_the_rule_their_pattern_declares() {
        for minor in 0..=4 {
            for rule in [
                AmountRule::NonNegative,
                AmountRule::Positive,
                AmountRule::NonZero,
            ] {
                let re = regex::Regex::new(&amount_pattern(rule, minor)).unwrap();
                let cur = Currency {
                    code: "X".into(),
                    minor_units: minor,
                };
                for s in [
                    "0",
                    "-0",
                    "00",
                    "1",
                    "-1",
                    "0.5",
                    "0.05",
                    "0.005",
                    "0.0005",
                    "0.00005",
                    "12.50",
                    "7.3500",
                    "7.3050",
                    "-5.00",
                    "999999999",
                    "0999999999",
                    "1000000000",
                    "1.",
                    ".5",
                    "+1",
                    " 1",
                    "1e3",
                    "0.0",
                    "0.00",
                    "-0.01",
                    "10.10",
                    "5.0000",
                    "5.00000",
                    "000000000.01",
                    "0000000000.01",
                ] {
                    let by_pattern = re.is_match(s);
                    let by_server = parse_amount(s, rule)
                        .ok()
                        .is_some_and(|d| cur.to_minor("a", d).is_ok());
                    assert_eq!(by_pattern, by_server, "{s:?} {rule:?} with {minor} digits");
                }
            }
        }
    }

    #[test]
    fn json_numbers_are_refused_strings_accepted() {
        #[derive(Deserialize)]
        struct T {
            #[serde(with = "decimal_str")]
            a: Decimal,
        }
        assert_eq!(
            serde_json::from_str::<T>(r#"{"a":"0.10"}"#).unwrap().a,
            Decimal::from_str("0.10").unwrap()
        );
        let e = serde_json::from_str::<T>(r#"{"a":0.1}"#)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("decimal string"), "{e}");
        assert!(serde_json::from_str::<T>(r#"{"a":"ten"}"#).is_err());
    }
}
