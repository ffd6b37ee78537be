//! Bar charts drawn on the server as inline SVG: no script, no external origin, and the
//! same picture whatever the browser (and in a screenshot or a printed statement).

use std::fmt::Write;

/// One series of a chart: a value per label, drawn in the CSS class `class`.
pub struct Series<'a> {
    pub name: &'a str,
    pub class: &'a str,
    pub values: Vec<f64>,
}

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 56.0;
const BOTTOM: f64 = 28.0;
const TOP: f64 = 12.0;

/// A grouped bar chart of `series` over `labels`, with a y axis in `unit`. Every bar has
/// a `<title>` (its label, series and value) for a hover tooltip and for screen readers.
pub fn bars(title: &str, labels: &[String], series: &[Series<'_>], unit: &str) -> String {
    let max = series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .fold(0.0_f64, f64::max);
    let top = nice_ceiling(max);
    let (plot_w, plot_h) = (WIDTH - LEFT - 8.0, HEIGHT - BOTTOM - TOP);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{}" xmlns="http://www.w3.org/2000/svg">"#,
        esc(title)
    );
    for i in 0..=4 {
        let v = top * f64::from(i) / 4.0;
        let y = TOP + plot_h - plot_h * f64::from(i) / 4.0;
        let _ = write!(
            svg,
            r#"<line class="grid" x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}"/><text class="axis" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT + plot_w,
            LEFT - 6.0,
            y + 4.0,
            esc(&with_unit(v, unit))
        );
    }
    let n = labels.len().max(1) as f64;
    let slot = plot_w / n;
    let bar = (slot * 0.8 / series.len().max(1) as f64).clamp(1.0, 40.0);
    // Bars narrower than their slot stand in its middle.
    let inset = (slot - bar * series.len() as f64) / 2.0;
    // As many x labels as fit side by side (11px text is about 6.5px a character),
    // counted back from the newest so that it always has its label.
    let chars = labels.iter().map(|l| l.chars().count()).max().unwrap_or(1) as f64;
    let fit = ((plot_w / (chars * 6.5 + 16.0)) as usize).max(1);
    let every = labels.len().div_ceil(fit).max(1);
    for (i, label) in labels.iter().enumerate() {
        let x0 = LEFT + slot * i as f64 + inset;
        for (k, s) in series.iter().enumerate() {
            let v = s.values.get(i).copied().unwrap_or(0.0);
            let h = if top > 0.0 { plot_h * v / top } else { 0.0 };
            let _ = write!(
                svg,
                r#"<rect class="bar {}" x="{:.1}" y="{:.1}" width="{bar:.1}" height="{h:.1}"><title>{}</title></rect>"#,
                esc(s.class),
                x0 + bar * k as f64,
                TOP + plot_h - h,
                esc(&format!("{label} · {}: {}", s.name, with_unit(v, unit)))
            );
        }
        if (labels.len() - 1 - i).is_multiple_of(every) {
            // Centred under its bar, but never past the plot's right edge.
            let half = chars * 3.25;
            let x = (LEFT + slot * (i as f64 + 0.5)).min(LEFT + plot_w - half);
            let _ = write!(
                svg,
                r#"<text class="axis" x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                HEIGHT - 8.0,
                esc(label)
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

/// The least of 1, 2 or 5 × 10ⁿ at or above `v` (so the axis reads in round numbers).
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * p)
}

/// A value for an axis or a tooltip: whole numbers as such, others to two places.
fn short(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn with_unit(v: f64, unit: &str) -> String {
    if unit.is_empty() {
        short(v)
    } else {
        format!("{} {unit}", short(v))
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_bar_per_value_scaled_to_a_round_axis_and_text_escaped() {
        let labels: Vec<String> = ["2026-10", "2026-11", "2026-12"].map(String::from).to_vec();
        let svg = bars(
            "Renewals <& revenue>",
            &labels,
            &[
                Series {
                    name: "renewals",
                    class: "a",
                    values: vec![3.0, 7.0, 0.0],
                },
                Series {
                    name: "value",
                    class: "b",
                    values: vec![1.5, 0.0, 2.0],
                },
            ],
            "n",
        );
        assert_eq!(svg.matches("<rect").count(), 6);
        assert!(svg.contains(r#"aria-label="Renewals &lt;&amp; revenue&gt;""#));
        // 7 rounds up to 10: the tallest bar is 70% of the plot's height.
        let plot_h = HEIGHT - BOTTOM - TOP;
        assert!(svg.contains(&format!(r#"height="{:.1}""#, plot_h * 0.7)));
        assert!(svg.contains(">10 n</text>"));
        assert!(svg.contains("<title>2026-11 · renewals: 7 n</title>"));
        // Three short labels all fit; 31 dates do not, but the newest keeps its label.
        assert_eq!(svg.matches(r#"text-anchor="middle">2026-"#).count(), 3);
        let days: Vec<String> = (1..=31).map(|d| format!("2026-12-{d:02}")).collect();
        let many = bars(
            "d",
            &days,
            &[Series {
                name: "n",
                class: "a",
                values: vec![1.0; 31],
            }],
            "",
        );
        let shown = many.matches(r#"text-anchor="middle">2026-"#).count();
        assert!((2..=10).contains(&shown), "{shown}");
        assert!(many.contains(">2026-12-31</text>"));
    }

    #[test]
    fn round_ceilings() {
        for (v, want) in [
            (0.0, 1.0),
            (0.3, 0.5),
            (7.0, 10.0),
            (12.0, 20.0),
            (2500.0, 5000.0),
            (1.0, 1.0),
        ] {
            assert_eq!(nice_ceiling(v), want, "{v}");
        }
    }
}
