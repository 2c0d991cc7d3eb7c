//! A small 4APQL subset for `GET …/objects?query=`: comparisons `field OP 'value'` with
//! `= != < <= > >= LIKE`, `field IN ('a','b')`, combined with `AND` / `OR` and parentheses.
//! Times (`mod_time`, `created_time`) compare as instants; everything else as strings, and a
//! comparison holds when any value of the field satisfies it.

use chrono::{DateTime, Utc};

use super::model::Object;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Compare {
        field: String,
        op: Op,
        value: String,
    },
    In {
        field: String,
        values: Vec<String>,
        negated: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Like,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    Op(String),
    LParen,
    RParen,
    Comma,
}

fn tokenize(input: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = input.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                tokens.push(Token::LParen);
                i += 1;
            }
            ')' => {
                tokens.push(Token::RParen);
                i += 1;
            }
            ',' => {
                tokens.push(Token::Comma);
                i += 1;
            }
            '\'' | '"' => {
                let quote = c;
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err("unterminated string in query".into()),
                        // A doubled quote stands for one quote character.
                        Some(&q) if q == quote && chars.get(i + 1) == Some(&quote) => {
                            s.push(quote);
                            i += 2;
                        }
                        Some(&q) if q == quote => {
                            i += 1;
                            break;
                        }
                        Some(&other) => {
                            s.push(other);
                            i += 1;
                        }
                    }
                }
                tokens.push(Token::Str(s));
            }
            '=' | '!' | '<' | '>' => {
                let mut op = c.to_string();
                if chars.get(i + 1) == Some(&'=') || (c == '<' && chars.get(i + 1) == Some(&'>')) {
                    op.push(chars[i + 1]);
                    i += 1;
                }
                tokens.push(Token::Op(op));
                i += 1;
            }
            c if c.is_alphanumeric() || c == '_' || c == '.' || c == '-' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '.' | '-' | ':'))
                {
                    i += 1;
                }
                tokens.push(Token::Ident(chars[start..i].iter().collect()));
            }
            other => return Err(format!("unexpected character '{other}' in query")),
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek_keyword(&self, kw: &str) -> bool {
        matches!(self.tokens.get(self.pos), Some(Token::Ident(s)) if s.eq_ignore_ascii_case(kw))
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.peek_keyword("or") {
            self.pos += 1;
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.primary()?;
        while self.peek_keyword("and") {
            self.pos += 1;
            left = Expr::And(Box::new(left), Box::new(self.primary()?));
        }
        Ok(left)
    }

    fn primary(&mut self) -> Result<Expr, String> {
        match self.next() {
            Some(Token::LParen) => {
                let inner = self.or()?;
                match self.next() {
                    Some(Token::RParen) => Ok(inner),
                    _ => Err("missing ')' in query".into()),
                }
            }
            Some(Token::Ident(field)) => self.condition(field),
            other => Err(format!("expected a field name in query, found {other:?}")),
        }
    }

    fn condition(&mut self, field: String) -> Result<Expr, String> {
        let negated = self.peek_keyword("not");
        if negated {
            self.pos += 1;
        }
        if self.peek_keyword("in") {
            self.pos += 1;
            return Ok(Expr::In {
                field,
                values: self.list()?,
                negated,
            });
        }
        let op = match self.next() {
            Some(Token::Op(op)) if !negated => match op.as_str() {
                "=" => Op::Eq,
                "!=" | "<>" => Op::Ne,
                "<" => Op::Lt,
                "<=" => Op::Le,
                ">" => Op::Gt,
                ">=" => Op::Ge,
                _ => return Err(format!("unknown operator '{op}'")),
            },
            Some(Token::Ident(kw)) if kw.eq_ignore_ascii_case("like") && !negated => Op::Like,
            other => {
                return Err(format!(
                    "expected an operator after '{field}', found {other:?}"
                ));
            }
        };
        let value = match self.next() {
            Some(Token::Str(s)) | Some(Token::Ident(s)) => s,
            other => return Err(format!("expected a value after '{field}', found {other:?}")),
        };
        Ok(Expr::Compare { field, op, value })
    }

    fn list(&mut self) -> Result<Vec<String>, String> {
        if self.next() != Some(Token::LParen) {
            return Err("expected '(' after IN".into());
        }
        let mut values = Vec::new();
        loop {
            match self.next() {
                Some(Token::Str(s)) | Some(Token::Ident(s)) => values.push(s),
                other => return Err(format!("expected a value in IN list, found {other:?}")),
            }
            match self.next() {
                Some(Token::Comma) => continue,
                Some(Token::RParen) => return Ok(values),
                other => return Err(format!("expected ',' or ')' in IN list, found {other:?}")),
            }
        }
    }
}

