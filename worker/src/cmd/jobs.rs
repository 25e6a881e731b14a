//! `nexingest jobs`: its flags as a [`JobFilter`], the listing of [`crate::producer::jobs`],
//! and the rows as a table or JSON.

use std::fmt::Write as _;

use crate::cli::JobsArgs;
use crate::config::DbConfig;
use crate::producer::jobs::{self, JobsReport, ShownState};

/// Lists the data sources `a` selects.
///
/// # Errors
/// Invalid filters, database errors.
pub async fn run(dbc: &DbConfig, a: &JobsArgs) -> anyhow::Result<JobsReport> {
    let mut f = super::job_filter(&a.filter)?;
    f.states = a
        .state
        .iter()
        .map(|s| ShownState::from_name(s).ok_or_else(|| anyhow::anyhow!("--state {s:?}")))
        .collect::<anyhow::Result<_>>()?;
    jobs::list(dbc, &f, a.limit).await
}

fn clip(s: &str, n: usize) -> String {
    let one_line: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= n {
        one_line
    } else {
        let mut t: String = one_line.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

fn secs(ms: Option<i64>) -> String {
    ms.map_or_else(|| "-".into(), |ms| format!("{:.1}", ms as f64 / 1e3))
}

/// Formats seconds as `42s`, `13m`, `5.2h`, `3.1d`.
pub fn human_age(s: f64) -> String {
    if s < 120.0 {
        format!("{s:.0}s")
    } else if s < 7200.0 {
        format!("{:.0}m", s / 60.0)
    } else if s < 172_800.0 {
        format!("{:.1}h", s / 3600.0)
    } else {
        format!("{:.1}d", s / 86_400.0)
    }
}

impl JobsReport {
    /// The table `jobs` prints (or the rows as JSON).
    pub fn render(&self, json: bool) -> String {
        if json {
            let v = serde_json::json!({ "jobs": self.rows, "truncated": self.truncated });
            return format!("{v:#}\n");
        }
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<44} {:<8} {:>4} {:>9} {:>6} {:>6} {:>6} {:<9} {:>7}  last error / location source",
            "data source", "state", "att", "rows", "dl s", "dec s", "load s", "last", "age",
        );
        if self.rows.is_empty() {
            let _ = writeln!(out, "(no matching data sources)");
        }
        for r in &self.rows {
            let name = format!("{}/{}/{}/{}", r.dataset, r.scenario, r.model, r.year);
            let last = r.last.as_ref().map_or("-", |l| l.outcome.as_str());
            let ago = r.started_ago_s.map_or_else(|| "-".into(), human_age);
            let note = match (&r.last_error, &r.last) {
                (Some(e), _) if r.state != "done" => clip(e, 70),
                (_, Some(l)) if l.outcome == "failed" => clip(l.error.as_deref().unwrap_or(""), 70),
                _ => {
                    let key = r
                        .last
                        .as_ref()
                        .and_then(|l| l.location_key.as_deref())
                        .or(r.location_source.as_deref())
                        .unwrap_or("");
                    let vars = r.last.as_ref().map_or(&r.variables, |l| &l.variables);
                    clip(&format!("{} [{}]", key, vars.join(",")), 70)
                }
            };
            let _ = writeln!(
                out,
                "{:<44} {:<8} {:>4} {:>9} {:>6} {:>6} {:>6} {:<9} {:>7}  {}",
                clip(&name, 44),
                r.state,
                r.attempts,
                r.rows,
                secs(r.download_ms),
                secs(r.decode_ms),
                secs(r.load_ms),
                last,
                ago,
                note
            );
        }
        let mut by_state: Vec<(&str, usize)> = Vec::new();
        for r in &self.rows {
            match by_state.iter_mut().find(|(s, _)| *s == r.state) {
                Some((_, n)) => *n += 1,
                None => by_state.push((&r.state, 1)),
            }
        }
        let summary: Vec<String> = by_state.iter().map(|(s, n)| format!("{n} {s}")).collect();
        let _ = writeln!(
            out,
            "{} data sources{}{}",
            self.rows.len(),
            if summary.is_empty() {
                String::new()
            } else {
                format!(" ({})", summary.join(", "))
            },
            if self.truncated {
                "; more match: raise --limit (0 = all) or narrow the filters"
            } else {
                ""
            }
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_well() {
        assert_eq!(human_age(42.0), "42s");
        assert_eq!(human_age(780.0), "13m");
        assert_eq!(human_age(5.0 * 3600.0), "5.0h");
        assert_eq!(human_age(3.0 * 86_400.0), "3.0d");
        assert_eq!(clip("a\n  b", 10), "a b");
        assert_eq!(clip("abcdef", 4), "abc…");
    }
}
