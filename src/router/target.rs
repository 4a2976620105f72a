//! Which node a request (or one part of a split request) goes to in a snapshot: the one
//! decision every place in a session that sends something makes through [`node_for`], so that a
//! read policy has one place to go.
//!
//! Pure: a function of the snapshot, the slot and the client. It must never look at a socket,
//! a clock or the global topology.

use std::sync::Arc;

use crate::backend::Node;
use crate::topology::Topology;

/// The node for a request: the master serving `slot`; for a keyless request (`None`), one
/// master chosen by the client's id, so that one client's keyless requests stay on one node
/// and many clients spread over all of them. `None` when no master serves the slot.
pub fn node_for(topo: &Topology, slot: Option<u16>, client: u64) -> Option<&Arc<Node>> {
    match slot {
        Some(s) => topo.master_for_slot(s),
        None => {
            let masters = topo.masters();
            if masters.is_empty() {
                return None;
            }
            masters.get((client % masters.len() as u64) as usize)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{BackendConfig, Backends};
    use crate::topology::{Layout, ShardLayout};
    use crate::workers::Workers;

    fn topology(shards: &[(&str, &[(u16, u16)])]) -> Topology {
        let backends = Backends::new(BackendConfig::default(), Arc::new(Workers::single()));
        let layout = Layout {
            shards: shards
                .iter()
                .map(|(m, r)| ShardLayout {
                    master: m.to_string(),
                    replicas: vec![],
                    ranges: r.to_vec(),
                })
                .collect(),
            ..Layout::default()
        };
        Topology::build(&layout, &backends, Default::default(), 1)
    }

    fn addr(n: Option<&Arc<Node>>) -> Option<String> {
        n.map(|n| n.addr().to_string())
    }

    // Node handles start their connections on a runtime (here to addresses that do not resolve:
    // they only retry in the background; nothing is sent).
    #[tokio::test]
    async fn a_slot_goes_to_its_master_and_an_unserved_slot_nowhere() {
        let t = topology(&[("a:1", &[(0, 99)]), ("b:1", &[(100, 16383)])]);
        assert_eq!(addr(node_for(&t, Some(0), 7)).as_deref(), Some("a:1"));
        assert_eq!(addr(node_for(&t, Some(100), 7)).as_deref(), Some("b:1"));
        let gap = topology(&[("a:1", &[(0, 99)])]);
        assert_eq!(addr(node_for(&gap, Some(100), 7)), None);
    }

    #[tokio::test]
    async fn keyless_requests_spread_by_client_and_stay_put_per_client() {
        let t = topology(&[("a:1", &[(0, 8000)]), ("b:1", &[(8001, 16383)])]);
        assert_eq!(addr(node_for(&t, None, 0)).as_deref(), Some("a:1"));
        assert_eq!(addr(node_for(&t, None, 1)).as_deref(), Some("b:1"));
        assert_eq!(addr(node_for(&t, None, 3)), addr(node_for(&t, None, 3)));
        assert_eq!(addr(node_for(&topology(&[]), None, 3)), None);
    }
}
