//! Admission of new connections: a global cap, and concurrent and new-per-minute caps per address.
//! A place at the gate is held for as long as the connection lives.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::limits::WindowCounter;

/// Why a new connection was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    ServerFull,
    TooManyFromAddress,
    TooManyNewFromAddress,
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::ServerFull => "server full, try again later",
            Refusal::TooManyFromAddress => "too many connections from your address",
            Refusal::TooManyNewFromAddress => "too many new connections from your address, slow down",
        }
    }
}

/// Admission of new connections: a global cap, concurrent and new-per-minute caps per address.
/// The caps are atomics so that a reload changes them for the connections that come next.
pub struct ConnectionGate {
    max_total: AtomicUsize,
    max_per_address: AtomicUsize,
    exempt_loopback: AtomicBool,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
    new_per_address: WindowCounter<IpAddr>,
}

/// Holds a place at the gate; frees it when dropped.
pub struct Admission {
    gate: Arc<ConnectionGate>,
    ip: IpAddr,
}

impl ConnectionGate {
    pub fn new(max_total: usize, max_per_address: usize, new_per_minute: usize, exempt_loopback: bool) -> Self {
        ConnectionGate {
            max_total: AtomicUsize::new(max_total),
            max_per_address: AtomicUsize::new(max_per_address),
            exempt_loopback: AtomicBool::new(exempt_loopback),
            open: Mutex::new((0, HashMap::new())),
            new_per_address: WindowCounter::new(Duration::from_secs(60), new_per_minute),
        }
    }

    /// New caps for the connections admitted from now on (a reload); open ones stay.
    pub fn set_limits(&self, max_total: usize, max_per_address: usize, exempt_loopback: bool) {
        self.max_total.store(max_total, Ordering::Relaxed);
        self.max_per_address.store(max_per_address, Ordering::Relaxed);
        self.exempt_loopback.store(exempt_loopback, Ordering::Relaxed);
    }

    pub fn exempt(&self, ip: IpAddr) -> bool {
        self.exempt_loopback.load(Ordering::Relaxed) && ip.is_loopback()
    }

    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admission, Refusal> {
        let exempt = self.exempt(ip);
        let mut open = self.open.lock().unwrap();
        if open.0 >= self.max_total.load(Ordering::Relaxed) {
            return Err(Refusal::ServerFull);
        }
        let per = open.1.get(&ip).copied().unwrap_or(0);
        if !exempt && per >= self.max_per_address.load(Ordering::Relaxed) {
            return Err(Refusal::TooManyFromAddress);
        }
        if !exempt && self.new_per_address.hit(&ip).is_err() {
            return Err(Refusal::TooManyNewFromAddress);
        }
        open.0 += 1;
        *open.1.entry(ip).or_insert(0) += 1;
        Ok(Admission { gate: self.clone(), ip })
    }

    pub fn open_connections(&self) -> usize {
        self.open.lock().unwrap().0
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut open = self.gate.open.lock().unwrap();
        open.0 -= 1;
        if let Some(n) = open.1.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_counts_per_address() {
        let gate = Arc::new(ConnectionGate::new(10, 2, 100, false));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let a = gate.admit(ip).unwrap();
        let _b = gate.admit(ip).unwrap();
        assert_eq!(gate.admit(ip).err(), Some(Refusal::TooManyFromAddress));
        drop(a);
        assert!(gate.admit(ip).is_ok());
    }
}
