//! The page shell (navigation, sign-out) and small pieces every page uses.

use maud::{DOCTYPE, Markup, html};

use super::session::Operator;

/// The navigation, in order: (path, label).
const NAV: [(&str, &str); 5] = [
    ("/ui/", "Overview"),
    ("/ui/events", "Events"),
    ("/ui/dead-letters", "Dead letters"),
    ("/ui/flows", "Flows"),
    ("/ui/objects", "Object timeline"),
];

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · xecm-bridge console" }
            link rel="stylesheet" href="/ui/assets/console.css";
            script src="/ui/assets/console.js" defer {}
        }
    }
}

/// A page of a signed-in operator; `current` is the path of the navigation entry to mark.
pub fn page(title: &str, operator: &Operator, current: &str, main: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    span.brand { "xecm-bridge console" }
                    nav aria-label="Main" {
                        ul {
                            @for (path, label) in NAV {
                                li {
                                    @if path == current {
                                        a href=(path) aria-current="page" { (label) }
                                    } @else {
                                        a href=(path) { (label) }
                                    }
                                }
                            }
                        }
                    }
                    form method="post" action="/ui/sign-out" {
                        (csrf_field(operator))
                        button type="submit" { "Sign out" }
                    }
                }
                main id="main" { (main) }
            }
        }
    }
}

/// A page without navigation (sign-in, errors).
pub fn bare(title: &str, main: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                main id="main" .narrow { (main) }
            }
        }
    }
}

/// The hidden CSRF field every form of the console carries.
pub fn csrf_field(operator: &Operator) -> Markup {
    html! { input type="hidden" name="csrf" value=(operator.csrf); }
}

/// A unix-ms instant as UTC, machine-readable in `datetime`.
pub fn time(millis: i64) -> Markup {
    match chrono::DateTime::from_timestamp_millis(millis) {
        Some(t) => html! {
            time datetime=(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)) {
                (t.format("%Y-%m-%d %H:%M:%S UTC"))
            }
        },
        None => html! { "—" },
    }
}

/// A duration in ms as a short phrase ("3 min 12 s").
pub fn duration(millis: i64) -> String {
    let secs = millis.max(0) / 1000;
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min {} s", secs / 60, secs % 60),
        _ => format!("{} h {} min", secs / 3600, (secs % 3600) / 60),
    }
}

/// A state as a word with a marker that does not rely on colour alone.
pub fn state(state: &str) -> Markup {
    let mark = match state {
        "done" => "✓",
        "dead" => "✗",
        "ignored" => "–",
        "running" => "▶",
        _ => "…",
    };
    html! { span class={"state state-" (state)} { span aria-hidden="true" { (mark) " " } (state) } }
}

/// The timeline link of a business object key (`module/id`), or the key as text.
pub fn object(key: Option<&str>) -> Markup {
    match key.and_then(|k| k.split_once('/')) {
        Some((module, id)) if !module.is_empty() && !id.is_empty() && !id.contains('/') => html! {
            a href=(object_path(module, id)) { (module) "/" (id) }
        },
        _ => html! { (key.unwrap_or("—")) },
    }
}

/// The console path of an object's timeline.
pub fn object_path(module: &str, id: &str) -> String {
    format!("/ui/objects/{}/{}", segment(module), segment(id))
}

/// A URL query or path segment, percent-encoded.
pub fn segment(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// A query string from pairs, leaving out empty values.
pub fn query(pairs: &[(&str, Option<&str>)]) -> String {
    let mut serializer = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            serializer.append_pair(name, value);
        }
    }
    serializer.finish()
}

/// JSON, indented for reading.
pub fn json(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_words() {
        assert_eq!(duration(1_500), "1 s");
        assert_eq!(duration(192_000), "3 min 12 s");
        assert_eq!(duration(7_260_000), "2 h 1 min");
    }

    #[test]
    fn object_keys_link_to_their_timeline() {
        let html = object(Some("product/a b")).into_string();
        assert!(
            html.contains(r#"href="/ui/objects/product/a%20b""#),
            "{html}"
        );
        assert_eq!(object(Some("event/x/y")).into_string(), "event/x/y");
    }
}
