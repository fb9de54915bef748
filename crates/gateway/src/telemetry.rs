//! OpenTelemetry traces (`[tracing]`): a server span per request, an introspection child
//! span when the request called (or waited for) the authorization server, a client span
//! for the bank call; W3C `traceparent`/`tracestate` from the TPP continued and passed on
//! to the bank; batches exported over OTLP/HTTP (protobuf) to the configured collector.
//!
//! Attributes carry the route template, never the raw path; the client id; the consent id
//! only as a hash; never a token, a certificate or a secret.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use pingora_http::RequestHeader;
use sha2::{Digest, Sha256};

use fapi_enforcement::config::TracingConfig;
use fapi_enforcement::enforcer::Trace;
use fapi_enforcement::policy::Grant;

use crate::error::GatewayError;

/// The tracer of a running gateway, and the runtime its exports run on.
pub struct Telemetry {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

/// The OTLP exporter's HTTP client: the gateway's reqwest (rustls on ring), run on the
/// exporter's own runtime (the batch processor exports from a thread of its own).
#[derive(Debug)]
struct ExportClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait]
impl HttpClient for ExportClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let request = reqwest::Request::try_from(request.map(reqwest::Body::from))?;
        let sent = self.runtime.spawn(async move {
            let response = client.execute(request).await?;
            let status = response.status();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, body))
        });
        let (status, body) = sent.await??;
        Ok(Response::builder().status(status).body(body)?)
    }
}

