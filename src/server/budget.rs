//! How many client connections may be open: `max_connections` for the whole process (all
//! listeners, all workers) and `max_connections_per_ip` for one client address, so that one
//! client (slow-loris, a flood of idle sockets) cannot take every slot. Refusals are logged
//! at most once per interval, with the count since the last line: a flood must not turn into
//! a flood of log lines.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::observability::metrics::METRICS;
use crate::observability::Throttle;

const WARN_INTERVAL: Duration = Duration::from_secs(10);

pub struct ConnectionBudget {
    slots: Arc<Semaphore>,
    /// Open connections per client address (entries removed at zero, so the map is bounded
    /// by `max_connections`).
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// 0 = no per-address limit.
    max_per_ip: usize,
    refusals: RefusalLog,
}

/// A connection's claim on the budget, returned when dropped.
pub struct Admitted {
    budget: Arc<ConnectionBudget>,
    ip: IpAddr,
    _slot: OwnedSemaphorePermit,
}

impl ConnectionBudget {
    pub fn new(max_connections: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(Self {
            slots: Arc::new(Semaphore::new(max_connections)),
            per_ip: Mutex::new(HashMap::new()),
            max_per_ip,
            refusals: RefusalLog::default(),
        })
    }

    /// A slot for a new connection from `ip`, or `None` (the connection is closed at once).
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Admitted> {
        let ip = client_key(ip);
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            self.refusals.refused("max_connections");
            return None;
        };
        if self.max_per_ip > 0 {
            let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
            let open = per_ip.entry(ip).or_insert(0);
            if *open >= self.max_per_ip {
                drop(per_ip);
                self.refusals.refused("max_connections_per_ip");
                return None;
            }
            *open += 1;
        }
        METRICS.connection_opened();
        Some(Admitted {
            budget: self.clone(),
            ip,
            _slot: slot,
        })
    }

    /// Connections refused since start (for metrics and tests).
    pub fn refused_total(&self) -> u64 {
        self.refusals.total.load(Ordering::Relaxed)
    }
}

/// The address a per-client budget is kept for: IPv4-mapped IPv6 as IPv4, and an IPv6
/// address by its /64 — one subscriber gets a whole /64, so counting single addresses would
/// give one client an unlimited budget.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(prefix.into())
        }
        v4 => v4,
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        METRICS.connection_closed();
        if self.budget.max_per_ip == 0 {
            return;
        }
        let mut per_ip = self.budget.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(open) = per_ip.get_mut(&self.ip) {
            *open -= 1;
            if *open == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

/// Refused connections: counted, and logged at most once per interval.
struct RefusalLog {
    total: AtomicU64,
    throttle: Throttle,
}

impl Default for RefusalLog {
    fn default() -> Self {
        Self {
            total: AtomicU64::new(0),
            throttle: Throttle::new(WARN_INTERVAL),
        }
    }
}

impl RefusalLog {
    fn refused(&self, limit: &'static str) {
        self.total.fetch_add(1, Ordering::Relaxed);
        METRICS.connection_refused(limit);
        if let Some(suppressed) = self.throttle.allow() {
            tracing::warn!(
                limit,
                refused_since_last_warning = suppressed + 1,
                "connection limit reached; closing new connections (logged at most every 10 s)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_and_total_limits() {
        let budget = ConnectionBudget::new(3, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = budget.admit(a).unwrap();
        let _second = budget.admit(a).unwrap();
        assert!(budget.admit(a).is_none(), "third from one address");
        let _other = budget.admit(b).unwrap();
        assert!(budget.admit(b).is_none(), "process limit");
        drop(first);
        assert!(budget.admit(a).is_some(), "slot returned");
        assert_eq!(budget.refused_total(), 2);
        assert!(budget.per_ip.lock().unwrap().len() <= 2);
    }

    #[test]
    fn an_ipv6_64_is_one_client_and_mapped_ipv4_is_ipv4() {
        let budget = ConnectionBudget::new(100, 2);
        let _a = budget.admit("2001:db8:1:2::1".parse().unwrap()).unwrap();
        let _b = budget.admit("2001:db8:1:2::ffff".parse().unwrap()).unwrap();
        assert!(budget
            .admit("2001:db8:1:2:abcd::9".parse().unwrap())
            .is_none());
        assert!(budget.admit("2001:db8:1:3::1".parse().unwrap()).is_some());
        let _c = budget.admit("192.0.2.9".parse().unwrap()).unwrap();
        let _d = budget.admit("::ffff:192.0.2.9".parse().unwrap()).unwrap();
        assert!(budget.admit("192.0.2.9".parse().unwrap()).is_none());
    }
}
