//! `bearer`: a token got with `client_credentials` at the token endpoint (as
//! Cloudentity's bank does with scope `introspect_tokens`), renewed before it expires and
//! once after a 401.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::Value;

use super::{CallContext, ClientAuthMethod};
use crate::introspection::http::read_json;
use crate::introspection::IntrospectionError;

pub(super) struct Bearer {
    secret: String,
    scope: String,
    /// The current token and until when to use it.
    token: Mutex<Option<(String, Instant)>>,
}

impl Bearer {
    pub fn new(secret: String, scope: String) -> Bearer {
        Bearer { secret, scope, token: Mutex::new(None) }
    }

    /// The token: cached until shortly before it expires, unless `fresh`.
    async fn token(&self, call: &CallContext<'_>, fresh: bool) -> Result<String, IntrospectionError> {
        if !fresh {
            if let Some((token, until)) = self.token.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                if Instant::now() < *until {
                    return Ok(token.clone());
                }
            }
        }
        let url = call.token_endpoint.ok_or_else(|| IntrospectionError::Discovery("no token endpoint".into()))?;
        let sent = call
            .client
            .post(url)
            .basic_auth(call.client_id, Some(&self.secret))
            .form(&[("grant_type", "client_credentials"), ("scope", self.scope.as_str())])
            .send()
            .await;
        let body: Value = read_json(sent).await?;
        let token = body["access_token"]
            .as_str()
            .ok_or(IntrospectionError::Malformed("token response has no access_token"))?
            .to_string();
        let lifetime = body["expires_in"].as_u64().unwrap_or(60);
        // Renew before expiry: a margin of 30 s, or a fifth of a short lifetime.
        let margin = (lifetime / 5).min(30);
        let until = Instant::now() + Duration::from_secs(lifetime.saturating_sub(margin).max(1));
        *self.token.lock().unwrap_or_else(|e| e.into_inner()) = Some((token.clone(), until));
        Ok(token)
    }
}

#[async_trait]
impl ClientAuthMethod for Bearer {
    async fn authenticate(
        &self,
        call: &CallContext<'_>,
        request: reqwest::RequestBuilder,
        _form: &mut Vec<(&'static str, String)>,
        fresh: bool,
    ) -> Result<reqwest::RequestBuilder, IntrospectionError> {
        Ok(request.bearer_auth(self.token(call, fresh).await?))
    }

    fn renews_on_unauthorized(&self) -> bool {
        true
    }
}
