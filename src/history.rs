//! One history per replica (SPEC section 6): whose transactions a replica holds, and whether a
//! database may add to them.
//!
//! The replica records its owner in `manifest.json` (`history`, `generation`); the shadow
//! directory records, in `state.json`, which history the database continues. A history is a
//! random 64-bit id given when a database first claims an empty replica; a generation starts
//! with each deliberate takeover (`walrust_takeover()`, `walrust takeover`), whose snapshot's
//! TXID is past every TXID the replica ever held. `decide` is the whole rule, as a pure
//! function of what the uploader read: it is checked before a process's first upload and again
//! whenever a conditional write of the manifest finds it changed.
//!
//! What must hold: a database uploads only to a replica whose owner it is; a database that
//! does not continue the replica's history (another file on the same URL, a copy that
//! diverged, an old primary after a takeover) is refused, never merged into it.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::Read;

/// A replica's history: a random id, printed as 16 hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HistoryId(pub u64);

impl HistoryId {
    /// A new random id (from the operating system's generator).
    pub fn random() -> HistoryId {
        let mut b = [0u8; 8];
        let ok = std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut b))
            .is_ok();
        if !ok || b == [0; 8] {
            // No /dev/urandom: time, process and address are unique enough for an id that only
            // has to differ from other databases' ids.
            let seed = format!("{}-{}-{:p}", crate::clock::now_ms(), std::process::id(), &b);
            use sha2::Digest;
            b.copy_from_slice(&sha2::Sha256::digest(seed.as_bytes())[..8]);
        }
        HistoryId(u64::from_be_bytes(b).max(1))
    }

    pub fn parse(s: &str) -> Option<HistoryId> {
        (s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| u64::from_str_radix(s, 16).ok().map(HistoryId))
            .flatten()
    }
}

impl fmt::Display for HistoryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl Serialize for HistoryId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HistoryId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<HistoryId, D::Error> {
        let s = String::deserialize(d)?;
        HistoryId::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("bad history id {s:?}")))
    }
}

/// Who may write a replica: a history and its current generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub history: HistoryId,
    pub generation: u64,
}

impl Owner {
    pub fn new_history() -> Owner {
        Owner {
            history: HistoryId::random(),
            generation: 1,
        }
    }

    /// The next generation of the same history (a takeover).
    pub fn next_generation(self) -> Owner {
        Owner {
            generation: self.generation + 1,
            ..self
        }
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "history {} generation {}", self.history, self.generation)
    }
}

/// What the uploader knows of the replica when it decides.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplicaView {
    /// The owner `manifest.json` names (`None`: no manifest, or one written before owners).
    pub owner: Option<Owner>,
    /// The newest TXID of any file listed.
    pub max_txid: u64,
    /// The replica has any file at all.
    pub has_files: bool,
}

/// What the shadow directory says about this database.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocalView {
    /// The history this database continues, once it has uploaded (or been restored).
    pub owner: Option<Owner>,
    pub uploaded_txid: u64,
    /// Restored from the replica at this TXID and not yet uploaded since.
    pub restored_txid: Option<u64>,
    /// A takeover is pending: the owner above was just claimed, a snapshot must follow.
    pub takeover: bool,
}

