//! The evidence report: per scenario and per requirement, as JSON (`results.json`), Markdown
//! (`report.md`) and self-contained HTML (`report.html`). Cucumber JSON and JUnit XML are
//! written by the cucumber writers alongside.

use crate::catalog::{requirement_ids, Catalog};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;

/// Outcome of one scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// Every step passed.
    Passed,
    /// A step failed (or did not match any step definition).
    Failed,
    /// Tagged `@pending`: waits for a part not built yet; never counted as passed.
    Pending,
    /// Not selected by the tag filter, or not applicable to this target.
    NotRun,
}

impl Status {
    /// Upper-case label.
    pub fn label(self) -> &'static str {
        match self {
            Status::Passed => "PASSED",
            Status::Failed => "FAILED",
            Status::Pending => "PENDING",
            Status::NotRun => "NOT RUN",
        }
    }
}

/// One scenario's result.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    /// Feature name.
    pub feature: String,
    /// Feature file.
    pub file: String,
    /// Scenario name.
    pub name: String,
    /// Line in the feature file.
    pub line: usize,
    /// Tags (feature and scenario), without `@`.
    pub tags: Vec<String>,
    /// Requirement ids from the tags.
    pub requirements: Vec<String>,
    /// Outcome.
    pub status: Status,
    /// Why it failed, is pending, or did not run.
    pub message: Option<String>,
    /// What each step captured.
    pub evidence: Vec<String>,
    /// When it finished (UTC, RFC 3339).
    pub finished_at: Option<String>,
    /// How many example rows ran (scenario outlines), and how many of them passed.
    pub runs: u32,
    /// Passed runs.
    pub passed_runs: u32,
}

/// One requirement's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct RequirementResult {
    /// Requirement id.
    pub id: String,
    /// Principal requirement.
    pub principal: u8,
    /// Title.
    pub title: String,
    /// Summary text.
    pub text: String,
    /// Evidence kinds.
    pub evidence_kinds: Vec<String>,
    /// Verdict: FAILED if any scenario failed; PASSED if at least one passed and none failed;
    /// PENDING if its scenarios all wait for unbuilt parts; NOT RUN otherwise.
    pub status: Status,
    /// Scenario counts.
    pub passed: usize,
    /// Failed scenarios.
    pub failed: usize,
    /// Pending scenarios.
    pub pending: usize,
    /// Scenarios not run.
    pub not_run: usize,
    /// Scenario names listed in the catalog that no feature file defines.
    pub missing_scenarios: Vec<String>,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Standard and version.
    pub standard: String,
    /// What was checked.
    pub target: String,
    /// Source revision of the checked software and scenarios.
    pub git_commit: String,
    /// Tag filter used.
    pub tags: Option<String>,
    /// Start and end (UTC, RFC 3339).
    pub started_at: String,
    /// End.
    pub finished_at: String,
    /// Per requirement.
    pub requirements: Vec<RequirementResult>,
    /// Per scenario.
    pub scenarios: Vec<ScenarioResult>,
    /// Scenarios tagged with a requirement id the catalog does not know.
    pub unknown_requirements: Vec<String>,
    /// Organisational requirements (out of software scope).
    pub organisational: Vec<crate::catalog::OutOfScope>,
    /// Totals.
    pub totals: Totals,
}

/// Scenario totals.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Totals {
    /// Passed.
    pub passed: usize,
    /// Failed.
    pub failed: usize,
    /// Pending.
    pub pending: usize,
    /// Not run.
    pub not_run: usize,
}

