//! Name patterns such as `"Launch {name@en_US} ({article_number})"`: literal text with field
//! references in braces; `{{` and `}}` are literal braces.

use super::fields::{FieldRef, Scope};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(FieldRef),
}

/// A parsed pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    source: String,
    parts: Vec<Part>,
}

impl Pattern {
    pub fn parse(source: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut chars = source.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    text.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some('{') | None => {
                                return Err(format!("`{source}`: unclosed `{{`"));
                            }
                            Some(ch) => name.push(ch),
                        }
                    }
                    if !text.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut text)));
                    }
                    parts.push(Part::Field(
                        FieldRef::parse(&name).map_err(|e| format!("`{source}`: {e}"))?,
                    ));
                }
                '}' => return Err(format!("`{source}`: unmatched `}}`")),
                other => text.push(other),
            }
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Self {
            source: source.to_string(),
            parts,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The field references used.
    pub fn fields(&self) -> impl Iterator<Item = &FieldRef> {
        self.parts.iter().filter_map(|p| match p {
            Part::Field(f) => Some(f),
            Part::Text(_) => None,
        })
    }

    /// Renders the pattern; a referenced field without a value is an error naming it, so that
    /// a workspace is never created under a half-empty name.
    pub fn render(&self, scope: &Scope<'_>) -> Result<String, String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Field(f) => match scope.text(f) {
                    Some(v) => out.push_str(&v),
                    None => {
                        return Err(format!(
                            "pattern `{}`: field `{}` has no value",
                            self.source, f.field
                        ));
                    }
                },
            }
        }
        Ok(out)
    }

    /// [`Self::render`], made safe as an OpenText node name: `:` is not allowed in names, and
    /// names are limited to 248 characters.
    pub fn render_name(&self, scope: &Scope<'_>) -> Result<String, String> {
        Ok(node_name(&self.render(scope)?))
    }
}

/// A string made safe as a Content Server node name.
pub fn node_name(raw: &str) -> String {
    let cleaned: String = raw
        .chars()
        .map(|c| if c == ':' || c.is_control() { '-' } else { c })
        .collect();
    cleaned.trim().chars().take(248).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clients::allportal::ModuleObject;
    use serde_json::json;

    #[test]
    fn renders_fields_and_escaped_braces() {
        let p: ModuleObject = serde_json::from_value(json!({
            "id": "p1",
            "name": [{"value": "Pump A100", "dimensions": {"locale": "en_US"}}],
            "article_number": [{"value": "4711", "dimensions": null}]
        }))
        .unwrap();
        let pattern = Pattern::parse("Launch {name@en_US} ({article_number}) {{x}}").unwrap();
        assert_eq!(
            pattern.render(&Scope::of(&p)).unwrap(),
            "Launch Pump A100 (4711) {x}"
        );
        assert_eq!(pattern.fields().count(), 2);
        let missing = Pattern::parse("{description@fr_FR}").unwrap();
        assert!(
            missing
                .render(&Scope::of(&p))
                .unwrap_err()
                .contains("description")
        );
        assert!(Pattern::parse("a {b").is_err());
        assert!(Pattern::parse("a } b").is_err());
        assert_eq!(node_name("Change: a"), "Change- a");
    }
}
