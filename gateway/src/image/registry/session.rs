//! How a client obtains and sends credentials: the `/v2/` ping, the registry's challenge
//! (Bearer preferred over Basic), tokens per scope, one retry on a 401, and which special
//! addresses the registry itself may be dialled at.

use std::collections::HashMap;
use std::net::IpAddr;

use http::{HeaderValue, StatusCode, Uri, header};
use zeroize::Zeroizing;

use super::client::{MAX_SMALL_BODY, Request, Response};
use super::{Origin, RegistryClient, RegistryError, auth, special_class};
use crate::egress::Resolve;

/// The registry's own special addresses, allowed from then on: all of them if every address
/// its name resolves to now is special and none is of a class never dialled (metadata,
/// unspecified, multicast); none otherwise (a public registry, or a mixed answer, which the
/// transport then refuses).
pub(super) async fn pinned_special(
    resolver: &dyn Resolve,
    registry: &Origin,
) -> Result<Vec<IpAddr>, RegistryError> {
    let addrs: Vec<IpAddr> = match registry.host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => resolver
            .resolve(&registry.host, registry.port)
            .await
            .map_err(|source| RegistryError::Resolve {
                host: registry.host.clone(),
                source,
            })?
            .into_iter()
            .map(|a| a.ip())
            .collect(),
    };
    let all_special = !addrs.is_empty() && addrs.iter().all(|ip| special_class(*ip).is_some());
    let never_dialled = addrs.iter().any(|ip| {
        matches!(
            crate::egress::address_class::never_class(crate::egress::address_class::effective(*ip)),
            Some(
                crate::egress::AddressClass::Metadata
                    | crate::egress::AddressClass::Unspecified
                    | crate::egress::AddressClass::Multicast
            )
        )
    });
    Ok(if all_special && !never_dialled {
        addrs
            .into_iter()
            .map(crate::egress::address_class::effective)
            .collect()
    } else {
        Vec::new()
    })
}

/// Whether the registry was found to need credentials, and what was obtained.
#[derive(Default)]
pub(super) enum AuthState {
    #[default]
    Unknown,
    Anonymous,
    Basic,
    Bearer {
        realm: Uri,
        service: Option<String>,
        /// Per scope; wiped when dropped.
        tokens: HashMap<String, Zeroizing<String>>,
    },
}

impl std::fmt::Debug for AuthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unknown => f.write_str("Unknown"),
            Self::Anonymous => f.write_str("Anonymous"),
            Self::Basic => f.write_str("Basic"),
            // The tokens are credentials: only their scopes are shown.
            Self::Bearer { realm, tokens, .. } => f
                .debug_struct("Bearer")
                .field("realm", realm)
                .field("scopes", &tokens.keys().collect::<Vec<_>>())
                .finish(),
        }
    }
}

impl RegistryClient {
    /// `GET /v2/`: learns whether and how the registry wants credentials.
    pub async fn ping(&self) -> Result<(), RegistryError> {
        let mut state = self.auth.lock().await;
        self.ping_locked(&mut state).await
    }

    async fn ping_locked(&self, state: &mut AuthState) -> Result<(), RegistryError> {
        let resp = self.transport.send(Request::get(self.url("/v2/")?)).await?;
        match resp.status {
            s if s.is_success() => {
                *state = AuthState::Anonymous;
                Ok(())
            }
            StatusCode::UNAUTHORIZED => self.learn_challenge(state, &resp),
            s => Err(RegistryError::Status {
                what: format!("{}/v2/", self.registry),
                status: s.as_u16(),
                message: resp.error_excerpt(&self.transport.timeouts).await,
            }),
        }
    }