impl Report {
    /// Builds the per-requirement view.
    pub fn build(
        catalog: &Catalog,
        scenarios: Vec<ScenarioResult>,
        target: String,
        git_commit: String,
        tags: Option<String>,
        started_at: String,
        finished_at: String,
    ) -> Report {
        let mut requirements = vec![];
        for r in &catalog.requirements {
            let mine: Vec<&ScenarioResult> = scenarios.iter().filter(|s| s.requirements.contains(&r.id)).collect();
            let count = |st: Status| mine.iter().filter(|s| s.status == st).count();
            let (passed, failed, pending, not_run) = (
                count(Status::Passed),
                count(Status::Failed),
                count(Status::Pending),
                count(Status::NotRun),
            );
            let status = if failed > 0 {
                Status::Failed
            } else if passed > 0 {
                Status::Passed
            } else if pending > 0 {
                Status::Pending
            } else {
                Status::NotRun
            };
            let missing_scenarios = r
                .scenarios
                .iter()
                .filter(|n| !scenarios.iter().any(|s| &&s.name == n))
                .cloned()
                .collect();
            requirements.push(RequirementResult {
                id: r.id.clone(),
                principal: r.principal,
                title: r.title.clone(),
                text: r.text.clone(),
                evidence_kinds: r.evidence.clone(),
                status,
                passed,
                failed,
                pending,
                not_run,
                missing_scenarios,
            });
        }
        let mut unknown: Vec<String> = scenarios
            .iter()
            .flat_map(|s| s.requirements.iter())
            .filter(|id| catalog.requirement(id).is_none())
            .cloned()
            .collect();
        unknown.sort();
        unknown.dedup();
        let mut totals = Totals::default();
        for s in &scenarios {
            match s.status {
                Status::Passed => totals.passed += 1,
                Status::Failed => totals.failed += 1,
                Status::Pending => totals.pending += 1,
                Status::NotRun => totals.not_run += 1,
            }
        }
        Report {
            standard: catalog.standard.clone(),
            target,
            git_commit,
            tags,
            started_at,
            finished_at,
            requirements,
            scenarios,
            unknown_requirements: unknown,
            organisational: catalog.organisational.clone(),
            totals,
        }
    }

    /// Whether any non-pending scenario failed.
    pub fn failed(&self) -> bool {
        self.totals.failed > 0
    }

    /// The one-line summary (`N passed, N failed, N pending, N not run`).
    pub fn summary_line(&self) -> String {
        format!(
            "{} passed, {} failed, {} pending, {} not run",
            self.totals.passed, self.totals.failed, self.totals.pending, self.totals.not_run
        )
    }

