//! `tls_client_auth` (RFC 8705 §2): the gateway's own client certificate.

use std::path::PathBuf;

use async_trait::async_trait;

use super::{CallContext, ClientAuthMethod};
use crate::introspection::IntrospectionError;

pub(super) struct TlsClientAuth {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
}

#[async_trait]
impl ClientAuthMethod for TlsClientAuth {
    fn configure(&self, builder: reqwest::ClientBuilder) -> Result<reqwest::ClientBuilder, String> {
        let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
        let mut pem = read(&self.certificate)?;
        pem.extend(read(&self.private_key)?);
        let identity = reqwest::Identity::from_pem(&pem)
            .map_err(|e| format!("{}: not a usable client certificate and key: {e}", self.certificate.display()))?;
        Ok(builder.identity(identity))
    }

    async fn authenticate(
        &self,
        call: &CallContext<'_>,
        request: reqwest::RequestBuilder,
        form: &mut Vec<(&'static str, String)>,
        _fresh: bool,
    ) -> Result<reqwest::RequestBuilder, IntrospectionError> {
        form.push(("client_id", call.client_id.to_string()));
        Ok(request)
    }

    fn uses_client_certificate(&self) -> bool {
        true
    }
}
