//! Counters of the connection layer, bumped without a lock on every request: requests by service and message
//! type, reply latency by service, and bytes in and out. The HTTP front's `/metrics` reads them at scrape time
//! (a snapshot); nothing here knows a metrics format.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Service ids below this get their own counters; the rest share "other" (ids are small and stable).
const SERVICES: usize = 16;
/// Request message types are below 0x100 (0x8000 and up are events, which clients do not send).
const MSG_TYPES: usize = 256;

/// Upper bounds of the latency buckets, in microseconds (the last bucket is +Inf).
pub const LATENCY_BOUNDS_US: [u64; 14] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
    10_000_000,
];

/// A latency histogram of fixed buckets: one atomic add per observation.
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BOUNDS_US.len() + 1],
    sum_ns: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
        }
    }
}

/// A histogram's values at one moment: per-bucket (not cumulative) counts, the last one +Inf.
#[derive(Debug, Clone, Default)]
pub struct HistogramSnapshot {
    pub counts: Vec<u64>,
    pub sum_seconds: f64,
}

impl HistogramSnapshot {
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        let i = LATENCY_BOUNDS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(LATENCY_BOUNDS_US.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let ns = d.as_nanos().min(u64::MAX as u128) as u64;
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            counts: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            sum_seconds: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

/// The connection layer's counters, shared by every connection (in [`crate::state::ServerState`]).
pub struct ConnStats {
    /// `[service][msg_type]`, for service ids below [`SERVICES`].
    requests: Box<[AtomicU64]>,
    other_requests: AtomicU64,
    /// By service id; the last one holds every id of [`SERVICES`] and above.
    latency: [Histogram; SERVICES + 1],
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

impl Default for ConnStats {
    fn default() -> Self {
        ConnStats {
            requests: (0..SERVICES * MSG_TYPES)
                .map(|_| AtomicU64::new(0))
                .collect(),
            other_requests: AtomicU64::new(0),
            latency: std::array::from_fn(|_| Histogram::default()),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
        }
    }
}

/// The counters at one moment.
#[derive(Debug, Clone, Default)]
pub struct ConnSnapshot {
    /// (service id, message type, requests), only the non-zero ones.
    pub requests: Vec<(u16, u16, u64)>,
    /// Requests on services or message types outside the table.
    pub other_requests: u64,
    /// (service id, histogram) for services that had requests; `u16::MAX` stands for "other".
    pub latency: Vec<(u16, HistogramSnapshot)>,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl ConnStats {
    /// Counts a request frame (not a stream chunk of an upload).
    pub fn request(&self, service: u16, msg_type: u16) {
        let (s, m) = (service as usize, msg_type as usize);
        if s < SERVICES && m < MSG_TYPES {
            self.requests[s * MSG_TYPES + m].fetch_add(1, Ordering::Relaxed);
        } else {
            self.other_requests.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Bytes read from clients: every frame, header included.
    pub fn bytes_in(&self, n: usize) {
        self.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Bytes written to clients.
    pub fn bytes_out(&self, n: usize) {
        self.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Time from a request's frame being read to its reply being handed to the output buffer.
    pub fn reply_latency(&self, service: u16, d: Duration) {
        self.latency[(service as usize).min(SERVICES)].observe(d);
    }

    pub fn snapshot(&self) -> ConnSnapshot {
        let mut requests = Vec::new();
        for (i, c) in self.requests.iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            if n > 0 {
                requests.push(((i / MSG_TYPES) as u16, (i % MSG_TYPES) as u16, n));
            }
        }
        let latency = self
            .latency
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let id = if i == SERVICES { u16::MAX } else { i as u16 };
                (id, h.snapshot())
            })
            .filter(|(_, h)| h.count() > 0)
            .collect();
        ConnSnapshot {
            requests,
            other_requests: self.other_requests.load(Ordering::Relaxed),
            latency,
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_land_in_their_cells_and_buckets() {
        let s = ConnStats::default();
        s.request(2, 1);
        s.request(2, 1);
        s.request(0x0100, 1);
        s.reply_latency(2, Duration::from_micros(30));
        s.reply_latency(2, Duration::from_millis(3));
        s.reply_latency(0x0100, Duration::from_secs(60));
        let snap = s.snapshot();
        assert_eq!(snap.requests, vec![(2, 1, 2)]);
        assert_eq!(snap.other_requests, 1);
        let (id, h) = &snap.latency[0];
        assert_eq!(*id, 2);
        assert_eq!(h.counts[0], 1, "30 µs is in the first bucket");
        assert_eq!(h.counts[6], 1, "3 ms is in the 5 ms bucket");
        assert!((h.sum_seconds - 0.00303).abs() < 1e-9);
        let (id, h) = &snap.latency[1];
        assert_eq!((*id, h.counts[LATENCY_BOUNDS_US.len()]), (u16::MAX, 1));
    }
}
