//! One Redis server as a topology source: the simplest drop-in. Every key goes to it.
//!
//! Discovery only checks that the server answers and reads its version; this module must never
//! treat a replica or a cluster node as anything but the one address it was given.

use std::time::Duration;

use super::control::{Control, databases, redis_version};
use super::{Layout, TopologySource};
use crate::backend::{Connector, NodeAddr};
use crate::error::TopologyError;

#[derive(Debug, Clone)]
pub struct StandaloneSource {
    addr: Vec<NodeAddr>,
    timeout: Duration,
    /// How the server is reached, as the data path reaches it.
    via: Connector,
}

impl StandaloneSource {
    pub fn new(addr: NodeAddr, timeout: Duration, via: Connector) -> Self {
        Self {
            addr: vec![addr],
            timeout,
            via,
        }
    }
}

impl TopologySource for StandaloneSource {
    async fn discover(&self, _candidates: &[NodeAddr]) -> Result<Layout, TopologyError> {
        let Some(addr) = self.addr.first().cloned() else {
            return Err(TopologyError::NoNodeAnswered(Vec::new()));
        };
        let probe = async {
            let mut c = Control::connect(&addr, &self.via).await?;
            let info = c.command(&["INFO", "server"], "INFO").await?;
            Ok::<_, TopologyError>((redis_version(&info), databases(&mut c).await))
        };
        let (version, databases) =
            tokio::time::timeout(self.timeout, probe)
                .await
                .map_err(|_| TopologyError::Unreachable {
                    addr: addr.clone(),
                    reason: format!("no answer within {:?}", self.timeout),
                })??;
        Ok(Layout::single(addr, Vec::new(), version).with_databases(databases))
    }

    fn seeds(&self) -> &[NodeAddr] {
        &self.addr
    }
}
