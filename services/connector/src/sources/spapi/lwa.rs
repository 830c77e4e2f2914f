//! Login with Amazon: a refresh token exchanged for access tokens, each cached until shortly
//! before it expires.
//!
//! `POST <token_url>` with the form `grant_type=refresh_token&refresh_token=...&client_id=...
//! &client_secret=...` answers `{"access_token", "token_type", "expires_in", ...}`. The token
//! is used until `expires_in` less a margin (a tenth of its life, at most a minute), and
//! dropped at once when the API answers 401 or 403, so that the next request exchanges again.
//! Neither the refresh token, the client secret nor an access token is ever logged or put in
//! an error.

use std::time::{Duration, Instant};

use serde::Deserialize;

use super::SpApiError;
use crate::config::Secret;
use crate::pushback::encode_path;

/// What the exchange needs.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub token_url: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub refresh_token: Secret,
}

/// The access token in use, if any, and until when.
#[derive(Debug, Default)]
pub struct TokenCache {
    token: Option<(Secret, Instant)>,
    /// Exchanges made, for the logs and tests.
    pub exchanges: u64,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: u64,
}

/// How long before expiry a token is replaced: a tenth of its life, at most a minute.
pub fn margin(expires_in: Duration) -> Duration {
    (expires_in / 10).min(Duration::from_secs(60))
}

impl TokenCache {
    /// The cached token if it is still good at `now`.
    pub fn valid(&self, now: Instant) -> Option<&Secret> {
        self.token.as_ref().filter(|(_, until)| now < *until).map(|(token, _)| token)
    }

    /// Keeps a token obtained at `now` that lives `expires_in`.
    pub fn keep(&mut self, token: Secret, expires_in: Duration, now: Instant) {
        self.token = Some((token, now + expires_in - margin(expires_in)));
    }

    /// Forgets the token (the API refused it).
    pub fn drop_token(&mut self) {
        self.token = None;
    }

    /// The cached token, or a new one from the token endpoint.
    pub async fn get(
        &mut self,
        client: &reqwest::Client,
        credentials: &Credentials,
    ) -> Result<Secret, SpApiError> {
        if let Some(token) = self.valid(Instant::now()) {
            return Ok(token.clone());
        }
        let field = |secret: &Secret| {
            secret.expose_str().map(encode_path).map_err(|_| SpApiError::Auth("a secret is not UTF-8".into()))
        };
        let form = format!(
            "grant_type=refresh_token&refresh_token={}&client_id={}&client_secret={}",
            field(&credentials.refresh_token)?,
            encode_path(&credentials.client_id),
            field(&credentials.client_secret)?,
        );
        let response = client
            .post(&credentials.token_url)
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded;charset=UTF-8")
            .body(form)
            .send()
            .await
            .map_err(|e| SpApiError::Auth(format!("the token endpoint did not answer: {e}")))?;
        let status = response.status();
        if !status.is_success() {
            // LWA's error body names the error (invalid_grant, invalid_client), not the secrets
            let text: String = response.text().await.unwrap_or_default().chars().take(300).collect();
            return Err(SpApiError::Auth(format!("the token endpoint answered {status}: {text}")));
        }
        let answer: TokenAnswer = response
            .json()
            .await
            .map_err(|e| SpApiError::Auth(format!("the token endpoint's answer is not a token: {e}")))?;
        self.exchanges += 1;
        let token = Secret::new(answer.access_token);
        self.keep(token.clone(), Duration::from_secs(answer.expires_in), Instant::now());
        tracing::debug!(
            expires_in = answer.expires_in,
            exchanges = self.exchanges,
            "lwa access token obtained"
        );
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_used_until_shortly_before_it_expires() {
        let t0 = Instant::now();
        let mut cache = TokenCache::default();
        assert!(cache.valid(t0).is_none());
        cache.keep(Secret::new("a"), Duration::from_secs(3600), t0);
        assert!(cache.valid(t0 + Duration::from_secs(3539)).is_some());
        assert!(cache.valid(t0 + Duration::from_secs(3540)).is_none(), "a minute early at most");
        cache.keep(Secret::new("b"), Duration::from_secs(2), t0);
        assert!(cache.valid(t0 + Duration::from_millis(1799)).is_some());
        assert!(cache.valid(t0 + Duration::from_millis(1800)).is_none(), "a tenth of a short life");
        cache.drop_token();
        assert!(cache.valid(t0).is_none());
    }
}