    /// Records what a 401 from the registry asks for (Bearer preferred over Basic).
    fn learn_challenge(&self, state: &mut AuthState, resp: &Response) -> Result<(), RegistryError> {
        let origin = self.registry.to_string();
        let bad = |message: String| RegistryError::Challenge {
            origin: origin.clone(),
            message,
        };
        let mut challenges = Vec::new();
        for v in resp.headers.get_all(header::WWW_AUTHENTICATE) {
            let v = v.to_str().map_err(|_| bad("not ASCII".into()))?;
            challenges.extend(auth::parse_challenges(v).map_err(bad)?);
        }
        if let Some(bearer) = challenges.iter().find(|c| c.scheme == "bearer") {
            let realm = bearer
                .param("realm")
                .ok_or_else(|| bad("a Bearer challenge without a realm".into()))?;
            let realm: Uri = realm
                .parse()
                .map_err(|_| bad(format!("realm {realm:?} is not a URL")))?;
            let keep = match state {
                AuthState::Bearer { realm: r, .. } => *r == realm,
                _ => false,
            };
            if !keep {
                *state = AuthState::Bearer {
                    realm,
                    service: bearer.param("service").map(str::to_owned),
                    tokens: HashMap::new(),
                };
            }
            Ok(())
        } else if challenges.iter().any(|c| c.scheme == "basic") {
            if self.credentials.is_none() {
                return Err(RegistryError::NoCredentials {
                    registry: self.registry.to_string(),
                });
            }
            *state = AuthState::Basic;
            Ok(())
        } else {
            Err(bad("no Basic or Bearer challenge".into()))
        }
    }

    /// The `Authorization` value for `scope`, fetching a token if needed.
    async fn authorization(
        &self,
        state: &mut AuthState,
        scope: &str,
    ) -> Result<Option<HeaderValue>, RegistryError> {
        if matches!(state, AuthState::Unknown) {
            self.ping_locked(state).await?;
        }
        let value = match state {
            AuthState::Unknown | AuthState::Anonymous => return Ok(None),
            AuthState::Basic => self
                .credentials
                .as_ref()
                .expect("Basic is chosen only with credentials")
                .basic(),
            AuthState::Bearer {
                realm,
                service,
                tokens,
            } => {
                if !tokens.contains_key(scope) {
                    let token = self.fetch_token(realm, service.as_deref(), scope).await?;
                    tokens.insert(scope.to_owned(), token);
                }
                Zeroizing::new(format!("Bearer {}", &*tokens[scope]))
            }
        };
        let mut v = HeaderValue::from_str(&value).map_err(|_| RegistryError::Token {
            realm: self.registry.to_string(),
            message: "not a valid header value".into(),
        })?;
        v.set_sensitive(true);
        Ok(Some(v))
    }

    async fn fetch_token(
        &self,
        realm: &Uri,
        service: Option<&str>,
        scope: &str,
    ) -> Result<Zeroizing<String>, RegistryError> {
        use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
        let realm_origin = Origin::of(realm)?;
        let mut query = Vec::new();
        if let Some(s) = service {
            query.push(format!(
                "service={}",
                utf8_percent_encode(s, NON_ALPHANUMERIC)
            ));
        }
        query.push(format!(
            "scope={}",
            utf8_percent_encode(scope, NON_ALPHANUMERIC)
        ));
        let sep = if realm.query().is_some() { '&' } else { '?' };
        let url: Uri = format!("{realm}{sep}{}", query.join("&"))
            .parse()
            .map_err(|_| RegistryError::BadUrl {
                url: realm.to_string(),
                reason: "not a valid token realm",
            })?;
        let mut req = Request::get(url);
        if let Some(c) = &self.credentials {
            let mut v = HeaderValue::from_str(&c.basic()).map_err(|_| RegistryError::Token {
                realm: realm_origin.to_string(),
                message: "the username is not a valid header value".into(),
            })?;
            v.set_sensitive(true);
            req.authorization = Some(v);
        }
        let t = &self.transport.timeouts;
        let resp = self.transport.send(req).await?;
        let answered = Origin::of(&resp.url)?;
        match resp.status {
            s if s.is_success() => {}
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
                if self.credentials.is_some() && !self.transport.is_trusted(&answered) =>
            {
                return Err(RegistryError::CredentialsElsewhere {
                    origin: answered.to_string(),
                });
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Err(RegistryError::Unauthorized {
                    origin: answered.to_string(),
                    detail: resp.error_excerpt(t).await,
                });
            }
            s => {
                return Err(RegistryError::Token {
                    realm: answered.to_string(),
                    message: format!("{s} {}", resp.error_excerpt(t).await),
                });
            }
        }
        let body = resp
            .read_capped("the token answer", MAX_SMALL_BODY, t)
            .await?;
        auth::parse_token(&body).map_err(|message| RegistryError::Token {
            realm: answered.to_string(),
            message,
        })
    }

