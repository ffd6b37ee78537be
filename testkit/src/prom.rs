//! A strict reader of the Prometheus text exposition format (version 0.0.4), for tests
//! of `/metrics`. No Prometheus server is available to these tests (nothing outside
//! loopback is), so this checks what a scraper relies on instead: every sample line
//! parses (`name{label="value",…} value`), belongs to a family announced by `# TYPE`
//! (counters end in `_total`, histograms have `_bucket` with `le`, `_sum` and `_count`,
//! buckets are cumulative and the `+Inf` one equals the count), names and label names
//! are valid, no series appears twice, and every family has a `# HELP`.

use std::collections::{BTreeMap, HashMap, HashSet};

/// One sample: its metric name, labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The sample's name (`outpost_agent_radius_requests_total`, `…_bucket`).
    pub name: String,
    /// Its labels, by name.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// A parsed exposition.
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    /// Each family's type (`counter`, `gauge`, `histogram`, …), by family name.
    pub types: HashMap<String, String>,
    /// Every sample, in order.
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// The value of the sample `name` whose labels include every pair of `labels`, when
    /// exactly one matches; `None` when none does. Panics when several do.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect();
        assert!(
            found.len() <= 1,
            "{name} {labels:?} matches {} samples",
            found.len()
        );
        found.first().map(|s| s.value)
    }

    /// The sum of every sample named `name`.
    pub fn sum(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.value)
            .sum()
    }
}

fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(s: &str) -> bool {
    valid_name(s) && !s.contains(':') && !s.starts_with("__")
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse().map_err(|_| format!("not a number: {s:?}")),
    }
}

/// Parses `{a="x",b="y"}` (the braces included) and returns the labels and the rest.
fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = s.strip_prefix('{').ok_or("labels start with {")?;
    loop {
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let eq = rest.find('=').ok_or("a label without =")?;
        let name = rest[..eq].trim();
        if !valid_label_name(name) {
            return Err(format!("invalid label name {name:?}"));
        }
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or("a label value is quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    other => return Err(format!("bad escape in a label value: {other:?}")),
                },
                Some((_, c)) => value.push(c),
                None => return Err("an unterminated label value".into()),
            }
        };
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("label {name} given twice"));
        }
        rest = &rest[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// The family a sample name belongs to, given the announced types.
fn family_of<'a>(name: &'a str, types: &HashMap<String, String>) -> Option<&'a str> {
    if types.contains_key(name) {
        return Some(name);
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && types
                .get(base)
                .is_some_and(|t| t == "histogram" || t == "summary")
        {
            return Some(base);
        }
    }
    None
}

/// Parses and checks `text`; the error names the line and what is wrong with it.
pub fn parse(text: &str) -> Result<Exposition, String> {
    let mut out = Exposition::default();
    let mut helps = HashSet::new();
    let mut series = HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut words = rest.splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some("TYPE"), Some(name), Some(kind)) => {
                    if !valid_name(name) {
                        return Err(at("invalid metric name".into()));
                    }
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(at(format!("unknown type {kind}")));
                    }
                    if kind == "counter" && !name.ends_with("_total") {
                        return Err(at("a counter's name ends in _total".into()));
                    }
                    if out.types.insert(name.into(), kind.into()).is_some() {
                        return Err(at("a family announced twice".into()));
                    }
                }
                (Some("HELP"), Some(name), _) => {
                    helps.insert(name.to_string());
                }
                _ => {} // other comments are allowed
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| at("a sample without a value".into()))?;
        let name = &line[..name_end];
        if !valid_name(name) {
            return Err(at("invalid metric name".into()));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(at)?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let mut fields = rest.split_whitespace();
        let value = parse_value(fields.next().ok_or_else(|| at("no value".into()))?).map_err(at)?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .map_err(|_| at("a timestamp is an integer".into()))?;
        }
        if fields.next().is_some() {
            return Err(at("text after the timestamp".into()));
        }
        let family = family_of(name, &out.types)
            .ok_or_else(|| at("a sample of no announced family (# TYPE)".into()))?;
        if !helps.contains(family) {
            return Err(at(format!("family {family} has no # HELP")));
        }
        if !series.insert((name.to_string(), labels.clone())) {
            return Err(at("the same series twice".into()));
        }
        if out.types[family] == "histogram"
            && name.ends_with("_bucket")
            && !labels.contains_key("le")
        {
            return Err(at("a bucket without le".into()));
        }
        out.samples.push(Sample {
            name: name.into(),
            labels,
            value,
        });
    }
    check_histograms(&out)?;
    Ok(out)
}

