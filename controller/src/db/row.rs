//! Reading stored rows. [`stored_row!`] declares a row once: it writes the struct, the
//! list of its columns and the function that reads them, from one list of fields each
//! naming its column, so the `SELECT` and the reading cannot drift apart.
//! [`owned_row`] reads one row by id inside a [`Scope`].

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::Cached;
use crate::error::{Error, Result};
use crate::scope::Scope;

/// The row `id` of `select` (`SELECT … FROM table alias [JOIN …]`, no `WHERE`) whose
/// owner, `alias.tenant_id`, is inside `scope`. A row outside the scope is not found,
/// like one that does not exist (`what` names it in the error): its existence is not
/// leaked.
pub fn owned_row<T>(
    conn: &Connection,
    scope: &Scope,
    select: &str,
    alias: &str,
    id: i64,
    read: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    what: &str,
) -> Result<T> {
    let (pred, p) = scope.owns(&format!("{alias}.tenant_id"));
    conn.cached_row(
        &format!("{select} WHERE {pred} AND {alias}.id = ?"),
        params![p, id],
        read,
    )
    .optional()?
    .ok_or_else(|| Error::not_found(what))
}

/// Declares a struct read from a query's row, its column list and its reader:
///
/// ```text
/// stored_row! {
///     /// A site.
///     #[derive(Debug, Clone)]
///     pub struct Site in COLS, read by from_row {
///         pub id: i64 = "s.id",
///         pub created_at: String = "s.created_at" => super::rfc3339,
///     }
/// }
/// ```
///
/// gives `struct Site { … }`, `const COLS: &str = "s.id, s.created_at"` (for
/// `format!("SELECT {COLS} FROM sites s …")`) and
/// `fn from_row(&Row) -> rusqlite::Result<Site>`, which reads the columns in that order,
/// each through its `=> conversion` when it has one (a function of the stored value).
macro_rules! stored_row {
    (
        $(#[$m:meta])*
        $vis:vis struct $name:ident in $cols:ident, read by $read:ident {
            $(
                $(#[$fm:meta])*
                $fvis:vis $field:ident : $ty:ty = $col:literal $(=> $conv:path)?
            ),+ $(,)?
        }
    ) => {
        $(#[$m])*
        $vis struct $name {
            $(
                $(#[$fm])*
                $fvis $field: $ty,
            )+
        }

        const $cols: &str = $crate::db::row::stored_row!(@cols $($col),+);

        fn $read(r: &rusqlite::Row<'_>) -> rusqlite::Result<$name> {
            let mut at = 0..;
            Ok($name {
                $(
                    $field: $crate::db::row::stored_row!(
                        @get r, at.next().unwrap_or_default() $(, $conv)?
                    ),
                )+
            })
        }
    };
    (@cols $first:literal $(, $col:literal)*) => {
        concat!($first $(, ", ", $col)*)
    };
    (@get $r:ident, $i:expr) => {
        $r.get($i)?
    };
    (@get $r:ident, $i:expr, $conv:path) => {
        $conv($r.get($i)?)
    };
}

pub(crate) use stored_row;
