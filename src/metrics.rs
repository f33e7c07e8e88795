//! Prometheus metrics: per RPC under go-grpc-prometheus's names (so existing dashboards
//! work), per HTTP route, auth outcomes, the outbox, the hot path and the database pool.
//! Counters are bumped where things happen; gauges are read when `/metrics` is scraped.

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;

use crate::service::Auth;

/// How often buffered histogram samples are folded into their buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The process-wide recorder (one per process, however many servers it runs).
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let seconds = [
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)
            .expect("valid buckets")
            .build_recorder();
        let handle = recorder.handle();
        // Histogram samples wait in buffers until upkeep folds them into the buckets; a
        // scrape does it too, but nothing may scrape, and then every call's sample stayed
        // (~100 MB after a minute and a half of load). One thread per process, whatever
        // runtime or none.
        let upkeep = handle.clone();
        let _ = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                }
            });
        // Another recorder already installed (an embedding application's) keeps working;
        // this handle then renders only what was described here.
        let _ = metrics::set_global_recorder(recorder);
        describe();
        handle
    })
}

fn describe() {
    describe_counter!("grpc_server_started_total", "RPCs started on the server.");
    describe_counter!(
        "grpc_server_handled_total",
        "RPCs completed on the server, by status code."
    );
    describe_histogram!(
        "grpc_server_handling_seconds",
        "How long RPCs took until the server answered."
    );
    describe_counter!(
        "portcullis_http_requests_total",
        "HTTP requests answered, by route, method and status class."
    );
    describe_histogram!(
        "portcullis_http_request_duration_seconds",
        "How long HTTP requests took, by route and method."
    );
    describe_counter!(
        "portcullis_code_logins_started_total",
        "Code logins started (a code and link queued)."
    );
    describe_counter!(
        "portcullis_code_logins_confirmed_total",
        "Code and magic-link logins that opened a session."
    );
    describe_counter!(
        "portcullis_code_logins_failed_total",
        "Wrong codes entered."
    );
    describe_counter!(
        "portcullis_password_logins_total",
        "Password logins, by outcome (ok, failed)."
    );
    describe_counter!(
        "portcullis_lockouts_total",
        "Password checks refused because an account or address reached its failure limit."
    );
    describe_counter!(
        "portcullis_messages_sent_total",
        "Mails and texts delivered, by channel."
    );
    describe_counter!(
        "portcullis_messages_failed_total",
        "Delivery attempts that failed (and will be retried), by channel."
    );
    describe_gauge!(
        "portcullis_outbox_depth",
        "Mails and texts not delivered yet."
    );
    describe_gauge!(
        "portcullis_outbox_oldest_age_seconds",
        "Age of the oldest undelivered mail or text (0 when none)."
    );
    describe_counter!(
        "portcullis_session_cache_hits_total",
        "Token lookups answered from the in-process session cache."
    );
    describe_counter!(
        "portcullis_session_cache_misses_total",
        "Token lookups that went to the database."
    );
    describe_gauge!(
        "portcullis_password_hashing_running",
        "Password hashes and checks running now."
    );
    describe_gauge!(
        "portcullis_password_hashing_waiting",
        "Password hashes and checks waiting for a free slot."
    );
    describe_histogram!(
        "portcullis_db_transaction_begin_seconds",
        "Time to get a pooled connection and begin a transaction: waits for the pool show here."
    );
    describe_gauge!(
        "portcullis_db_pool_connections",
        "Database connections open in the pool."
    );
    describe_gauge!(
        "portcullis_db_pool_idle",
        "Database connections idle in the pool."
    );
}

/// An RPC began. `service` and `method` come from a bounded set (unknown paths are
/// "unknown"), so nothing is copied per call.
pub fn rpc_started(service: &'static str, method: &'static str) {
    counter!(
        "grpc_server_started_total",
        "grpc_type" => "unary", "grpc_service" => service, "grpc_method" => method
    )
    .increment(1);
}

/// A finished RPC (labels as in [`rpc_started`]).
pub fn rpc_handled(
    service: &'static str,
    method: &'static str,
    code: &'static str,
    took: Duration,
) {
    counter!(
        "grpc_server_handled_total",
        "grpc_type" => "unary", "grpc_service" => service, "grpc_method" => method,
        "grpc_code" => code
    )
    .increment(1);
    histogram!(
        "grpc_server_handling_seconds",
        "grpc_type" => "unary", "grpc_service" => service, "grpc_method" => method
    )
    .record(took.as_secs_f64());
}

/// A finished HTTP request on a known route (or "unmatched"). Methods outside the
/// standard ones (anyone can send any) are one "other" label.
pub fn http_handled(route: &str, method: &axum::http::Method, status: u16, took: Duration) {
    use axum::http::Method;
    let method = match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let class = match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    };
    let route = metrics::SharedString::from(route.to_owned());
    counter!(
        "portcullis_http_requests_total",
        "route" => route.clone(), "method" => method, "status_class" => class
    )
    .increment(1);
    histogram!(
        "portcullis_http_request_duration_seconds",
        "route" => route, "method" => method
    )
    .record(took.as_secs_f64());
}

/// A transaction began after waiting `took` for a connection (and BEGIN).
pub fn transaction_began(took: Duration) {
    histogram!("portcullis_db_transaction_begin_seconds").record(took.as_secs_f64());
}

pub fn count(name: &'static str) {
    counter!(name).increment(1);
}

pub fn count_labelled(name: &'static str, label: &'static str, value: &'static str) {
    counter!(name, label => value).increment(1);
}

/// Reads the gauges (outbox, hashing, pool) and renders everything.
pub async fn render(auth: &Auth) -> String {
    let handle = handle();
    let load = auth.load().await;
    if let Some((depth, oldest_age)) = load.outbox {
        gauge!("portcullis_outbox_depth").set(depth as f64);
        gauge!("portcullis_outbox_oldest_age_seconds").set(oldest_age as f64);
    }
    gauge!("portcullis_password_hashing_running").set(load.hashing_running as f64);
    gauge!("portcullis_password_hashing_waiting").set(load.hashing_waiting as f64);
    gauge!("portcullis_db_pool_connections").set(load.pool_size as f64);
    gauge!("portcullis_db_pool_idle").set(load.pool_idle as f64);
    handle.render()
}
