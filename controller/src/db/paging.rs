//! Cursor paging, the same for every list: the query's `cursor` and `limit`, checked in
//! one place ([`Paging`]), and the page answered ([`Page`]).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{Error, Result};

/// One page of a list, oldest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// The same page with each item turned into its API view (same order, same ids).
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next_cursor: self.next_cursor,
        }
    }
}

/// The `cursor` and `limit` of a list request, read and checked the same way for
/// every list route.
#[derive(Debug, Clone, Copy)]
pub struct Paging {
    /// The id the page starts after (before, for newest-first lists); 0 from the start.
    pub after: i64,
    /// Rows on a page.
    pub limit: u32,
}

impl Paging {
    /// Reads `cursor` (a `next_cursor` from a previous page) and `limit` (1..=500,
    /// default 100).
    pub fn new(cursor: Option<&str>, limit: Option<u32>) -> Result<Paging> {
        // A cursor is written as the digits of an id (the pattern the schema declares):
        // no sign, no spaces, at most 18 digits (so it always fits an i64).
        let after = match cursor {
            None | Some("") => 0,
            Some(c) if c.len() <= 18 && c.bytes().all(|b| b.is_ascii_digit()) => {
                c.parse::<i64>().expect("at most 18 digits")
            }
            Some(_) => {
                return Err(Error::bad_request(
                    "bad_cursor",
                    "cursor must be a next_cursor from a previous page",
                ));
            }
        };
        let limit = limit.unwrap_or(100);
        if !(1..=500).contains(&limit) {
            return Err(Error::bad_request(
                "bad_limit",
                "limit must be between 1 and 500",
            ));
        }
        Ok(Paging { after, limit })
    }

    /// Rows to fetch: one more than a page, to tell whether another page follows.
    pub fn fetch(&self) -> u32 {
        self.limit + 1
    }

    /// The id a newest-first page goes below; `None` from the top.
    pub fn before(&self) -> Option<i64> {
        (self.after > 0).then_some(self.after)
    }

    /// Builds a page from [`Paging::fetch`] rows.
    pub fn page<T>(&self, mut rows: Vec<T>, id: impl Fn(&T) -> i64) -> Page<T> {
        let next_cursor = if rows.len() > self.limit as usize {
            rows.truncate(self.limit as usize);
            rows.last().map(|r| id(r).to_string())
        } else {
            None
        };
        Page {
            items: rows,
            next_cursor,
        }
    }
}

/// A time in a query string (`since`, `until`): RFC 3339, read as unix seconds. A value
/// that is not one is refused with the query's 400, like any other unreadable parameter.
/// Declare it in a filter with `#[param(value_type = Option<String>, format = DateTime)]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryTime(pub i64);

impl<'de> Deserialize<'de> for QueryTime {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        time::OffsetDateTime::parse(&s, &time::format_description::well_known::Rfc3339)
            .map(|t| QueryTime(t.unix_timestamp()))
            .map_err(|_| {
                serde::de::Error::custom(format!(
                    "'{s}' is not an RFC 3339 time (for example 2026-12-31T23:59:59Z)"
                ))
            })
    }
}

/// A list's query string: its filters, and the `cursor` and `limit` of the page.
pub trait Paged {
    fn cursor(&self) -> Option<&str>;
    fn limit(&self) -> Option<u32>;

    /// The page asked for, checked.
    fn paging(&self) -> Result<Paging> {
        Paging::new(self.cursor(), self.limit())
    }
}

/// Declares a list route's query struct: the filters written out, then the `cursor` and
/// `limit` every list takes, with [`Paged`] implemented over them. (Not
/// `#[serde(flatten)]` of a shared paging struct: axum's `Query` hands flattened fields
/// over as strings, so numbers in them fail to parse, and `deny_unknown_fields` does not
/// work with `flatten`.)
macro_rules! list_filter {
    ($(#[$attr:meta])* pub struct $name:ident { $($fields:tt)* }) => {
        $(#[$attr])*
        #[derive(Debug, Default, Clone, serde::Deserialize, utoipa::IntoParams)]
        #[serde(deny_unknown_fields)]
        #[into_params(parameter_in = Query)]
        pub struct $name {
            $($fields)*
            /// The `next_cursor` of the previous page.
            #[param(pattern = r"^[0-9]{0,18}$")]
            pub cursor: Option<String>,
            /// 1..=500, default 100.
            #[param(minimum = 1, maximum = 500)]
            pub limit: Option<u32>,
        }

        impl $crate::db::paging::Paged for $name {
            fn cursor(&self) -> Option<&str> {
                self.cursor.as_deref()
            }
            fn limit(&self) -> Option<u32> {
                self.limit
            }
        }
    };
}
pub(crate) use list_filter;
