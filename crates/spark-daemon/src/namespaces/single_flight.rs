//! Single-flight fills: concurrent callers for one key share one fill and all get its result, or all get its
//! error. Nothing of a failed fill is remembered, so the next caller tries again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::watch;

/// Why a fill failed, shared by every caller that waited for it.
pub type FillError = Arc<anyhow::Error>;

type Outcome = Option<Result<Bytes, FillError>>;

#[derive(Default)]
pub struct SingleFlight {
    flights: Mutex<HashMap<Vec<u8>, watch::Receiver<Outcome>>>,
}

/// A caller's part in a flight.
pub enum Role {
    /// Run the fill and [`Leader::finish`] with its result.
    Leader(Leader),
    /// Someone else runs it: wait with [`follow`].
    Follower(watch::Receiver<Outcome>),
}

/// The caller running a key's fill. Dropping it without finishing (a cancelled caller) releases the followers,
/// who then try again themselves. The flight lasts as long as its leader: one kept after [`Leader::publish`]
/// hands its result to every caller that arrives meanwhile.
pub struct Leader {
    sf: Arc<SingleFlight>,
    key: Vec<u8>,
    tx: watch::Sender<Outcome>,
}

impl SingleFlight {
    pub fn join(self: &Arc<Self>, key: &[u8]) -> Role {
        let mut map = self.flights.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(rx) = map.get(key) {
            return Role::Follower(rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        map.insert(key.to_vec(), rx);
        Role::Leader(Leader {
            sf: self.clone(),
            key: key.to_vec(),
            tx,
        })
    }

    /// Keys being filled now.
    pub fn in_flight(&self) -> usize {
        self.flights.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Leader {
    /// Hands the result to every follower and ends the flight.
    pub fn finish(self, r: Result<Bytes, FillError>) {
        self.publish(r);
    }

    /// Hands the result to every follower, and to every caller that joins until the leader is dropped.
    pub fn publish(&self, r: Result<Bytes, FillError>) {
        self.tx.send_replace(Some(r));
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        let mut map = self.sf.flights.lock().unwrap_or_else(|e| e.into_inner());
        if map
            .get(&self.key)
            .is_some_and(|rx| rx.same_channel(&self.tx.subscribe()))
        {
            map.remove(&self.key);
        }
    }
}

/// Waits for the leader's result; `None` when the leader gave up without one.
pub async fn follow(mut rx: watch::Receiver<Outcome>) -> Option<Result<Bytes, FillError>> {
    match rx.wait_for(|o| o.is_some()).await {
        Ok(o) => o.clone(),
        Err(_) => None,
    }
}