/// Buckets never decrease as `le` grows, and `+Inf` equals `_count`, per series.
fn check_histograms(e: &Exposition) -> Result<(), String> {
    for (family, _) in e.types.iter().filter(|(_, t)| *t == "histogram") {
        let mut by_series: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
        for s in e
            .samples
            .iter()
            .filter(|s| s.name == format!("{family}_bucket"))
        {
            let mut key = s.labels.clone();
            let le = parse_value(&key.remove("le").expect("checked"))?;
            by_series.entry(key).or_default().push((le, s.value));
        }
        for (labels, mut buckets) in by_series {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            if buckets.windows(2).any(|w| w[1].1 < w[0].1) {
                return Err(format!("{family} {labels:?}: buckets are not cumulative"));
            }
            let inf = buckets
                .last()
                .filter(|b| b.0 == f64::INFINITY)
                .ok_or_else(|| format!("{family} {labels:?}: no +Inf bucket"))?
                .1;
            let count = e
                .samples
                .iter()
                .find(|s| s.name == format!("{family}_count") && s.labels == labels)
                .ok_or_else(|| format!("{family} {labels:?}: no _count"))?
                .value;
            if inf != count {
                return Err(format!(
                    "{family} {labels:?}: +Inf bucket {inf} is not _count {count}"
                ));
            }
            if !e
                .samples
                .iter()
                .any(|s| s.name == format!("{family}_sum") && s.labels == labels)
            {
                return Err(format!("{family} {labels:?}: no _sum"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
# HELP x_requests_total Requests.
# TYPE x_requests_total counter
x_requests_total{code=\"a\",reason=\"q\\\"uote\"} 3
x_requests_total{code=\"b\",reason=\"r\"} 0
# HELP x_up Up.
# TYPE x_up gauge
x_up 1
# HELP x_seconds Time.
# TYPE x_seconds histogram
x_seconds_sum{k=\"a\"} 0.5
x_seconds_count{k=\"a\"} 2
x_seconds_bucket{le=\"0.1\",k=\"a\"} 1
x_seconds_bucket{le=\"+Inf\",k=\"a\"} 2
";

    #[test]
    fn a_good_exposition_parses_and_reads_back() {
        let e = parse(GOOD).unwrap();
        assert_eq!(
            e.value("x_requests_total", &[("reason", "q\"uote")]),
            Some(3.0)
        );
        assert_eq!(e.value("x_up", &[]), Some(1.0));
        assert_eq!(e.sum("x_requests_total"), 3.0);
        assert_eq!(e.value("x_missing", &[]), None);
    }

    #[test]
    fn what_a_scraper_would_refuse_is_refused() {
        for (bad, why) in [
            ("x_up 1\n", "no announced family"),
            ("# HELP c c\n# TYPE c counter\nc 1\n", "ends in _total"),
            ("# TYPE x_up gauge\nx_up 1\n", "no # HELP"),
            (
                "# HELP x x\n# TYPE x gauge\nx{a=\"1\"} one\n",
                "not a number",
            ),
            ("# HELP x x\n# TYPE x gauge\nx{a=1} 1\n", "quoted"),
            (
                "# HELP x x\n# TYPE x gauge\nx 1\nx 2\n",
                "the same series twice",
            ),
            ("# HELP 1x x\n# TYPE 1x gauge\n", "invalid metric name"),
            (
                "# HELP h h\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\nh_sum 1\n",
                "not cumulative",
            ),
            (
                "# HELP h h\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 1\nh_sum 1\n",
                "is not _count",
            ),
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }
}