/// The decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// An empty replica: claim it with a new history, then snapshot.
    Claim,
    /// Ours, and the replica ends where `state.json` says we stopped.
    Continue,
    /// Ours, and the replica holds files past `uploaded_txid` (an uploader died before it
    /// recorded them): resume from `replica_max` if the shadow log still has it.
    Resume { replica_max: u64 },
    /// Ours, but the replica is behind what we recorded (files were removed by hand), or a
    /// takeover is pending: a snapshot with a TXID past `above`.
    Snapshot { above: u64 },
    /// A replica written before owners existed, by this database: record the owner, then
    /// decide again as its owner.
    Adopt,
    /// Not ours: nothing of this database may reach the replica.
    Refuse(Refusal),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The replica holds another database's history (or files we did not write).
    Foreign { theirs: Option<Owner> },
    /// A later generation of our history took the replica over.
    Superseded { ours: Owner, theirs: Owner },
    /// Restored at a TXID the replica has moved past: a diverged copy.
    Diverged { restored: u64, replica_max: u64 },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Foreign { theirs: Some(o) } => write!(
                f,
                "the replica holds another database's history ({o}), not this database's"
            ),
            Refusal::Foreign { theirs: None } => write!(
                f,
                "the replica holds files this database did not write (another database, or Litestream)"
            ),
            Refusal::Superseded { ours, theirs } => write!(
                f,
                "another database took the replica over ({theirs}); this one continues {ours}"
            ),
            Refusal::Diverged {
                restored,
                replica_max,
            } => write!(
                f,
                "this database was restored at TXID {restored} but the replica has moved on to TXID {replica_max}"
            ),
        }
    }
}

