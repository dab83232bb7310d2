//! The one parameter extractor of the compatibility surfaces: a POST body as JSON or as a form.
//!
//! The seed backends ran on Twilio Functions, which accept `application/json` and
//! `application/x-www-form-urlencoded` alike, so clients send either. [`Params`] reads the body by
//! its `Content-Type` (without one: JSON when it looks like a JSON object, a form otherwise) into
//! one flat map, and its typed getters name the parameter that is missing or malformed. Each
//! surface wraps it in its own extractor that maps [`ParamsError`] into the surface's error shape.

use axum::extract::Request;
use axum::http::header::CONTENT_TYPE;
use serde_json::{Map, Value};

/// Largest body a compatibility surface reads.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Why the parameters could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    #[error("the request body is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error("the request body is not {0}")]
    Malformed(&'static str),
    #[error("missing {0}")]
    Missing(String),
    #[error("{name} {reason}")]
    Invalid { name: String, reason: String },
}

impl ParamsError {
    pub fn invalid(name: &str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            name: name.to_owned(),
            reason: reason.into(),
        }
    }
}

/// The request's parameters, from a JSON object body or a form body (empty body: none).
#[derive(Clone, Debug, Default)]
pub struct Params(Map<String, Value>);

impl Params {
    /// Parses a body given its `Content-Type` (if any).
    pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Self, ParamsError> {
        let media = content_type.map(|c| {
            c.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        });
        let trimmed = body.trim_ascii();
        if trimmed.is_empty() {
            return Ok(Self::default());
        }
        let json = match media.as_deref() {
            Some("application/json") => true,
            Some(m) if m.ends_with("+json") => true,
            Some("application/x-www-form-urlencoded") => false,
            _ => trimmed.starts_with(b"{"),
        };
        if json {
            match serde_json::from_slice::<Value>(trimmed) {
                Ok(Value::Object(map)) => Ok(Self(map)),
                _ => Err(ParamsError::Malformed("a JSON object")),
            }
        } else {
            let mut map = Map::new();
            for (key, value) in url::form_urlencoded::parse(trimmed) {
                map.insert(key.into_owned(), Value::String(value.into_owned()));
            }
            Ok(Self(map))
        }
    }

    /// A parameter as text (numbers and booleans as written); empty text counts as absent.
    pub fn text(&self, name: &str) -> Result<Option<String>, ParamsError> {
        let text = match self.0.get(name) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(s)) => s.trim().to_owned(),
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::Bool(b)) => b.to_string(),
            Some(_) => return Err(ParamsError::invalid(name, "must be a string")),
        };
        Ok((!text.is_empty()).then_some(text))
    }

    /// A required text parameter (`missing <name>` when absent or empty).
    pub fn required(&self, name: &str) -> Result<String, ParamsError> {
        self.text(name)?
            .ok_or_else(|| ParamsError::Missing(name.to_owned()))
    }

    /// A boolean: JSON `true`/`false`, or the text `true`/`false`/`1`/`0` (forms).
    pub fn boolean(&self, name: &str) -> Result<Option<bool>, ParamsError> {
        if let Some(Value::Bool(b)) = self.0.get(name) {
            return Ok(Some(*b));
        }
        match self.text(name)?.map(|t| t.to_ascii_lowercase()).as_deref() {
            None => Ok(None),
            Some("true" | "1") => Ok(Some(true)),
            Some("false" | "0") => Ok(Some(false)),
            Some(_) => Err(ParamsError::invalid(name, "must be true or false")),
        }
    }

    /// An integer: a JSON number or its text.
    pub fn integer(&self, name: &str) -> Result<Option<i64>, ParamsError> {
        match self.text(name)? {
            None => Ok(None),
            Some(t) => t
                .parse::<i64>()
                .map(Some)
                .map_err(|_| ParamsError::invalid(name, "must be an integer")),
        }
    }
}

impl Params {
    /// Parameters from a URL query string (`a=1&b=x`).
    pub fn from_query(query: &str) -> Self {
        let mut map = Map::new();
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            map.insert(key.into_owned(), Value::String(value.into_owned()));
        }
        Self(map)
    }

    /// These parameters, with those of `fallback` that are not here (PHP's `$_REQUEST`: the body
    /// wins over the query string).
    pub fn or(mut self, fallback: Params) -> Self {
        for (key, value) in fallback.0 {
            self.0.entry(key).or_insert(value);
        }
        self
    }

    /// Reads a request's body (each surface's extractor calls this and maps the error).
    pub async fn from_body(request: Request) -> Result<Self, ParamsError> {
        let content_type = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = axum::body::to_bytes(request.into_body(), MAX_BODY_BYTES)
            .await
            .map_err(|_| ParamsError::TooLarge)?;
        Self::parse(content_type.as_deref(), &body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_form_read_alike() {
        let json = Params::parse(
            Some("application/json"),
            br#"{"a": "x", "n": 5, "b": true}"#,
        )
        .unwrap();
        let form = Params::parse(
            Some("application/x-www-form-urlencoded; charset=utf-8"),
            b"a=x&n=5&b=true",
        )
        .unwrap();
        for p in [json, form] {
            assert_eq!(p.required("a").unwrap(), "x");
            assert_eq!(p.integer("n").unwrap(), Some(5));
            assert_eq!(p.boolean("b").unwrap(), Some(true));
            assert_eq!(
                p.required("c").unwrap_err(),
                ParamsError::Missing("c".into())
            );
        }
    }

    #[test]
    fn query_parameters_fill_in_what_the_body_lacks() {
        let body = Params::parse(
            Some("application/x-www-form-urlencoded"),
            b"op=login&name=Body",
        )
        .unwrap();
        let merged = body.or(Params::from_query("op=setgroup&email=a%40b.com&name=Query"));
        assert_eq!(merged.required("op").unwrap(), "login");
        assert_eq!(merged.required("name").unwrap(), "Body");
        assert_eq!(merged.required("email").unwrap(), "a@b.com");
    }

    #[test]
    fn bodies_without_a_type_are_sniffed_and_bad_ones_refused() {
        assert_eq!(
            Params::parse(None, br#"{"a":"1"}"#)
                .unwrap()
                .required("a")
                .unwrap(),
            "1"
        );
        assert_eq!(
            Params::parse(None, b"a=1").unwrap().required("a").unwrap(),
            "1"
        );
        assert!(
            Params::parse(None, b"")
                .unwrap()
                .text("a")
                .unwrap()
                .is_none()
        );
        assert_eq!(
            Params::parse(Some("application/json"), b"[1]").unwrap_err(),
            ParamsError::Malformed("a JSON object")
        );
        let p = Params::parse(Some("application/x-www-form-urlencoded"), b"a=&b=maybe").unwrap();
        assert_eq!(
            p.required("a").unwrap_err(),
            ParamsError::Missing("a".into())
        );
        assert!(matches!(
            p.boolean("b").unwrap_err(),
            ParamsError::Invalid { .. }
        ));
    }
}
