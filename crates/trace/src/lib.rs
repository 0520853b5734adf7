//! Distributed tracing's seam: the spans that make a trace are created on
//! [`TARGET`], and W3C trace context (`traceparent`, `tracestate`) enters
//! from a request and leaves with a call to another node through here.
//!
//! Spans on [`TARGET`] are seen only by the OpenTelemetry layer, which the
//! binary installs when an OTLP endpoint is configured; without it no
//! layer is interested in them, so creating one costs a cached callsite
//! check, and nothing here runs (every function first asks whether its
//! span is enabled).
//!
//! Context from the network is hostile: a `traceparent` longer than the
//! format allows, or a `tracestate` above [`MAX_TRACESTATE_BYTES`], is
//! ignored, and a malformed one is ignored by the propagator (the span
//! starts a trace of its own).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The target of every span meant for traces.
pub const TARGET: &str = "cart_trace";
/// `traceparent`'s length in its only version (00).
pub const TRACEPARENT_LEN: usize = 55;
/// Most bytes of `tracestate` accepted (the W3C limit for propagation).
pub const MAX_TRACESTATE_BYTES: usize = 512;

static ON: AtomicBool = AtomicBool::new(false);

/// Records that the OpenTelemetry layer is installed (the binary calls
/// this when it installs it, before building its routers).
pub fn set_enabled(on: bool) {
    ON.store(on, Ordering::Relaxed);
}

/// Whether traces are on ([`set_enabled`]). Asked once where a layer
/// would be added per request, so with traces off the request path does
/// not even pass through it. (Not `tracing::enabled!`: with per-layer
/// filters that call can leave the filter state of the next event on its
/// thread behind, and drop that event from the log.)
pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Trace context as it crosses a process boundary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceParent {
    /// `traceparent`: version, trace id, parent span id, flags.
    pub traceparent: String,
    /// `tracestate`: vendors' entries (may be empty).
    pub tracestate: String,
}

/// The headers' trace context, if traces are on and they carry one within
/// the bounds.
pub fn from_headers(headers: &http::HeaderMap) -> Option<TraceParent> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    from_fields(text("traceparent")?, text("tracestate").unwrap_or_default())
}

/// The context of a message's `traceparent` and `tracestate` fields, if
/// traces are on and they carry one within the bounds.
pub fn from_fields(traceparent: &str, tracestate: &str) -> Option<TraceParent> {
    if !enabled() {
        return None;
    }
    bounded(traceparent, tracestate)
}

/// A gRPC server span named `name`, continuing `parent`'s trace.
pub fn server_span(name: &str, parent: &TraceParent) -> Span {
    let span = tracing::info_span!(
        target: TARGET,
        "grpc",
        otel.name = name,
        otel.kind = "server",
        rpc.system = "grpc",
    );
    continue_trace(&span, Some(parent));
    span
}

fn bounded(traceparent: &str, tracestate: &str) -> Option<TraceParent> {
    if traceparent.len() != TRACEPARENT_LEN || tracestate.len() > MAX_TRACESTATE_BYTES {
        return None;
    }
    Some(TraceParent { traceparent: traceparent.to_owned(), tracestate: tracestate.to_owned() })
}

/// Makes `span` a child of the trace `parent` names (from a request's
/// headers or a forwarded message), when the span is traced and the
/// context is valid; otherwise `span` stays a root.
pub fn continue_trace(span: &Span, parent: Option<&TraceParent>) {
    let Some(parent) = parent else { return };
    if span.is_disabled() {
        return;
    }
    let Some(parent) = bounded(&parent.traceparent, &parent.tracestate) else { return };
    let mut carrier = HashMap::with_capacity(2);
    carrier.insert("traceparent".to_owned(), parent.traceparent);
    if !parent.tracestate.is_empty() {
        carrier.insert("tracestate".to_owned(), parent.tracestate);
    }
    let cx = TraceContextPropagator::new().extract(&carrier);
    if cx.span().span_context().is_valid() {
        // Fails only for a span already started, which this is not.
        let _ = span.set_parent(cx);
    }
}

/// `span`'s trace context for a call it makes to another node; `None` when
/// the span is not traced.
pub fn of(span: &Span) -> Option<TraceParent> {
    if span.is_disabled() {
        return None;
    }
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut out = Carrier::default();
    TraceContextPropagator::new().inject_context(&cx, &mut out);
    if out.0.traceparent.is_empty() { None } else { Some(out.0) }
}

#[derive(Default)]
struct Carrier(TraceParent);

impl Injector for Carrier {
    fn set(&mut self, key: &str, value: String) {
        match key {
            "traceparent" => self.0.traceparent = value,
            "tracestate" => self.0.tracestate = value,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TracerProvider;
    use tracing_subscriber::layer::SubscriberExt;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn headers_give_their_context_within_bounds() {
        set_enabled(true);
        let mut h = http::HeaderMap::new();
        assert_eq!(from_headers(&h), None);
        h.insert("traceparent", PARENT.parse().unwrap());
        h.insert("tracestate", "vendor=1".parse().unwrap());
        let got = from_headers(&h).unwrap();
        assert_eq!((got.traceparent.as_str(), got.tracestate.as_str()), (PARENT, "vendor=1"));
        h.insert("traceparent", format!("{PARENT}-extra").parse().unwrap());
        assert_eq!(from_headers(&h), None, "longer than the format");
        h.insert("traceparent", PARENT.parse().unwrap());
        h.insert("tracestate", "a=1,".repeat(200).parse().unwrap());
        assert_eq!(from_headers(&h), None, "a tracestate above the bound");
    }

    #[test]
    fn a_traced_span_continues_the_callers_trace_and_passes_it_on() {
        let subscriber = tracing_subscriber::registry().with(
            tracing_opentelemetry::layer()
                .with_tracer(opentelemetry_sdk::trace::SdkTracerProvider::default().tracer("t")),
        );
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(target: TARGET, "server");
            let caller = TraceParent { traceparent: PARENT.into(), tracestate: String::new() };
            continue_trace(&span, Some(&caller));
            let child = span.in_scope(|| tracing::info_span!(target: TARGET, "client"));
            let passed = of(&child).unwrap();
            assert_eq!(&passed.traceparent[..36], &PARENT[..36], "the same trace id");
            assert_ne!(&passed.traceparent[36..52], &PARENT[36..52], "a span of its own");
            let forged = TraceParent { traceparent: "00-".repeat(18) + "x", ..caller };
            let root = tracing::info_span!(target: TARGET, "root");
            continue_trace(&root, Some(&forged));
            assert_ne!(&of(&root).unwrap().traceparent[..36], &PARENT[..36]);
        });
        let untraced = tracing::info_span!(target: TARGET, "off");
        assert!(untraced.is_disabled() && of(&untraced).is_none(), "no layer: nothing traced");
    }
}
