//! Registry authentication: `WWW-Authenticate` challenges (RFC 7235 syntax; the Bearer
//! parameters `realm`, `service`, `scope` of RFC 6750 and the distribution token spec), Basic
//! credentials, and the token endpoint's answer (`token` or `access_token`). Pure: the client
//! decides where a credential may be sent.

use std::collections::BTreeMap;

use base64::Engine as _;
use zeroize::Zeroizing;

/// A username and password; the password is wiped when dropped and never printed.
pub struct Credentials {
    pub username: String,
    pub password: Zeroizing<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// `Basic base64(user:password)`.
    pub fn basic(&self) -> Zeroizing<String> {
        let mut plain = Zeroizing::new(String::with_capacity(
            self.username.len() + self.password.len() + 1,
        ));
        plain.push_str(&self.username);
        plain.push(':');
        plain.push_str(&self.password);
        let mut out = Zeroizing::new(String::from("Basic "));
        base64::engine::general_purpose::STANDARD.encode_string(plain.as_bytes(), &mut out);
        out
    }
}

/// One challenge: its scheme (lower-cased) and parameters (names lower-cased).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn skip_ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t') {
            self.i += 1;
        }
    }

    fn token(&mut self) -> Option<&str> {
        let start = self.i;
        while self.i < self.s.len() && is_tchar(self.s[self.i]) {
            self.i += 1;
        }
        (self.i > start).then(|| std::str::from_utf8(&self.s[start..self.i]).expect("ASCII"))
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn quoted(&mut self) -> Result<String, String> {
        self.i += 1; // the opening quote
        let mut out = Vec::new();
        while let Some(c) = self.peek() {
            self.i += 1;
            match c {
                b'"' => return String::from_utf8(out).map_err(|_| "a non-UTF-8 value".into()),
                b'\\' => {
                    let escaped = self.peek().ok_or("an unterminated escape")?;
                    self.i += 1;
                    out.push(escaped);
                }
                c => out.push(c),
            }
        }
        Err("an unterminated quoted string".into())
    }

    /// Whether what follows is `name =` (a parameter) rather than a new challenge's scheme.
    fn at_param(&self) -> bool {
        let mut probe = Cursor {
            s: self.s,
            i: self.i,
        };
        probe.skip_ws();
        if probe.token().is_none() {
            return false;
        }
        probe.skip_ws();
        probe.peek() == Some(b'=') && probe.s.get(probe.i + 1) != Some(&b'=')
    }
}

/// Parses a `WWW-Authenticate` value: one or more challenges, each `scheme param=value, …`.
pub fn parse_challenges(value: &str) -> Result<Vec<Challenge>, String> {
    let mut c = Cursor {
        s: value.as_bytes(),
        i: 0,
    };
    let mut out = Vec::new();
    loop {
        c.skip_ws();
        while c.peek() == Some(b',') {
            c.i += 1;
            c.skip_ws();
        }
        if c.peek().is_none() {
            break;
        }
        let at = c.i;
        let scheme = c
            .token()
            .ok_or_else(|| format!("no auth scheme at byte {at}"))?
            .to_ascii_lowercase();
        let mut params = BTreeMap::new();
        loop {
            if !c.at_param() {
                break;
            }
            c.skip_ws();
            let name = c.token().expect("at_param saw one").to_ascii_lowercase();
            c.skip_ws();
            c.i += 1; // '='
            c.skip_ws();
            let v = if c.peek() == Some(b'"') {
                c.quoted()?
            } else {
                c.token()
                    .ok_or_else(|| format!("parameter {name} has no value"))?
                    .to_owned()
            };
            if params.insert(name.clone(), v).is_some() {
                return Err(format!("parameter {name} given twice"));
            }
            c.skip_ws();
            match c.peek() {
                Some(b',') => c.i += 1,
                None => break,
                Some(other) => {
                    return Err(format!(
                        "unexpected {:?} after parameter {name}",
                        other as char
                    ));
                }
            }
        }
        out.push(Challenge { scheme, params });
    }
    if out.is_empty() {
        return Err("no challenge".into());
    }
    Ok(out)
}

/// The token in a token endpoint's JSON answer (`token`, else `access_token`).
pub fn parse_token(body: &[u8]) -> Result<Zeroizing<String>, String> {
    #[derive(serde::Deserialize)]
    struct Answer {
        token: Option<String>,
        access_token: Option<String>,
    }
    let a: Answer = serde_json::from_slice(body).map_err(|e| format!("not a token answer: {e}"))?;
    let token = Zeroizing::new(
        a.token
            .filter(|t| !t.is_empty())
            .or(a.access_token.filter(|t| !t.is_empty()))
            .ok_or("the answer has no token")?,
    );
    // It goes into an Authorization header: anything but visible ASCII is refused.
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the token is not printable ASCII".into());
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_and_basic_challenges_parse() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].param("realm"), Some("https://auth.example/token"));
        assert_eq!(c[0].param("scope"), Some("repository:a/b:pull,push"));
        let two = parse_challenges(
            r#"Basic realm="x\"y", Bearer realm="https://r", error=invalid_token"#,
        )
        .unwrap();
        assert_eq!(two.len(), 2);
        assert_eq!(two[0].param("realm"), Some("x\"y"));
        assert_eq!(two[1].param("error"), Some("invalid_token"));
        assert_eq!(parse_challenges("Basic").unwrap()[0].params.len(), 0);
        assert!(parse_challenges(r#"Bearer realm="open"#).is_err());
        assert!(parse_challenges(r#"Bearer realm="a",realm="b""#).is_err());
        assert!(parse_challenges("").is_err());
    }

    #[test]
    fn tokens_come_from_token_or_access_token_and_must_be_printable() {
        assert_eq!(&*parse_token(br#"{"token":"abc"}"#).unwrap(), "abc");
        assert_eq!(
            &*parse_token(br#"{"access_token":"xyz","expires_in":60}"#).unwrap(),
            "xyz"
        );
        assert!(parse_token(br#"{"token":""}"#).is_err());
        assert!(parse_token(br#"{"token":"a\nb"}"#).is_err());
        assert!(parse_token(b"<html>").is_err());
    }

    #[test]
    fn basic_credentials_encode_and_never_print() {
        let c = Credentials {
            username: "u".into(),
            password: Zeroizing::new("p4ss".into()),
        };
        assert_eq!(&*c.basic(), "Basic dTpwNHNz");
        assert!(!format!("{c:?}").contains("p4ss"));
    }
}