    /// Sends a request with the credentials `scope` needs; on a 401 from the registry learns
    /// the challenge and tries once more.
    pub(super) async fn send(
        &self,
        scope: &str,
        mut req: Request,
    ) -> Result<Response, RegistryError> {
        let mut state = self.auth.lock().await;
        for attempt in 0..2 {
            req.authorization = self.authorization(&mut state, scope).await?;
            let resp = self.transport.send(req.clone()).await?;
            if resp.status != StatusCode::UNAUTHORIZED {
                return Ok(resp);
            }
            let answered = Origin::of(&resp.url)?;
            if answered != self.registry {
                return Err(RegistryError::CredentialsElsewhere {
                    origin: answered.to_string(),
                });
            }
            if attempt == 1 || matches!(*state, AuthState::Basic) {
                return Err(RegistryError::Unauthorized {
                    origin: answered.to_string(),
                    detail: resp.error_excerpt(&self.transport.timeouts).await,
                });
            }
            // A token for another scope than the one asked for, or an expired one.
            if let AuthState::Bearer { tokens, .. } = &mut *state {
                tokens.remove(scope);
            }
            self.learn_challenge(&mut state, &resp)?;
        }
        unreachable!("the loop returns on its second attempt")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_a_registry_wholly_on_special_addresses_may_dial_them_and_only_its_own() {
        use crate::egress::StaticResolver;
        let origin = |host: &str| Origin {
            https: true,
            host: host.into(),
            port: 443,
        };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let mut names = StaticResolver::new();
        names
            .insert("lab.example", vec![ip("10.1.2.3"), ip("10.1.2.4")])
            .insert("mixed.example", vec![ip("127.0.0.1"), ip("93.184.216.34")])
            .insert("public.example", vec![ip("93.184.216.34")])
            .insert("meta.example", vec![ip("169.254.169.254")]);
        let pinned = |host: &'static str| {
            let names = &names;
            async move { pinned_special(names, &origin(host)).await.unwrap() }
        };
        assert_eq!(
            pinned("lab.example").await,
            [ip("10.1.2.3"), ip("10.1.2.4")]
        );
        // One special address beside a public one (or a rebinding first answer) opens none.
        assert!(pinned("mixed.example").await.is_empty());
        assert!(pinned("public.example").await.is_empty());
        // Metadata is never dialled, whatever the registry resolves to.
        assert!(pinned("meta.example").await.is_empty());
        assert_eq!(
            pinned_special(&names, &origin("127.0.0.1")).await.unwrap(),
            [ip("127.0.0.1")]
        );
    }

    #[test]
    fn a_bearer_state_never_prints_its_tokens() {
        let secret = "tok-3f9a1c";
        let state = AuthState::Bearer {
            realm: "https://auth.example/token".parse().unwrap(),
            service: None,
            tokens: HashMap::from([(
                "repository:a:pull".to_owned(),
                Zeroizing::new(secret.to_owned()),
            )]),
        };
        let shown = format!("{state:?}");
        assert!(shown.contains("repository:a:pull"), "{shown}");
        assert!(!shown.contains(secret), "{shown}");
    }
}
