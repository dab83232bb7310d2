//! The one parameter extractor of the compatibility surfaces: a POST body as JSON or as a form.
//!
//! The seed backends ran on Twilio Functions, which accept `application/json` and
//! `application/x-www-form-urlencoded` alike, so clients send either. [`Params`] reads the body by
//! its `Content-Type` (without one: JSON when it looks like a JSON object, a form otherwise) into
//! one flat map, and its typed getters name the parameter that is missing or malformed. A surface
//! takes them with [`Form`], which answers a [`ParamsError`] in the surface's own error shape.

use std::marker::PhantomData;

use axum::extract::{FromRequest, Request};
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
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
    /// A form or query string whose text, once percent-decoded, is not UTF-8.
    #[error("{0} is not UTF-8 text")]
    NotUtf8(String),
}

impl ParamsError {
    pub fn invalid(name: &str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            name: name.to_owned(),
            reason: reason.into(),
        }
    }
}

/// The extractor of a surface's parameters: the request body as [`Params`], a failure answered
/// as the surface's error `E` (each surface names it once, `type Form = params::Form<ItsError>`).
pub struct Form<E> {
    pub params: Params,
    error: PhantomData<fn() -> E>,
}

impl<S, E> FromRequest<S> for Form<E>
where
    S: Send + Sync,
    E: From<ParamsError> + IntoResponse,
{
    type Rejection = E;

    async fn from_request(request: Request, _state: &S) -> Result<Self, E> {
        Ok(Self {
            params: Params::from_body(request).await?,
            error: PhantomData,
        })
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
            form(trimmed)
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
    pub fn from_query(query: &str) -> Result<Self, ParamsError> {
        form(query.as_bytes())
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

/// An `application/x-www-form-urlencoded` text (a body or a query string) into parameters (the
/// last of repeated names wins). Unlike `url::form_urlencoded::parse`, which replaces what is not
/// UTF-8 with U+FFFD, text that is not UTF-8 once percent-decoded is refused, so a parameter never
/// means something other than what was sent.
fn form(input: &[u8]) -> Result<Params, ParamsError> {
    let mut map = Map::new();
    for pair in input.split(|b| *b == b'&').filter(|pair| !pair.is_empty()) {
        let (name, value) = match pair.iter().position(|b| *b == b'=') {
            Some(at) => (&pair[..at], &pair[at + 1..]),
            None => (pair, &b""[..]),
        };
        let name =
            form_text(name).ok_or_else(|| ParamsError::NotUtf8("a parameter name".into()))?;
        let value = form_text(value).ok_or_else(|| ParamsError::NotUtf8(name.clone()))?;
        map.insert(name, Value::String(value));
    }
    Ok(Params(map))
}

/// One form-encoded name or value: `+` is a space, `%XX` a byte; `None` when not UTF-8.
fn form_text(raw: &[u8]) -> Option<String> {
    let spaced: Vec<u8> = raw
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    percent_encoding::percent_decode(&spaced)
        .decode_utf8()
        .ok()
        .map(|text| text.into_owned())
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
        let merged = body.or(Params::from_query("op=setgroup&email=a%40b.com&name=Query").unwrap());
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

    #[test]
    fn forms_and_queries_that_are_not_utf8_are_refused() {
        let form = Some("application/x-www-form-urlencoded");
        assert_eq!(
            Params::parse(form, b"email=%ff@x.com").unwrap_err(),
            ParamsError::NotUtf8("email".into())
        );
        assert_eq!(
            Params::parse(form, b"email=\xff@x.com").unwrap_err(),
            ParamsError::NotUtf8("email".into())
        );
        assert_eq!(
            Params::parse(None, b"%c3%28=1").unwrap_err(),
            ParamsError::NotUtf8("a parameter name".into())
        );
        assert_eq!(
            Params::from_query("op=login&name=%e2%82").unwrap_err(),
            ParamsError::NotUtf8("name".into())
        );
        assert_eq!(
            Params::parse(Some("application/json"), b"{\"a\": \"\xff\"}").unwrap_err(),
            ParamsError::Malformed("a JSON object")
        );
        // UTF-8, plus signs, percent signs that encode nothing and bare names read as sent.
        let ok = Params::parse(form, b"name=J%C3%BCrgen+M&note=100%&flag&a=1&a=2").unwrap();
        assert_eq!(ok.required("name").unwrap(), "Jürgen M");
        assert_eq!(ok.required("note").unwrap(), "100%");
        assert_eq!(ok.text("flag").unwrap(), None);
        assert_eq!(ok.required("a").unwrap(), "2");
    }
}
