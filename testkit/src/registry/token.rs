//! The Bearer mode's token server: checks Basic credentials, grants the scope asked for in
//! an ES256 JWT carrying an `x5c` chain to the test CA, as distribution's token auth expects.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use http::Request;
use hyper::body::Incoming;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use super::{AbortOnDrop, random_name, reply, serve};
use crate::metadata::acceptor;
use crate::upstream::TestCa;

/// The server and how many tokens it issued.
#[derive(Debug)]
pub(super) struct TokenServer {
    pub(super) addr: SocketAddr,
    pub(super) issued: Arc<Mutex<usize>>,
    _task: AbortOnDrop,
}

fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

impl TokenServer {
    pub(super) async fn start(
        ca: &TestCa,
        user: &str,
        password: &str,
        service: &str,
        issuer: &str,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cert, key) = ca.issue(&["127.0.0.1"], false);
        let tls = acceptor(&cert, &key);
        // The signing key: another leaf of the same CA, named in each token's x5c.
        let (sign_cert, sign_key) = ca.issue(&["token-signer"], false);
        let sign_der = CertificateDer::from_pem_slice(sign_cert.as_bytes()).unwrap();
        let pkcs8 = PrivateKeyDer::from_pem_slice(sign_key.as_bytes()).unwrap();
        let rng = ring::rand::SystemRandom::new();
        let key_pair = Arc::new(
            ring::signature::EcdsaKeyPair::from_pkcs8(
                &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                pkcs8.secret_der(),
                &rng,
            )
            .unwrap(),
        );
        let header = b64url(
            serde_json::json!({"alg": "ES256", "typ": "JWT", "x5c": [
                base64::engine::general_purpose::STANDARD.encode(sign_der.as_ref())
            ]})
            .to_string()
            .as_bytes(),
        );
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let issued = Arc::new(Mutex::new(0));
        let counter = issued.clone();
        let (service, issuer, user) = (service.to_owned(), issuer.to_owned(), user.to_owned());
        let task = serve(listener, Some(tls), move |req: Request<Incoming>| {
            let authorized = req
                .headers()
                .get("authorization")
                .is_some_and(|v| v.as_bytes() == expected.as_bytes());
            let query = req.uri().query().unwrap_or("").to_owned();
            let (header, key_pair, service, issuer, user, counter) = (
                header.clone(),
                key_pair.clone(),
                service.clone(),
                issuer.clone(),
                user.clone(),
                counter.clone(),
            );
            async move {
                if !authorized {
                    return reply(
                        401,
                        &[],
                        b"{\"errors\":[{\"code\":\"UNAUTHORIZED\"}]}".to_vec(),
                    );
                }
                let mut access = Vec::new();
                for (k, v) in url_pairs(&query) {
                    if k == "scope" {
                        // repository:NAME:ACTIONS (NAME may hold '/').
                        let mut parts = v.splitn(2, ':');
                        let kind = parts.next().unwrap_or("");
                        let rest = parts.next().unwrap_or("");
                        if let Some((name, actions)) = rest.rsplit_once(':') {
                            access.push(serde_json::json!({
                                "type": kind, "name": name,
                                "actions": actions.split(',').collect::<Vec<_>>(),
                            }));
                        }
                    }
                }
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                let claims = serde_json::json!({
                    "iss": issuer, "sub": user, "aud": service,
                    "exp": now + 600, "nbf": now - 30, "iat": now,
                    "jti": random_name("j"), "access": access,
                });
                let signing_input = format!("{header}.{}", b64url(claims.to_string().as_bytes()));
                let sig = key_pair
                    .sign(&ring::rand::SystemRandom::new(), signing_input.as_bytes())
                    .unwrap();
                let jwt = format!("{signing_input}.{}", b64url(sig.as_ref()));
                *counter.lock().unwrap() += 1;
                reply(
                    200,
                    &[("content-type", "application/json")],
                    serde_json::json!({"token": jwt, "expires_in": 600})
                        .to_string()
                        .into_bytes(),
                )
            }
        });
        Self {
            addr,
            issued,
            _task: task,
        }
    }
}

/// `a=b&c=d`, percent-decoded.
fn url_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            let dec = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (dec(k), dec(v))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The hostile registry
