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