    /// The requirement table as plain text for a terminal.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<10} {:<8} {:<58} scenarios (pass/fail/pending/not run)",
            "req", "result", "title"
        );
        for r in &self.requirements {
            let _ = writeln!(
                s,
                "{:<10} {:<8} {:<58} {}/{}/{}/{}",
                r.id,
                r.status.label(),
                truncate(&r.title, 58),
                r.passed,
                r.failed,
                r.pending,
                r.not_run
            );
        }
        s
    }

    /// Markdown for the assessor.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# {} compliance evidence report\n", self.standard);
        let _ = writeln!(s, "| | |\n|---|---|");
        let _ = writeln!(s, "| Target | {} |", md(&self.target));
        let _ = writeln!(s, "| Source revision | `{}` |", self.git_commit);
        let _ = writeln!(s, "| Started | {} |", self.started_at);
        let _ = writeln!(s, "| Finished | {} |", self.finished_at);
        let _ = writeln!(s, "| Tag filter | {} |", self.tags.as_deref().unwrap_or("(all)"));
        let _ = writeln!(s, "| Scenarios | {} |\n", self.summary_line());
        let _ = writeln!(
            s,
            "PENDING means the scenario is written but waits for a part of the system not built yet; it is never counted as passed.\n"
        );
        let _ = writeln!(s, "## Requirements\n");
        let _ = writeln!(
            s,
            "| Requirement | Title | Result | Passed | Failed | Pending | Not run | Evidence |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
        for r in &self.requirements {
            let _ = writeln!(
                s,
                "| {} | {} | **{}** | {} | {} | {} | {} | {} |",
                r.id,
                md(&r.title),
                r.status.label(),
                r.passed,
                r.failed,
                r.pending,
                r.not_run,
                r.evidence_kinds.join(", ")
            );
        }
        for r in &self.requirements {
            let _ = writeln!(s, "\n## {} {} — {}\n", r.id, md(&r.title), r.status.label());
            let _ = writeln!(s, "> {}\n", md(&r.text));
            for m in &r.missing_scenarios {
                let _ = writeln!(s, "- catalog names a scenario no feature defines: {}", md(m));
            }
            for sc in self.scenarios.iter().filter(|x| x.requirements.contains(&r.id)) {
                let _ = writeln!(
                    s,
                    "### {} — {}\n\n`{}:{}` · tags {} · finished {}{}\n",
                    md(&sc.name),
                    sc.status.label(),
                    sc.file,
                    sc.line,
                    sc.tags.iter().map(|t| format!("`@{t}`")).collect::<Vec<_>>().join(" "),
                    sc.finished_at.as_deref().unwrap_or("-"),
                    if sc.runs > 1 {
                        format!(" · {} of {} example rows passed", sc.passed_runs, sc.runs)
                    } else {
                        String::new()
                    }
                );
                if let Some(m) = &sc.message {
                    let _ = writeln!(s, "**{}:** {}\n", sc.status.label(), md(m));
                }
                if !sc.evidence.is_empty() {
                    let _ = writeln!(s, "Evidence:\n");
                    for e in &sc.evidence {
                        let _ = writeln!(s, "- {}", md(e));
                    }
                    let _ = writeln!(s);
                }
            }
        }
        if !self.unknown_requirements.is_empty() {
            let _ = writeln!(
                s,
                "\n## Scenario tags naming requirements not in the catalog\n\n{}\n",
                self.unknown_requirements.join(", ")
            );
        }
        let _ = writeln!(s, "\n## Out of software scope (organisational)\n");
        let _ = writeln!(s, "| Requirement | Title | Reason |\n|---|---|---|");
        for o in &self.organisational {
            let _ = writeln!(s, "| {} | {} | {} |", o.id, md(&o.title), md(&o.reason));
        }
        s
    }

    /// Self-contained HTML (inline CSS, no external resources).
    pub fn html(&self) -> String {
        let mut s = String::new();
        let _ = write!(
            s,
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} evidence report</title><style>\
body{{font-family:system-ui,sans-serif;margin:2em;max-width:75em;color:#222}}\
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}}\
.PASSED{{background:#d8f5d0}}.FAILED{{background:#f8d0d0}}.PENDING{{background:#fdf1c7}}.NOT_RUN{{background:#eee}}\
code{{background:#f4f4f4;padding:0 .2em}}details{{margin:.4em 0 .8em 1em}}li{{font-family:ui-monospace,monospace;font-size:.85em}}\
</style></head><body>",
            h(&self.standard)
        );
        let _ = write!(s, "<h1>{} compliance evidence report</h1><table>", h(&self.standard));
        for (k, v) in [
            ("Target", self.target.clone()),
            ("Source revision", self.git_commit.clone()),
            ("Started", self.started_at.clone()),
            ("Finished", self.finished_at.clone()),
            ("Tag filter", self.tags.clone().unwrap_or_else(|| "(all)".into())),
            ("Scenarios", self.summary_line()),
        ] {
            let _ = write!(s, "<tr><th>{}</th><td>{}</td></tr>", h(k), h(&v));
        }
        let _ = write!(
            s,
            "</table><p>PENDING means the scenario is written but waits for a part of the system not built yet; it is never counted as passed.</p><h2>Requirements</h2><table><tr><th>Requirement</th><th>Title</th><th>Result</th><th>Passed</th><th>Failed</th><th>Pending</th><th>Not run</th><th>Evidence</th></tr>"
        );
        for r in &self.requirements {
            let _ = write!(
                s,
                "<tr class=\"{}\"><td><a href=\"#r{}\">{}</a></td><td>{}</td><td><b>{}</b></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                r.status.label().replace(' ', "_"),
                h(&r.id),
                h(&r.id),
                h(&r.title),
                r.status.label(),
                r.passed,
                r.failed,
                r.pending,
                r.not_run,
                h(&r.evidence_kinds.join(", "))
            );
        }
        let _ = write!(s, "</table>");
        for r in &self.requirements {
            let _ = write!(
                s,
                "<h2 id=\"r{}\">{} {} — <span class=\"{}\">{}</span></h2><blockquote>{}</blockquote>",
                h(&r.id),
                h(&r.id),
                h(&r.title),
                r.status.label().replace(' ', "_"),
                r.status.label(),
                h(&r.text)
            );
            for sc in self.scenarios.iter().filter(|x| x.requirements.contains(&r.id)) {
                let _ = write!(
                    s,
                    "<h3 class=\"{}\">{} — {}</h3><p><code>{}:{}</code> · {} · finished {}</p>",
                    sc.status.label().replace(' ', "_"),
                    h(&sc.name),
                    sc.status.label(),
                    h(&sc.file),
                    sc.line,
                    h(&sc.tags.iter().map(|t| format!("@{t}")).collect::<Vec<_>>().join(" ")),
                    h(sc.finished_at.as_deref().unwrap_or("-"))
                );
                if let Some(m) = &sc.message {
                    let _ = write!(s, "<p><b>{}:</b> {}</p>", sc.status.label(), h(m));
                }
                if !sc.evidence.is_empty() {
                    let _ = write!(
                        s,
                        "<details open><summary>Evidence ({} items)</summary><ul>",
                        sc.evidence.len()
                    );
                    for e in &sc.evidence {
                        let _ = write!(s, "<li>{}</li>", h(e));
                    }
                    let _ = write!(s, "</ul></details>");
                }
            }
        }
        let _ = write!(
            s,
            "<h2>Out of software scope (organisational)</h2><table><tr><th>Requirement</th><th>Title</th><th>Reason</th></tr>"
        );
        for o in &self.organisational {
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                h(&o.id),
                h(&o.title),
                h(&o.reason)
            );
        }
        let _ = write!(s, "</table></body></html>");
        s
    }

    /// Writes `results.json`, `report.md` and `report.html` into `dir`.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(dir.join("results.json"), json)?;
        std::fs::write(dir.join("report.md"), self.markdown())?;
        std::fs::write(dir.join("report.html"), self.html())?;
        Ok(())
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

/// Escapes text for a Markdown table cell or line.
fn md(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ").replace('<', "&lt;")
}

/// Escapes text for HTML.
pub fn h(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '&' => o.push_str("&amp;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// UTC RFC 3339 of a system time (no time zone database needed).
pub fn rfc3339(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Names requirement ids in the tags of a scenario (re-exported for the runner).
pub fn ids(tags: &[String]) -> Vec<String> {
    requirement_ids(tags)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_764_534_896)),
            "2025-11-30T20:34:56Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(h("<script>&\"'"), "&lt;script&gt;&amp;&quot;&#39;");
    }

    fn scenario(name: &str, req: &str, status: Status) -> ScenarioResult {
        ScenarioResult {
            feature: "f".into(),
            file: "features/f.feature".into(),
            name: name.into(),
            line: 1,
            tags: vec![format!("pci-{req}")],
            requirements: vec![req.into()],
            status,
            message: None,
            evidence: vec![],
            finished_at: None,
            runs: 1,
            passed_runs: u32::from(status == Status::Passed),
        }
    }

    #[test]
    fn a_failed_scenario_fails_its_requirement_and_pending_never_passes() {
        let catalog: Catalog = serde_yaml_ng::from_str(
            "standard: PCI DSS v4.0\nrequirements:\n- {id: '3.4.1', principal: 3, title: t, text: x, evidence: [logs], scenarios: [a, b]}\n- {id: '10.3.2', principal: 10, title: t, text: x, evidence: [db], scenarios: [c]}\n- {id: '4.2.1', principal: 4, title: t, text: x, evidence: [tls], scenarios: [d]}\n",
        )
        .unwrap();
        let r = Report::build(
            &catalog,
            vec![
                scenario("a", "3.4.1", Status::Passed),
                scenario("b", "3.4.1", Status::Failed),
                scenario("c", "10.3.2", Status::Pending),
            ],
            "t".into(),
            "c".into(),
            None,
            "s".into(),
            "e".into(),
        );
        assert_eq!(r.requirements[0].status, Status::Failed);
        assert_eq!(r.requirements[1].status, Status::Pending);
        assert_eq!(r.requirements[2].status, Status::NotRun);
        assert_eq!(r.requirements[2].missing_scenarios, vec!["d".to_owned()]);
        assert!(r.failed());
        assert_eq!(r.summary_line(), "1 passed, 1 failed, 1 pending, 0 not run");
        assert!(r.markdown().contains("| 3.4.1 | t | **FAILED**"));
        assert!(r.html().contains("<b>FAILED</b>"));
    }
}