/// The rule (module doc).
pub fn decide(replica: &ReplicaView, local: &LocalView) -> Verdict {
    match (replica.owner, local.owner) {
        (None, _) if !replica.has_files => Verdict::Claim,
        // Written by this database (its state.json names this replica and an upload) before
        // owners existed, or before a claim of its own that never landed: whether it then
        // continues, resumes or snapshots is decided as owner.
        (None, _) if local.uploaded_txid > 0 => Verdict::Adopt,
        (None, _) => Verdict::Refuse(Refusal::Foreign { theirs: None }),
        (Some(theirs), Some(ours)) if theirs.history == ours.history => {
            if ours.generation < theirs.generation {
                Verdict::Refuse(Refusal::Superseded { ours, theirs })
            } else if ours.generation > theirs.generation {
                // Our takeover's manifest write did not land: a foreign writer won meanwhile.
                Verdict::Refuse(Refusal::Foreign {
                    theirs: Some(theirs),
                })
            } else if local.takeover || replica.max_txid < local.uploaded_txid {
                Verdict::Snapshot {
                    above: replica.max_txid.max(local.uploaded_txid),
                }
            } else if !replica.has_files {
                Verdict::Snapshot {
                    above: local.uploaded_txid,
                }
            } else if replica.max_txid > local.uploaded_txid {
                Verdict::Resume {
                    replica_max: replica.max_txid,
                }
            } else {
                Verdict::Continue
            }
        }
        (Some(theirs), None) => match local.restored_txid {
            Some(t) if t == replica.max_txid => Verdict::Continue,
            Some(t) => Verdict::Refuse(Refusal::Diverged {
                restored: t,
                replica_max: replica.max_txid,
            }),
            None if !replica.has_files => Verdict::Claim,
            None => Verdict::Refuse(Refusal::Foreign {
                theirs: Some(theirs),
            }),
        },
        (Some(theirs), Some(_)) => Verdict::Refuse(Refusal::Foreign {
            theirs: Some(theirs),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(h: u64, g: u64) -> Option<Owner> {
        Some(Owner {
            history: HistoryId(h),
            generation: g,
        })
    }

    fn replica(o: Option<Owner>, max: u64) -> ReplicaView {
        ReplicaView {
            owner: o,
            max_txid: max,
            has_files: max > 0,
        }
    }

    fn local(o: Option<Owner>, uploaded: u64) -> LocalView {
        LocalView {
            owner: o,
            uploaded_txid: uploaded,
            ..LocalView::default()
        }
    }

    #[test]
    fn an_empty_replica_is_claimed() {
        assert_eq!(decide(&replica(None, 0), &local(None, 0)), Verdict::Claim);
        // An owner recorded but every file gone (a replica emptied by hand) is claimed again.
        assert_eq!(
            decide(&replica(owner(1, 1), 0), &local(None, 0)),
            Verdict::Claim
        );
    }

    #[test]
    fn the_owner_continues_or_resumes() {
        let o = owner(7, 2);
        assert_eq!(decide(&replica(o, 12), &local(o, 12)), Verdict::Continue);
        assert_eq!(
            decide(&replica(o, 20), &local(o, 12)),
            Verdict::Resume { replica_max: 20 }
        );
        assert_eq!(
            decide(&replica(o, 10), &local(o, 12)),
            Verdict::Snapshot { above: 12 }
        );
    }

    #[test]
    fn another_database_is_refused() {
        let theirs = owner(7, 1);
        assert!(matches!(
            decide(&replica(theirs, 12), &local(None, 0)),
            Verdict::Refuse(Refusal::Foreign { .. })
        ));
        assert!(matches!(
            decide(&replica(theirs, 12), &local(owner(8, 1), 12)),
            Verdict::Refuse(Refusal::Foreign { .. })
        ));
        // Files without an owner, and this database never uploaded: Litestream's, say.
        assert!(matches!(
            decide(&replica(None, 12), &local(None, 0)),
            Verdict::Refuse(Refusal::Foreign { theirs: None })
        ));
    }

    #[test]
    fn an_old_primary_is_refused_after_a_takeover() {
        let v = decide(&replica(owner(7, 3), 40), &local(owner(7, 2), 30));
        assert!(
            matches!(v, Verdict::Refuse(Refusal::Superseded { .. })),
            "{v:?}"
        );
        let msg = match v {
            Verdict::Refuse(r) => r.to_string(),
            _ => unreachable!(),
        };
        assert!(
            msg.contains("generation 3") && msg.contains("generation 2"),
            "{msg}"
        );
    }

    #[test]
    fn a_restored_copy_continues_only_from_the_newest_point() {
        let theirs = owner(7, 1);
        let restored = |t| LocalView {
            restored_txid: Some(t),
            ..LocalView::default()
        };
        assert_eq!(
            decide(&replica(theirs, 12), &restored(12)),
            Verdict::Continue
        );
        assert!(matches!(
            decide(&replica(theirs, 15), &restored(12)),
            Verdict::Refuse(Refusal::Diverged { .. })
        ));
    }

    #[test]
    fn a_legacy_replica_of_ours_is_adopted() {
        assert_eq!(decide(&replica(None, 9), &local(None, 9)), Verdict::Adopt);
        // An uploader of the old version died after an upload: still ours, then resumed.
        assert_eq!(decide(&replica(None, 12), &local(None, 9)), Verdict::Adopt);
        let o = owner(5, 1);
        assert_eq!(
            decide(&replica(o, 12), &local(o, 9)),
            Verdict::Resume { replica_max: 12 }
        );
    }

    #[test]
    fn a_claim_recorded_ahead_survives_a_kill_on_either_side_of_the_manifest_write() {
        let o = owner(7, 1);
        // Killed after state.json named `o`, before the manifest did: claimed afresh, or
        // adopted when this database had uploaded there before owners existed.
        assert_eq!(decide(&replica(None, 0), &local(o, 0)), Verdict::Claim);
        assert_eq!(decide(&replica(None, 12), &local(o, 9)), Verdict::Adopt);
        // Killed after the manifest named `o`, before anything was uploaded: ours, snapshot.
        let empty = ReplicaView {
            owner: o,
            max_txid: 0,
            has_files: false,
        };
        assert_eq!(decide(&empty, &local(o, 0)), Verdict::Snapshot { above: 0 });
    }

    #[test]
    fn a_pending_takeover_snapshots_past_everything() {
        let o = owner(7, 4);
        let l = LocalView {
            owner: o,
            uploaded_txid: 50,
            takeover: true,
            ..LocalView::default()
        };
        assert_eq!(decide(&replica(o, 60), &l), Verdict::Snapshot { above: 60 });
    }

    #[test]
    fn ids_print_and_parse_as_16_hex_digits() {
        let id = HistoryId::random();
        assert_eq!(HistoryId::parse(&id.to_string()), Some(id));
        assert_eq!(HistoryId::parse("xyz"), None);
        assert_ne!(HistoryId::random(), HistoryId::random());
    }
}
