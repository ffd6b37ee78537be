//! What every panel form shares: the refusals it shows beside its fields, so a form with
//! bad input comes back filled in, each error next to the field it is about.

use std::future::Future;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};

use super::PageResult;
use crate::error::{Error, ErrorKind};

/// A form's refusals: per field, and one about the form as a whole.
#[derive(Default)]
pub struct FieldErrors {
    pub form: Option<String>,
    fields: Vec<(&'static str, String)>,
    /// The status the page answers with (422 for bad values, 409 for a clash).
    status: Option<StatusCode>,
}

impl FieldErrors {
    /// The error shown beside `field`, if any (the templates ask by name).
    pub fn get(&self, field: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, m)| m.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.form.is_none() && self.fields.is_empty()
    }

    /// The page's status: 200 with nothing refused, else what the refusal's kind maps
    /// to (422 for the panel's own parsing).
    pub fn status(&self) -> StatusCode {
        if self.is_empty() {
            return StatusCode::OK;
        }
        self.status.unwrap_or(StatusCode::UNPROCESSABLE_ENTITY)
    }

    /// Records a refusal of the panel's own parsing against `field`.
    pub fn add(&mut self, field: &'static str, message: impl Into<String>) {
        if self.get(field).is_none() {
            self.fields.push((field, message.into()));
        }
    }

    /// The value of a parse, or `None` with its refusal recorded against `field`.
    pub fn take<T>(&mut self, field: &'static str, r: crate::error::Result<T>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.add(field, e.message);
                None
            }
        }
    }

    /// A refusal from the operation the form ran, placed beside the field it names (its
    /// message starts with the field's name, or speaks of it: "this static IPv4 address
    /// is already assigned"), or over the form. Refusals that are not about the input (an
    /// out-of-scope id, an ungranted function, a fault) stay errors: the 404, 403 or
    /// error page.
    pub fn from_error(e: Error, fields: &[&'static str]) -> Result<FieldErrors, Error> {
        let about_input = matches!(e.kind, ErrorKind::Invalid | ErrorKind::Conflict)
            // "site_id: site 9 is not available to …": a chosen value, not the page's id.
            || (e.kind == ErrorKind::NotFound && e.code.ends_with("_unavailable"));
        if !about_input {
            return Err(e);
        }
        let msg = e.message.to_ascii_lowercase();
        let field = fields
            .iter()
            .find(|f| msg.starts_with(*f))
            .or_else(|| fields.iter().find(|f| msg.contains(&f.replace('_', " "))))
            .copied();
        let mut out = FieldErrors {
            status: Some(StatusCode::from(e.kind)),
            ..Default::default()
        };
        match field {
            Some(f) => out.add(f, e.message),
            None => out.form = Some(e.message),
        }
        Ok(out)
    }
}

/// The shape of every create and edit form: the form parsed into the operation's input
/// (or the panel's own refusals), the operation run (`op`, through the API's `ops`), then
/// a redirect to `done`'s page, or the form again (`again`) with each refusal about the
/// input beside its field. A refusal that is not about the input (out of scope, not
/// granted, a fault) stays an error: the 404, 403 or error page.
pub async fn submit<I, T, Op, Again>(
    parsed: Result<I, FieldErrors>,
    fields: &[&'static str],
    op: impl FnOnce(I) -> Op,
    done: impl FnOnce(T) -> String,
    again: impl FnOnce(FieldErrors) -> Again,
) -> PageResult
where
    Op: Future<Output = crate::error::Result<T>>,
    Again: Future<Output = PageResult>,
{
    let errs = match parsed {
        Ok(input) => match op(input).await {
            Ok(t) => return Ok(Redirect::to(&done(t)).into_response()),
            Err(e) => FieldErrors::from_error(e, fields)?,
        },
        Err(errs) => errs,
    };
    again(errs).await
}

/// `Ok(v)` when nothing was refused, else the refusals: the end of a form's parse.
pub fn checked<T>(errs: FieldErrors, v: T) -> Result<T, FieldErrors> {
    if errs.is_empty() { Ok(v) } else { Err(errs) }
}

/// An optional whole number of a form (empty = absent), refused against its field.
pub fn opt_number(errs: &mut FieldErrors, field: &'static str, s: &str) -> Option<i64> {
    errs.take(field, super::opt_i64(field, &Some(s.to_string())))
        .flatten()
}

/// A text field, trimmed; empty = absent.
pub fn opt_text(s: &str) -> Option<String> {
    Some(s.trim().to_string()).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_lands_beside_the_field_it_names() {
        let fields = ["username", "static_ipv4", "site_id", "mac"];
        let e = FieldErrors::from_error(Error::invalid("mac: 'zz' is not a MAC address"), &fields)
            .unwrap();
        assert_eq!(e.get("mac"), Some("mac: 'zz' is not a MAC address"));
        assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let e = FieldErrors::from_error(
            Error::conflict(
                "duplicate",
                "this static IPv4 address is already assigned at this site",
            ),
            &fields,
        )
        .unwrap();
        assert!(e.get("static_ipv4").is_some());
        assert_eq!(e.status(), StatusCode::CONFLICT);
        let e = FieldErrors::from_error(Error::invalid("over the limit"), &fields).unwrap();
        assert_eq!(e.form.as_deref(), Some("over the limit"));
        assert!(FieldErrors::from_error(Error::not_found("subscriber"), &fields).is_err());
        assert!(
            FieldErrors::from_error(Error::forbidden("permission_denied", "no"), &fields).is_err()
        );
    }
}
