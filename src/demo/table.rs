//! The summary table: one row per flow, plain text (no colour codes), columns sized to fit.

use std::collections::BTreeMap;

use super::stats::FlowWork;
use super::verify::FlowResult;

const COLUMNS: usize = 9;

const HEADERS: [&str; COLUMNS] = [
    "flow",
    "object",
    "workspace (id \"name\")",
    "docs",
    "versions",
    "write-backs",
    "attempts",
    "time",
    "team (role: members)",
];

/// Renders the table; a flow with more than one workspace gets one line per workspace, each
/// with that workspace's team.
pub fn render(results: &[FlowResult], work: &BTreeMap<String, FlowWork>) -> String {
    let mut rows: Vec<[String; COLUMNS]> = Vec::new();
    for result in results {
        let done = work.get(result.flow).copied().unwrap_or_default();
        let mark = if result.passed() { "✓" } else { "✗" };
        let mut workspaces = result.workspaces.iter();
        let mut teams = result.teams.iter();
        rows.push([
            format!("{mark} {}", result.flow),
            result.object.clone(),
            workspaces
                .next()
                .cloned()
                .unwrap_or_else(|| "(none)".into()),
            result.documents.to_string(),
            result.versions.to_string(),
            result.writebacks.clone(),
            done.attempts.to_string(),
            format!("{} ms", done.millis),
            teams.next().cloned().unwrap_or_default(),
        ]);
        for more in workspaces {
            let mut row: [String; COLUMNS] = Default::default();
            row[2] = more.clone();
            row[8] = teams.next().cloned().unwrap_or_default();
            rows.push(row);
        }
    }
    let mut widths = HEADERS.map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    line(&mut out, &HEADERS.map(String::from), &widths);
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    out.push_str(&rule.join("-+-"));
    out.push('\n');
    for row in &rows {
        line(&mut out, row, &widths);
    }
    out
}

fn line(out: &mut String, cells: &[String; COLUMNS], widths: &[usize; COLUMNS]) {
    let padded: Vec<String> = cells
        .iter()
        .zip(widths)
        .map(|(cell, width)| {
            let pad = width - cell.chars().count();
            format!("{cell}{}", " ".repeat(pad))
        })
        .collect();
    out.push_str(padded.join(" | ").trim_end());
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(flow: &'static str, workspaces: &[&str], failure: Option<&str>) -> FlowResult {
        FlowResult {
            flow,
            object: format!("object of {flow}"),
            workspaces: workspaces.iter().map(|w| w.to_string()).collect(),
            teams: workspaces
                .iter()
                .enumerate()
                .map(|(i, _)| format!("Partners: group{i}"))
                .collect(),
            documents: 3,
            versions: 4,
            writebacks: "-".into(),
            failures: failure.into_iter().map(String::from).collect(),
        }
    }

    #[test]
    fn rows_are_aligned_marked_and_continued_for_extra_workspaces() {
        let results = [
            result("partner", &["1 \"A\"", "2 \"a much longer name\""], None),
            result("launch", &[], Some("no workspace")),
        ];
        let work = BTreeMap::from([(
            "partner".to_string(),
            FlowWork {
                attempts: 2,
                millis: 31,
            },
        )]);
        let text = render(&results, &work);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(lines[2].starts_with("✓ partner"), "{text}");
        assert!(lines[2].contains("| 2        | 31 ms"), "{text}");
        assert!(lines[2].ends_with("| Partners: group0"), "{text}");
        assert!(lines[3].trim_start().starts_with("|"), "{text}");
        assert!(lines[3].contains("2 \"a much longer name\""), "{text}");
        assert!(lines[3].ends_with("| Partners: group1"), "{text}");
        assert!(lines[4].starts_with("✗ launch"), "{text}");
        assert!(
            lines[4].contains("(none)") && lines[4].contains("| 0 ms"),
            "{text}"
        );
        // Every separator sits in the same column on every line.
        let bars = |line: &str| -> Vec<usize> {
            line.chars()
                .enumerate()
                .filter(|(_, c)| *c == '|' || *c == '+')
                .map(|(i, _)| i)
                .collect()
        };
        let header = bars(lines[0]);
        for line in &lines[1..4] {
            assert_eq!(bars(line), header, "{text}");
        }
    }
}