impl Telemetry {
    /// Starts the exporter of `config`. Nothing is sent until spans end.
    pub fn start(config: &TracingConfig) -> Result<Telemetry, GatewayError> {
        let fail = |what: &str, e: &dyn std::fmt::Display| GatewayError::Telemetry(format!("{what}: {e}"));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("otlp-export")
            .enable_all()
            .build()
            .map_err(|e| fail("cannot start the exporter's runtime", &e))?;
        let mut client = reqwest::Client::builder().timeout(config.timeout).no_proxy();
        if let Some(ca) = &config.ca {
            let pem = std::fs::read(ca).map_err(|e| fail(&format!("tracing.ca {}", ca.display()), &e))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| fail("tracing.ca", &e))?;
            client = client.tls_certs_only(certs);
        }
        let client = client.build().map_err(|e| fail("cannot build the exporter's HTTP client", &e))?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(config.endpoint.clone())
            .with_timeout(config.timeout)
            .with_http_client(ExportClient { client, runtime: runtime.handle().clone() })
            .build()
            .map_err(|e| fail("cannot build the OTLP exporter", &e))?;
        let batches = BatchConfigBuilder::default()
            .with_scheduled_delay(config.export_interval)
            .with_max_queue_size(8192)
            .build();
        let processor = BatchSpanProcessor::builder(exporter).with_batch_config(batches).build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            // By trace id: the TPP's and the bank's services sample a trace alike.
            .with_sampler(Sampler::TraceIdRatioBased(config.sampling_ratio))
            .with_resource(Resource::builder().with_service_name(config.service_name.clone()).build())
            .build();
        let tracer = opentelemetry::trace::TracerProvider::tracer(&provider, "fapi-gateway");
        Ok(Telemetry { provider, tracer, propagator: TraceContextPropagator::new(), runtime: Some(runtime) })
    }

    /// Opens a request's server span, continuing the TPP's trace when it sent one.
    pub fn begin(&self, req: &RequestHeader) -> RequestSpans {
        let parent = self.propagator.extract(&HeaderExtractor(req));
        let span = self.tracer.build_with_context(
            opentelemetry::trace::SpanBuilder::from_name("fapi-gateway request")
                .with_kind(SpanKind::Server)
                .with_attributes([KeyValue::new("http.request.method", req.method.as_str().to_string())]),
            &parent,
        );
        RequestSpans { cx: parent.with_span(span), upstream: None }
    }

    /// Sends what is buffered (tests, shutdown).
    pub fn flush(&self) {
        let _ = self.provider.force_flush();
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        let _ = self.provider.shutdown_with_timeout(Duration::from_secs(5));
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// One request's spans.
pub struct RequestSpans {
    cx: Context,
    upstream: Option<Context>,
}

/// The first 16 hex digits of the SHA-256 of a consent id: joins a trace to others of the
/// consent without telling the consent.
pub fn consent_hash(consent_id: &str) -> String {
    Sha256::digest(consent_id.as_bytes())[..8].iter().map(|b| format!("{b:02x}")).collect()
}

impl RequestSpans {
    /// Records the decision: route, client, consent hash, cache outcome, and the
    /// introspection call as a child span.
    pub fn decided(&mut self, telemetry: &Telemetry, trace: &Trace, decision: &str, grant: Option<&Grant>) {
        let span = self.cx.span();
        if !span.span_context().is_sampled() {
            return;
        }
        let mut attributes = vec![KeyValue::new("fapi.decision", decision.to_string())];
        if let Some(api) = &trace.api {
            attributes.push(KeyValue::new("fapi.api", api.clone()));
        }
        if let Some(route) = &trace.route {
            attributes.push(KeyValue::new("http.route", route.clone()));
        }
        if let Some(cache) = trace.cache {
            attributes.push(KeyValue::new("fapi.cache", cache.as_str()));
        }
        if let Some(grant) = grant {
            if let Some(client) = &grant.client_id {
                attributes.push(KeyValue::new("fapi.client_id", client.clone()));
            }
            if let Some(consent) = &grant.consent_id {
                attributes.push(KeyValue::new("fapi.consent_id_hash", consent_hash(consent)));
            }
        }
        span.set_attributes(attributes);
        if let Some(call) = &trace.introspection {
            let mut child = telemetry.tracer.build_with_context(
                opentelemetry::trace::SpanBuilder::from_name("introspection")
                    .with_kind(SpanKind::Client)
                    .with_start_time(call.started)
                    .with_attributes([
                        KeyValue::new("fapi.authorization_server", call.server.clone()),
                        KeyValue::new("fapi.introspection.duration_ms", call.duration.as_secs_f64() * 1000.0),
                    ]),
                &self.cx,
            );
            if call.failed {
                child.set_status(Status::error("introspection failed"));
            }
            child.end_with_timestamp(call.started + call.duration);
        }
    }

    /// Opens the bank call's span and writes its `traceparent` (and the TPP's
    /// `tracestate`) on the upstream request.
    pub fn upstream(&mut self, telemetry: &Telemetry, upstream: &mut RequestHeader, grant: &Grant) {
        let span = telemetry.tracer.build_with_context(
            opentelemetry::trace::SpanBuilder::from_name("upstream").with_kind(SpanKind::Client).with_attributes([
                KeyValue::new("server.address", grant.upstream.ip().to_string()),
                KeyValue::new("server.port", i64::from(grant.upstream.port())),
                KeyValue::new("fapi.api", grant.api.clone()),
            ]),
            &self.cx,
        );
        let cx = self.cx.with_span(span);
        upstream.remove_header("traceparent");
        upstream.remove_header("tracestate");
        telemetry.propagator.inject_context(&cx, &mut HeaderInjector(upstream));
        self.upstream = Some(cx);
    }

    /// Ends the bank call's span with the bank's status.
    pub fn upstream_answered(&mut self, status: u16) {
        if let Some(cx) = self.upstream.take() {
            let span = cx.span();
            span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status)));
            if status >= 500 {
                span.set_status(Status::error("the bank answered with a server error"));
            }
            span.end();
        }
    }

    /// Ends the request's span (and the bank call's, if still open) with the response status.
    pub fn finish(mut self, status: u16) {
        if let Some(cx) = self.upstream.take() {
            let span = cx.span();
            span.set_status(Status::error("no answer from the bank"));
            span.end();
        }
        let span = self.cx.span();
        span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status)));
        if status >= 500 || status == 0 {
            span.set_status(Status::error("request failed"));
        }
        span.end_with_timestamp(SystemTime::now());
    }
}

/// The telemetry of a gateway, if `[tracing]` is on.
pub type SharedTelemetry = Option<Arc<Telemetry>>;

struct HeaderExtractor<'a>(&'a RequestHeader);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.headers.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.headers.keys().map(|k| k.as_str()).collect()
    }
}

struct HeaderInjector<'a>(&'a mut RequestHeader);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        let _ = self.0.insert_header(key.to_string(), value);
    }
}
