//! Budgets shared by every connection, each held by a guard that gives its share back when it is
//! dropped, wherever that happens: the memory for request bodies, and per client address the
//! open connections and the requests in flight. One client cannot take more than its share, and
//! nothing leaks when a connection ends half-way.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Bytes of request bodies (and their rewritten copies) held in memory at once.
#[derive(Clone)]
pub struct BodyBudget(Arc<Budget>);

struct Budget {
    used: AtomicU64,
    max: u64,
}

/// A share of a [`BodyBudget`], given back on drop.
pub struct Charge {
    budget: BodyBudget,
    amount: u64,
}

impl BodyBudget {
    pub fn new(max: u64) -> BodyBudget {
        BodyBudget(Arc::new(Budget {
            used: AtomicU64::new(0),
            max,
        }))
    }

    /// Takes `amount` if that much is left.
    pub fn charge(&self, amount: u64) -> Option<Charge> {
        self.0
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(amount)
                    .filter(|total| *total <= self.0.max)
            })
            .ok()
            .map(|_| Charge {
                budget: self.clone(),
                amount,
            })
    }

    pub fn used(&self) -> u64 {
        self.0.used.load(Ordering::Acquire)
    }
}

impl Charge {
    /// Makes `other` part of this charge (given back together).
    pub fn absorb(&mut self, mut other: Charge) {
        self.amount += std::mem::take(&mut other.amount);
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.0.used.fetch_sub(self.amount, Ordering::AcqRel);
    }
}

/// Open connections and requests in flight per client address. IPv6 clients count by their
/// /64 prefix: one host can use any address in its network's /64.
pub struct Clients {
    counts: Mutex<HashMap<IpAddr, Counts>>,
    max_connections: usize,
    max_requests: usize,
}

#[derive(Default)]
struct Counts {
    connections: usize,
    requests: usize,
}

/// One open connection of a client, given back on drop.
pub struct ClientConnection {
    clients: Arc<Clients>,
    key: IpAddr,
}

/// One request in flight of a client, given back on drop.
pub struct ClientRequest {
    clients: Arc<Clients>,
    key: IpAddr,
}

impl Clients {
    pub fn new(max_connections: usize, max_requests: usize) -> Arc<Clients> {
        Arc::new(Clients {
            counts: Mutex::new(HashMap::new()),
            max_connections,
            max_requests,
        })
    }

    /// Requests in flight one client may have.
    pub fn max_requests(&self) -> usize {
        self.max_requests
    }

    /// A connection for `ip`, unless it has its share open already.
    pub fn connect(self: &Arc<Self>, ip: IpAddr) -> Option<ClientConnection> {
        let key = client_key(ip);
        let mut counts = self.lock();
        let c = counts.entry(key).or_default();
        if c.connections >= self.max_connections {
            if c.connections == 0 && c.requests == 0 {
                counts.remove(&key);
            }
            return None;
        }
        c.connections += 1;
        Some(ClientConnection {
            clients: Arc::clone(self),
            key,
        })
    }

    /// A request in flight for `ip`, unless it has its share in flight already.
    pub fn start_request(self: &Arc<Self>, ip: IpAddr) -> Option<ClientRequest> {
        let key = client_key(ip);
        let mut counts = self.lock();
        let c = counts.entry(key).or_default();
        if c.requests >= self.max_requests {
            return None;
        }
        c.requests += 1;
        Some(ClientRequest {
            clients: Arc::clone(self),
            key,
        })
    }

    fn release(&self, key: IpAddr, connection: bool) {
        let mut counts = self.lock();
        if let Some(c) = counts.get_mut(&key) {
            if connection {
                c.connections = c.connections.saturating_sub(1);
            } else {
                c.requests = c.requests.saturating_sub(1);
            }
            if c.connections == 0 && c.requests == 0 {
                counts.remove(&key);
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, Counts>> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.lock().len()
    }
}

impl Drop for ClientConnection {
    fn drop(&mut self) {
        self.clients.release(self.key, true);
    }
}

impl Drop for ClientRequest {
    fn drop(&mut self) {
        self.clients.release(self.key, false);
    }
}

/// The address a client is counted under.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                for s in &mut segments[4..] {
                    *s = 0;
                }
                IpAddr::V6(segments.into())
            }
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_are_bounded_merged_and_given_back() {
        let budget = BodyBudget::new(100);
        let mut a = budget.charge(60).unwrap();
        assert!(budget.charge(41).is_none());
        let b = budget.charge(40).unwrap();
        a.absorb(b);
        assert_eq!(budget.used(), 100);
        drop(a);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn each_client_has_its_share_and_gets_it_back() {
        let clients = Clients::new(2, 1);
        let one: IpAddr = "192.168.1.5".parse().unwrap();
        let other: IpAddr = "192.168.1.6".parse().unwrap();
        let c1 = clients.connect(one).unwrap();
        let _c2 = clients.connect(one).unwrap();
        assert!(clients.connect(one).is_none(), "one client's share is full");
        assert!(clients.connect(other).is_some(), "another's is not");
        let r = clients.start_request(one).unwrap();
        assert!(clients.start_request(one).is_none());
        drop(r);
        assert!(clients.start_request(one).is_some());
        drop(c1);
        assert!(clients.connect(one).is_some());
    }

    #[test]
    fn ipv6_clients_count_by_their_64_and_mapped_v4_as_v4() {
        let clients = Clients::new(1, 1);
        let _a = clients.connect("2001:db8:1:2::1".parse().unwrap()).unwrap();
        assert!(
            clients
                .connect("2001:db8:1:2:ffff::9".parse().unwrap())
                .is_none()
        );
        assert!(
            clients
                .connect("2001:db8:1:3::1".parse().unwrap())
                .is_some()
        );
        let _v4 = clients.connect("10.0.0.1".parse().unwrap()).unwrap();
        assert!(
            clients
                .connect("::ffff:10.0.0.1".parse().unwrap())
                .is_none()
        );
    }

    #[test]
    fn nothing_is_kept_for_clients_that_left() {
        let clients = Clients::new(4, 4);
        for i in 0..50u8 {
            let ip = IpAddr::from([10, 0, 0, i]);
            let c = clients.connect(ip).unwrap();
            let r = clients.start_request(ip).unwrap();
            drop((c, r));
        }
        assert_eq!(clients.tracked(), 0);
    }
}
