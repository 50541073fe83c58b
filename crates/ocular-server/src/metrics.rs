//! `GET /metrics` in Prometheus' text format: request and error counts, queue depth, time to
//! first token, image encoding time, generated tokens and decode speed.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

pub static METRICS: Metrics = Metrics::new();

/// Upper bounds (seconds) of the latency histograms' buckets.
const BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    /// Sum in microseconds, so it fits an atomic integer.
    sum_us: AtomicU64,
}

impl Histogram {
    const fn new() -> Self {
        Self {
            counts: [const { AtomicU64::new(0) }; BUCKETS.len()],
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, secs: f64) {
        for (bound, c) in BUCKETS.iter().zip(&self.counts) {
            if secs <= *bound {
                c.fetch_add(1, Relaxed);
            }
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add((secs * 1e6) as u64, Relaxed);
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, c) in BUCKETS.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {}", c.load(Relaxed));
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_us.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

pub struct Metrics {
    /// (route, count) pairs, few enough for a list.
    requests: Mutex<Vec<(String, u64)>>,
    errors: Mutex<Vec<(u16, u64)>>,
    pub queue_depth: AtomicU64,
    pub active: AtomicU64,
    pub cancelled: AtomicU64,
    pub generated_tokens: AtomicU64,
    /// Batched decode steps (each advances every active generation by one token), and the
    /// most generations one of them advanced.
    decode_steps: AtomicU64,
    largest_batch: AtomicU64,
    /// Decode speed of the last finished generation, tokens per second, as f64 bits.
    last_decode_rate: AtomicU64,
    pub time_to_first_token: Histogram,
    pub image_encode: Histogram,
}

impl Metrics {
    const fn new() -> Self {
        Self {
            requests: Mutex::new(Vec::new()),
            errors: Mutex::new(Vec::new()),
            queue_depth: AtomicU64::new(0),
            active: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            generated_tokens: AtomicU64::new(0),
            decode_steps: AtomicU64::new(0),
            largest_batch: AtomicU64::new(0),
            last_decode_rate: AtomicU64::new(0),
            time_to_first_token: Histogram::new(),
            image_encode: Histogram::new(),
        }
    }

    pub fn request(&self, route: &str) {
        bump(&mut self.requests.lock().unwrap_or_else(|e| e.into_inner()), route.to_string());
    }

    pub fn error(&self, status: u16) {
        bump(&mut self.errors.lock().unwrap_or_else(|e| e.into_inner()), status);
    }

    /// One decode step that advanced `batch` generations together.
    pub fn decode_step(&self, batch: usize) {
        self.decode_steps.fetch_add(1, Relaxed);
        self.largest_batch.fetch_max(batch as u64, Relaxed);
    }

    pub fn decode_rate(&self, tokens_per_sec: f64) {
        self.last_decode_rate.store(tokens_per_sec.to_bits(), Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP ocular_requests_total Requests received, by route.\n# TYPE ocular_requests_total counter\n",
        );
        for (route, n) in self.requests.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(out, "ocular_requests_total{{route=\"{route}\"}} {n}");
        }
        out.push_str(
            "# HELP ocular_errors_total Error responses, by HTTP status.\n# TYPE ocular_errors_total counter\n",
        );
        for (status, n) in self.errors.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(out, "ocular_errors_total{{status=\"{status}\"}} {n}");
        }
        let gauges = [
            (
                "ocular_queue_depth",
                "gauge",
                "Requests waiting for a generation slot.",
                self.queue_depth.load(Relaxed) as f64,
            ),
            ("ocular_active_generations", "gauge", "Generations in progress.", self.active.load(Relaxed) as f64),
            (
                "ocular_cancelled_total",
                "counter",
                "Generations stopped because the client left or timed out.",
                self.cancelled.load(Relaxed) as f64,
            ),
            (
                "ocular_generated_tokens_total",
                "counter",
                "Tokens generated.",
                self.generated_tokens.load(Relaxed) as f64,
            ),
            (
                "ocular_decode_steps_total",
                "counter",
                "Batched decode steps, each advancing every active generation by one token.",
                self.decode_steps.load(Relaxed) as f64,
            ),
            (
                "ocular_decode_batch_max",
                "gauge",
                "The most generations one decode step has advanced together.",
                self.largest_batch.load(Relaxed) as f64,
            ),
            (
                "ocular_decode_tokens_per_second",
                "gauge",
                "Decode speed of the last finished generation.",
                f64::from_bits(self.last_decode_rate.load(Relaxed)),
            ),
        ];
        for (name, kind, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        }
        self.time_to_first_token.write(
            &mut out,
            "ocular_time_to_first_token_seconds",
            "From a request's arrival to its first generated token (queueing, image encoding and prefill included).",
        );
        self.image_encode.write(
            &mut out,
            "ocular_image_encode_seconds",
            "Preprocessing and encoding a request's images and prompt (the prefill) for requests with media.",
        );
        out
    }
}

fn bump<K: PartialEq>(list: &mut Vec<(K, u64)>, key: K) {
    match list.iter_mut().find(|(k, _)| *k == key) {
        Some((_, n)) => *n += 1,
        None => list.push((key, 1)),
    }
}
