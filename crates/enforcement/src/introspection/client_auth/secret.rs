//! `client_secret_basic` and `client_secret_post` (RFC 6749 §2.3.1).

use async_trait::async_trait;

use super::{CallContext, ClientAuthMethod};
use crate::introspection::IntrospectionError;

/// The secret in HTTP Basic authentication.
pub(super) struct Basic {
    pub secret: String,
}

#[async_trait]
impl ClientAuthMethod for Basic {
    async fn authenticate(
        &self,
        call: &CallContext<'_>,
        request: reqwest::RequestBuilder,
        _form: &mut Vec<(&'static str, String)>,
        _fresh: bool,
    ) -> Result<reqwest::RequestBuilder, IntrospectionError> {
        Ok(request.basic_auth(call.client_id, Some(&self.secret)))
    }
}

/// The secret in the form body.
pub(super) struct Post {
    pub secret: String,
}

#[async_trait]
impl ClientAuthMethod for Post {
    async fn authenticate(
        &self,
        call: &CallContext<'_>,
        request: reqwest::RequestBuilder,
        form: &mut Vec<(&'static str, String)>,
        _fresh: bool,
    ) -> Result<reqwest::RequestBuilder, IntrospectionError> {
        form.push(("client_id", call.client_id.to_string()));
        form.push(("client_secret", self.secret.clone()));
        Ok(request)
    }
}
