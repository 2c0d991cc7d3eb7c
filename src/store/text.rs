//! A lossless escape for text the store keeps in text columns.
//!
//! PostgreSQL's `text` cannot hold NUL, yet NUL is valid in a JSON string, so an event's ids
//! and module may contain it. Both stores therefore keep such text escaped: NUL becomes
//! DLE `0` and DLE (U+0010, "data link escape") becomes DLE DLE. Text without either
//! character, which is all text in practice, is stored unchanged; the escape maps characters
//! one by one, so equality and prefixes of escaped text are those of the original.

use std::borrow::Cow;

const DLE: char = '\u{10}';

/// The form kept in the database.
pub(crate) fn escape(text: &str) -> Cow<'_, str> {
    if !text.contains(['\0', DLE]) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 2);
    for c in text.chars() {
        match c {
            '\0' => out.extend([DLE, '0']),
            DLE => out.extend([DLE, DLE]),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// The original of an escaped text.
pub(crate) fn unescape(text: String) -> String {
    if !text.contains(DLE) {
        return text;
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != DLE {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('0') => out.push('\0'),
            // DLE DLE; anything else was not written by `escape` and is kept as it is.
            Some(DLE) | None => out.push(DLE),
            Some(other) => out.extend([DLE, other]),
        }
    }
    out
}

/// [`unescape`] for optional columns.
pub(crate) fn unescape_opt(text: Option<String>) -> Option<String> {
    text.map(unescape)
}

/// [`escape`] for every string (and object key) of a JSON value kept in a JSON column:
/// PostgreSQL's `jsonb` rejects `\u0000` as well.
pub(crate) fn escape_json(value: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(text) => Value::String(escape(text).into_owned()),
        Value::Array(items) => Value::Array(items.iter().map(escape_json).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, item)| (escape(key).into_owned(), escape_json(item)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The original of a value written by [`escape_json`].
pub(crate) fn unescape_json(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(text) => Value::String(unescape(text)),
        Value::Array(items) => Value::Array(items.into_iter().map(unescape_json).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(key, item)| (unescape(key), unescape_json(item)))
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn ordinary_text_is_kept_as_is() {
        assert!(matches!(
            escape("product/4711"),
            Cow::Borrowed("product/4711")
        ));
        assert_eq!(escape("a\0b\u{10}c"), "a\u{10}0b\u{10}\u{10}c");
    }

    proptest! {
        #[test]
        fn escaping_round_trips_and_holds_no_nul(text in ".*", tail in ".*") {
            let escaped = escape(&text);
            prop_assert!(!escaped.contains('\0'));
            prop_assert_eq!(unescape(escaped.to_string()), text.clone());
            // Character by character: a prefix of the original is a prefix of the escaped.
            let whole = format!("{text}{tail}");
            prop_assert!(escape(&whole).starts_with(&*escaped));
        }

        #[test]
        fn json_escaping_round_trips_and_holds_no_nul(key in ".*", text in ".*", n in any::<i64>()) {
            let value = serde_json::json!({ key.clone(): [text.clone(), n, { "k": text }], "n": null });
            let escaped = escape_json(&value);
            prop_assert!(!escaped.to_string().contains("\\u0000"));
            prop_assert_eq!(unescape_json(escaped), value);
        }
    }
}