/// Parses a query; an error message suits a 400 answer.
pub(crate) fn parse(input: &str) -> Result<Expr, String> {
    let mut parser = Parser {
        tokens: tokenize(input)?,
        pos: 0,
    };
    let expr = parser.or()?;
    if parser.pos < parser.tokens.len() {
        return Err(format!(
            "unexpected {:?} in query",
            parser.tokens[parser.pos]
        ));
    }
    Ok(expr)
}

fn is_time_field(field: &str) -> bool {
    field.ends_with("_time") || field.ends_with("_date")
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn like(value: &str, pattern: &str) -> bool {
    // `%` matches any run of characters, `_` one character.
    fn matches(v: &[char], p: &[char]) -> bool {
        match p.first() {
            None => v.is_empty(),
            Some('%') => (0..=v.len()).any(|i| matches(&v[i..], &p[1..])),
            Some('_') => !v.is_empty() && matches(&v[1..], &p[1..]),
            Some(c) => v.first() == Some(c) && matches(&v[1..], &p[1..]),
        }
    }
    let v: Vec<char> = value.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    matches(&v, &p)
}

fn compare(field: &str, actual: &str, op: Op, expected: &str) -> bool {
    let ordering = if is_time_field(field) {
        match (parse_time(actual), parse_time(expected)) {
            (Some(a), Some(b)) => a.cmp(&b),
            _ => actual.cmp(expected),
        }
    } else {
        actual.cmp(expected)
    };
    use std::cmp::Ordering::*;
    match op {
        Op::Eq => ordering == Equal,
        Op::Ne => ordering != Equal,
        Op::Lt => ordering == Less,
        Op::Le => ordering != Greater,
        Op::Gt => ordering == Greater,
        Op::Ge => ordering != Less,
        Op::Like => like(actual, expected),
    }
}

/// Whether an object satisfies the expression.
pub(crate) fn matches(expr: &Expr, object: &Object) -> bool {
    match expr {
        Expr::And(a, b) => matches(a, object) && matches(b, object),
        Expr::Or(a, b) => matches(a, object) || matches(b, object),
        Expr::Compare { field, op, value } => {
            let actual = object.field_strings(field);
            if *op == Op::Ne {
                return actual.iter().all(|a| compare(field, a, Op::Ne, value));
            }
            actual.iter().any(|a| compare(field, a, *op, value))
        }
        Expr::In {
            field,
            values,
            negated,
        } => {
            let hit = object
                .field_strings(field)
                .iter()
                .any(|a| values.iter().any(|v| v == a));
            hit != *negated
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_or_in_and_time_comparisons() {
        let e = parse(
            "status = 'launch_ready' AND (mod_time > '2024-01-01T00:00:00Z' OR id IN ('a','b'))",
        )
        .unwrap();
        assert!(matches!(e, Expr::And(_, _)));
        assert!(parse("status = ").is_err());
        assert!(parse("status = 'x' garbage").is_err());
    }

    #[test]
    fn time_comparison_uses_instants_not_strings() {
        assert!(compare(
            "mod_time",
            "2024-01-01T10:00:00.500Z",
            Op::Gt,
            "2024-01-01T10:00:00Z"
        ));
        assert!(like("image/png", "image/%"));
        assert!(!like("text/csv", "image/%"));
    }
}
