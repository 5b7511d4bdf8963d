//! Name lookups for server discovery: addresses and SRV records, behind a
//! trait so discovery can be exercised without a DNS server.

use std::net::IpAddr;

use async_trait::async_trait;
use hickory_resolver::TokioResolver;
use hickory_resolver::proto::rr::RData;

#[derive(Debug, Clone, thiserror::Error)]
#[error("DNS lookup of {name} failed: {reason}")]
pub struct DnsError {
    pub name: String,
    pub reason: String,
}

/// One SRV record: where a service lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    /// Without the trailing dot.
    pub target: String,
}

#[async_trait]
pub trait Dns: Send + Sync + 'static {
    /// A and AAAA records (following CNAMEs); an unknown name is an error.
    async fn lookup_ip(&self, host: &str) -> Result<Vec<IpAddr>, DnsError>;
    /// SRV records of `name`; no records is `Ok(vec![])`, not an error.
    async fn lookup_srv(&self, name: &str) -> Result<Vec<SrvRecord>, DnsError>;
}

/// The system's resolver configuration (`/etc/resolv.conf`, `/etc/hosts`).
pub struct HickoryDns(TokioResolver);

impl HickoryDns {
    pub fn from_system() -> Result<Self, DnsError> {
        let failed =
            |e: hickory_resolver::net::NetError| DnsError { name: "(system config)".into(), reason: e.to_string() };
        let resolver = TokioResolver::builder_tokio().map_err(failed)?.build().map_err(failed)?;
        Ok(Self(resolver))
    }
}

#[async_trait]
impl Dns for HickoryDns {
    async fn lookup_ip(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        let lookup =
            self.0.lookup_ip(host).await.map_err(|e| DnsError { name: host.to_owned(), reason: e.to_string() })?;
        Ok(lookup.iter().collect())
    }

    async fn lookup_srv(&self, name: &str) -> Result<Vec<SrvRecord>, DnsError> {
        let lookup = match self.0.srv_lookup(name).await {
            Ok(lookup) => lookup,
            Err(e) if e.is_no_records_found() => return Ok(Vec::new()),
            Err(e) => return Err(DnsError { name: name.to_owned(), reason: e.to_string() }),
        };
        Ok(lookup
            .answers()
            .iter()
            .filter_map(|record| match &record.data {
                RData::SRV(srv) => Some(SrvRecord {
                    priority: srv.priority,
                    weight: srv.weight,
                    port: srv.port,
                    target: srv.target.to_ascii().trim_end_matches('.').to_owned(),
                }),
                _ => None,
            })
            .collect())
    }
}

/// The order in which to try SRV targets (RFC 2782): lowest priority first;
/// within a priority, a weighted random draw, weight 0 only rarely first.
/// `pick(total)` returns a uniform number in `0..=total`. A lone target of
/// `.` means the service is explicitly absent, so nothing is returned.
pub fn order_srv(mut records: Vec<SrvRecord>, mut pick: impl FnMut(u32) -> u32) -> Vec<SrvRecord> {
    if records.len() == 1 && records[0].target.is_empty() {
        return Vec::new();
    }
    records.retain(|r| !r.target.is_empty());
    // Zero weights first within each priority, as the RFC's selection assumes.
    records.sort_by_key(|r| (r.priority, r.weight != 0));
    let mut ordered = Vec::with_capacity(records.len());
    while !records.is_empty() {
        let priority = records[0].priority;
        let mut group: Vec<SrvRecord> = Vec::new();
        while records.first().is_some_and(|r| r.priority == priority) {
            group.push(records.remove(0));
        }
        while !group.is_empty() {
            let total: u32 = group.iter().map(|r| u32::from(r.weight)).sum();
            let target = pick(total);
            let mut running = 0;
            let index = group
                .iter()
                .position(|r| {
                    running += u32::from(r.weight);
                    running >= target
                })
                .unwrap_or(group.len() - 1);
            ordered.push(group.remove(index));
        }
    }
    ordered
}

#[cfg(test)]
mod tests {
    use super::*;

    fn srv(priority: u16, weight: u16, target: &str) -> SrvRecord {
        SrvRecord { priority, weight, port: 8448, target: target.to_owned() }
    }

    fn targets(records: &[SrvRecord]) -> Vec<&str> {
        records.iter().map(|r| r.target.as_str()).collect()
    }

    #[test]
    fn lower_priority_always_comes_first() {
        let records = vec![srv(20, 100, "late"), srv(10, 0, "early"), srv(30, 5, "last")];
        // Whatever the draw, priority decides across groups.
        for draw in [0, 1, 1000] {
            assert_eq!(targets(&order_srv(records.clone(), |total| draw.min(total))), ["early", "late", "last"]);
        }
    }

    #[test]
    fn weights_decide_within_a_priority() {
        let records = vec![srv(10, 10, "light"), srv(10, 90, "heavy"), srv(10, 0, "zero")];
        // Running sums in order zero(0), light(10), heavy(100).
        assert_eq!(targets(&order_srv(records.clone(), |_| 50)), ["heavy", "light", "zero"]);
        assert_eq!(targets(&order_srv(records.clone(), |_| 5)), ["light", "heavy", "zero"]);
        // A draw of 0 picks the first record whose running sum reaches it: the zero-weight one.
        assert_eq!(targets(&order_srv(records, |_| 0)), ["zero", "light", "heavy"]);
    }

    #[test]
    fn a_dot_target_means_no_service() {
        assert!(order_srv(vec![srv(0, 0, "")], |_| 0).is_empty());
        assert!(order_srv(Vec::new(), |_| 0).is_empty());
    }
}
