//! The like aggregate's pure logic: state from history, and the decision a
//! request leads to.

use tally_shared::event::EventKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LikeState {
    Liked,
    NotLiked,
}

impl LikeState {
    /// The state after an event on the aggregate's subject.
    pub fn after(kind: EventKind) -> LikeState {
        match kind {
            EventKind::Liked => LikeState::Liked,
            _ => LikeState::NotLiked,
        }
    }

    /// The state after a whole history (empty: never liked).
    #[cfg(test)]
    pub fn from_history(history: &[EventKind]) -> LikeState {
        history
            .last()
            .map_or(LikeState::NotLiked, |kind| LikeState::after(*kind))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Already in the desired state: idempotent, nothing to append.
    Unchanged,
    /// Append this event.
    Append(EventKind),
}

pub fn decide(current: LikeState, desired: LikeState) -> Decision {
    match (current, desired) {
        (LikeState::NotLiked, LikeState::Liked) => Decision::Append(EventKind::Liked),
        (LikeState::Liked, LikeState::NotLiked) => Decision::Append(EventKind::Unliked),
        _ => Decision::Unchanged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use EventKind::{Liked as L, Unliked as U};

    /// Given a history, when a request wants `desired`, then `expected`.
    fn check(given: &[EventKind], desired: LikeState, expected: Decision) {
        let decision = decide(LikeState::from_history(given), desired);
        assert_eq!(decision, expected, "given {given:?}, when {desired:?}");
    }

    #[test]
    fn the_like_aggregate() {
        check(&[], LikeState::Liked, Decision::Append(L));
        check(&[], LikeState::NotLiked, Decision::Unchanged);
        check(&[L], LikeState::Liked, Decision::Unchanged);
        check(&[L], LikeState::NotLiked, Decision::Append(U));
        check(&[L, U], LikeState::Liked, Decision::Append(L));
        check(&[L, U], LikeState::NotLiked, Decision::Unchanged);
        check(&[L, U, L], LikeState::Liked, Decision::Unchanged);
    }
}
