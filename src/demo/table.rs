//! The summary table: one row per flow, plain text (no colour codes), columns sized to fit.

use std::collections::BTreeMap;

use super::stats::FlowWork;
use super::verify::FlowResult;

const HEADERS: [&str; 8] = [
    "flow",
    "object",
    "workspace (id \"name\")",
    "docs",
    "versions",
    "write-backs",
    "attempts",
    "time",
];

/// Renders the table; a flow with more than one workspace gets one line per workspace.
pub fn render(results: &[FlowResult], work: &BTreeMap<String, FlowWork>) -> String {
    let mut rows: Vec<[String; 8]> = Vec::new();
    for result in results {
        let done = work.get(result.flow).copied().unwrap_or_default();
        let mark = if result.passed() { "✓" } else { "✗" };
        let mut workspaces = result.workspaces.iter();
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
        ]);
        for more in workspaces {
            let mut row: [String; 8] = Default::default();
            row[2] = more.clone();
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

fn line(out: &mut String, cells: &[String; 8], widths: &[usize; 8]) {
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
