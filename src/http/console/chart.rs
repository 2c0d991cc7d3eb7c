//! The overview's chart of events per minute, drawn on the server as SVG: no script, no
//! external library, readable as text too (title, description and a summary line).

use maud::{Markup, html};

use crate::store::MinuteCount;

const WIDTH: i64 = 600;
const HEIGHT: i64 = 120;
const BAR: i64 = WIDTH / 60;

/// Bars for the 60 minutes ending at `now` (the current minute last); minutes without events
/// are empty.
pub fn events_per_minute(counts: &[MinuteCount], now: i64) -> Markup {
    let current = now / 60_000 * 60_000;
    let slots: Vec<i64> = (0..60)
        .map(|i| {
            let minute = current - (59 - i) * 60_000;
            counts
                .iter()
                .find(|c| c.minute == minute)
                .map_or(0, |c| c.events)
        })
        .collect();
    let total: i64 = slots.iter().sum();
    let peak = slots.iter().copied().max().unwrap_or(0);
    let scale = peak.max(1);
    let plural = |n: i64| if n == 1 { "event" } else { "events" };
    let summary = format!(
        "{total} {} in the last hour; at most {peak} in one minute.",
        plural(total)
    );
    html! {
        figure.chart {
            svg role="img" aria-labelledby="chart-title chart-desc" viewBox=(format!("0 0 {WIDTH} {}", HEIGHT + 16)) {
                title id="chart-title" { "Events per minute, last hour" }
                desc id="chart-desc" { (summary) }
                line x1="0" y1=(HEIGHT) x2=(WIDTH) y2=(HEIGHT) stroke="currentColor" stroke-width="1" {}
                @for (i, count) in slots.iter().enumerate() {
                    @if *count > 0 {
                        @let height = (count * (HEIGHT - 4) / scale).max(2);
                        rect x=(i as i64 * BAR + 1) y=(HEIGHT - height) width=(BAR - 2) height=(height)
                            fill="currentColor" {
                            title { (count) " events, " (59 - i) " min ago" }
                        }
                    }
                }
                text x="0" y=(HEIGHT + 14) font-size="11" fill="currentColor" { "60 min ago" }
                text x=(WIDTH) y=(HEIGHT + 14) font-size="11" fill="currentColor" text-anchor="end" { "now" }
            }
            figcaption { (summary) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_bar_per_minute_with_events() {
        let now = 1_800_000_000_000;
        let minute = now / 60_000 * 60_000;
        let counts = [
            MinuteCount { minute, events: 4 },
            MinuteCount {
                minute: minute - 5 * 60_000,
                events: 2,
            },
            // Older than the hour: not drawn.
            MinuteCount {
                minute: minute - 61 * 60_000,
                events: 9,
            },
        ];
        let svg = events_per_minute(&counts, now).into_string();
        assert_eq!(svg.matches("<rect").count(), 2, "{svg}");
        assert!(svg.contains("6 events in the last hour; at most 4 in one minute."));
    }
}
