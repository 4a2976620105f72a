//! What `/ready` answers: whether slotgate can serve, as a pure decision over the facts the
//! admin listener gathers (draining, how many slots have a master and how many of those a
//! reachable one). By default (`ready_requires = "one-master"`) one shard down leaves slotgate
//! ready: every application pod behind its own sidecar turning unready at once would make a
//! partial outage a full one; the partial coverage is reported instead (`/health`'s detail,
//! `slotgate_slots_reachable`, the `SlotgatePartialCoverage` alert). `"all-slots"` is the
//! strict form, for those who want a pod out of rotation while any slot cannot be served.
//!
//! This module must never look at the topology or the clock itself: it decides over
//! [`Coverage`] only, so that every branch is a unit test.

use crate::router::SLOTS;

/// What `/ready` requires (`[admin] ready_requires`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadyRequires {
    /// At least one master reachable (and a topology known, and not draining).
    #[default]
    OneMaster,
    /// Every slot served by a reachable master.
    AllSlots,
}

impl ReadyRequires {
    pub const NAMES: [&'static str; 2] = ["one-master", "all-slots"];

    pub fn parse(s: &str) -> Option<ReadyRequires> {
        match s {
            "one-master" => Some(ReadyRequires::OneMaster),
            "all-slots" => Some(ReadyRequires::AllSlots),
            _ => None,
        }
    }
}

/// How much of the keyspace slotgate can serve now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Coverage {
    /// Slots with a master in the topology.
    pub mapped: usize,
    /// Of those, slots whose master is reachable.
    pub reachable: usize,
    /// The masters that are not reachable.
    pub down: Vec<String>,
}

impl Coverage {
    /// Whether some slot cannot be served: unmapped, or its master unreachable.
    pub fn partial(&self) -> bool {
        self.reachable < SLOTS
    }
}

/// Why slotgate is not ready.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    #[error("draining")]
    Draining,
    #[error("no slot has a master")]
    NoTopology,
    #[error("no master is reachable (unreachable: {})", .0.join(", "))]
    NoMasterReachable(Vec<String>),
    #[error("{reachable} of {SLOTS} slots have a reachable master{}", unreachable(.down))]
    Partial { reachable: usize, down: Vec<String> },
}

fn unreachable(down: &[String]) -> String {
    if down.is_empty() {
        String::new()
    } else {
        format!(" (unreachable: {})", down.join(", "))
    }
}

/// `/ready`'s answer.
pub fn decide(requires: ReadyRequires, draining: bool, c: &Coverage) -> Result<(), NotReady> {
    if draining {
        return Err(NotReady::Draining);
    }
    if c.mapped == 0 {
        return Err(NotReady::NoTopology);
    }
    if c.reachable == 0 {
        return Err(NotReady::NoMasterReachable(c.down.clone()));
    }
    match requires {
        ReadyRequires::AllSlots if c.partial() => Err(NotReady::Partial {
            reachable: c.reachable,
            down: c.down.clone(),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cov(mapped: usize, reachable: usize, down: &[&str]) -> Coverage {
        Coverage {
            mapped,
            reachable,
            down: down.iter().map(|s| s.to_string()).collect(),
        }
    }

    const BOTH: [ReadyRequires; 2] = [ReadyRequires::OneMaster, ReadyRequires::AllSlots];

    #[test]
    fn should_be_ready_with_every_slot_reachable_whatever_is_required() {
        for r in BOTH {
            assert_eq!(decide(r, false, &cov(SLOTS, SLOTS, &[])), Ok(()));
        }
    }

    #[test]
    fn should_be_unready_while_draining_even_with_everything_reachable() {
        for r in BOTH {
            assert_eq!(
                decide(r, true, &cov(SLOTS, SLOTS, &[])),
                Err(NotReady::Draining)
            );
        }
    }

    #[test]
    fn should_be_unready_without_a_mapped_slot() {
        for r in BOTH {
            assert_eq!(decide(r, false, &cov(0, 0, &[])), Err(NotReady::NoTopology));
        }
    }

    #[test]
    fn should_be_unready_when_no_master_is_reachable() {
        let got = decide(ReadyRequires::OneMaster, false, &cov(SLOTS, 0, &["a:1"]));
        assert_eq!(got, Err(NotReady::NoMasterReachable(vec!["a:1".into()])));
        assert_eq!(
            got.unwrap_err().to_string(),
            "no master is reachable (unreachable: a:1)"
        );
    }

    #[test]
    fn should_stay_ready_with_one_shard_down_by_default() {
        let c = cov(SLOTS, 10923, &["a:1"]);
        assert!(c.partial());
        assert_eq!(decide(ReadyRequires::OneMaster, false, &c), Ok(()));
    }

    #[test]
    fn should_stay_ready_with_unmapped_slots_by_default() {
        assert_eq!(
            decide(ReadyRequires::OneMaster, false, &cov(8192, 8192, &[])),
            Ok(())
        );
    }

    #[test]
    fn should_be_unready_with_one_shard_down_when_all_slots_are_required() {
        let got = decide(ReadyRequires::AllSlots, false, &cov(SLOTS, 10923, &["a:1"]));
        assert_eq!(
            got.clone(),
            Err(NotReady::Partial {
                reachable: 10923,
                down: vec!["a:1".into()]
            })
        );
        assert_eq!(
            got.unwrap_err().to_string(),
            "10923 of 16384 slots have a reachable master (unreachable: a:1)"
        );
    }

    #[test]
    fn should_be_unready_with_unmapped_slots_when_all_slots_are_required() {
        let got = decide(ReadyRequires::AllSlots, false, &cov(8192, 8192, &[]));
        assert_eq!(
            got.unwrap_err().to_string(),
            "8192 of 16384 slots have a reachable master"
        );
    }

    #[test]
    fn should_parse_the_two_names_only() {
        assert_eq!(
            ReadyRequires::parse("one-master"),
            Some(ReadyRequires::OneMaster)
        );
        assert_eq!(
            ReadyRequires::parse("all-slots"),
            Some(ReadyRequires::AllSlots)
        );
        assert_eq!(ReadyRequires::parse("all"), None);
    }
}
