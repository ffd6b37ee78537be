//! The texts resellers edit, sandboxed: a template is plain text with `{{field}}`
//! placeholders and nothing else — no code, no loops, no filters, no way to reach
//! anything but the message's own fields ([`Fields`]). Our own substitution rather than a
//! template engine on purpose: an engine's features (includes, loops, method calls) are
//! exactly what a reseller's text must not have. An unknown field or a stray `{{` is
//! refused when the template is saved, so rendering cannot fail.

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// The fields a template may name. Each message carries exactly these.
pub const FIELDS: &[&str] = &[
    "name",
    "username",
    "plan",
    "expires_at",
    "days_left",
    "amount",
    "reseller",
    "portal_url",
];

/// A message's own fields, by name (only [`FIELDS`]).
pub type Fields = BTreeMap<&'static str, String>;

/// One piece of a parsed template.
enum Piece<'a> {
    Text(&'a str),
    Field(&'a str),
}

fn parse(template: &str) -> std::result::Result<Vec<Piece<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            out.push(Piece::Text(&rest[..open]));
        }
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .ok_or_else(|| "a '{{' is not closed by '}}'".to_string())?;
        let name = after[..close].trim();
        if !FIELDS.contains(&name) {
            return Err(format!(
                "unknown field '{{{{{name}}}}}'; a template may use only {}",
                FIELDS
                    .iter()
                    .map(|f| format!("{{{{{f}}}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        out.push(Piece::Field(name));
        rest = &after[close + 2..];
    }
    if rest.contains("}}") {
        return Err("a '}}' has no '{{' before it".into());
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest));
    }
    Ok(out)
}

/// Checks a template a reseller saves: known fields only, within `max` characters.
/// `what` names it in the error (`body`, `subject`, `whatsapp.params[1]`).
pub fn validate(what: &str, template: &str, max: usize) -> Result<()> {
    if template.chars().count() > max {
        return Err(Error::invalid(format!("{what}: at most {max} characters")));
    }
    parse(template).map_err(|e| Error::unprocessable("bad_template", format!("{what}: {e}")))?;
    Ok(())
}

/// Fills a template saved through [`validate`]. A placeholder whose field has no value
/// renders empty; a template that does not parse (never saved through `validate`)
/// renders as its own text, placeholders and all, rather than failing a send.
pub fn render(template: &str, fields: &Fields) -> String {
    match parse(template) {
        Ok(pieces) => {
            let mut s = String::with_capacity(template.len() + 32);
            for p in pieces {
                match p {
                    Piece::Text(t) => s.push_str(t),
                    Piece::Field(f) => s.push_str(fields.get(f).map(String::as_str).unwrap_or("")),
                }
            }
            s
        }
        Err(_) => template.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_known_fields_and_nothing_else() {
        let mut f = Fields::new();
        f.insert("name", "Ana".into());
        f.insert("expires_at", "2026-12-31".into());
        assert_eq!(
            render("Hi {{name}}, ends {{ expires_at }}. {{plan}}!", &f),
            "Hi Ana, ends 2026-12-31. !"
        );
        // A value that looks like a placeholder is not expanded again.
        f.insert("name", "{{plan}}".into());
        assert_eq!(render("{{name}}", &f), "{{plan}}");
    }

    #[test]
    fn refuses_unknown_fields_and_broken_braces() {
        for bad in [
            "{{password}}",
            "{{ name.secret }}",
            "{{#each x}}",
            "Hi {{name",
            "Hi name}}",
            "{{}}",
        ] {
            let e = validate("body", bad, 500).unwrap_err();
            assert_eq!(e.code, "bad_template", "{bad}: {e}");
        }
        validate("body", "plain text", 500).unwrap();
        assert!(validate("body", &"x".repeat(501), 500).is_err());
    }
}
