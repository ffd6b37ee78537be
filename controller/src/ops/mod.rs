//! Operations: each change a person makes, with its audit entry, as one plain function
//! over the caller's write transaction, `fn(&Connection, &Actor, input) -> Result<_>`.
//! The JSON API calls them from its handlers (which parse, check the permission, call
//! and render); a server-rendered page can call the same ones. Money operations live in
//! [`crate::billing`], which works the same way.

pub mod auth;
pub mod messaging;
pub mod notices;
pub mod plans;
pub mod resellers;
pub mod sites;
pub mod subscribers;
pub mod users;
