//! Fingerprints of values the operator only ever compares (Secret names, resourceVersions,
//! token digests): kept as 64 bits instead of copies of the strings, in the connection states
//! (`state.rs`, `own_writes.rs`) and in the Secret names the watch has seen (`presence.rs`).

use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::OnceLock;

/// A 64-bit fingerprint of `value`, keyed per process (so that nobody can choose values that
/// collide).
pub fn fingerprint(value: impl Hash) -> u64 {
    static KEY: OnceLock<RandomState> = OnceLock::new();
    KEY.get_or_init(RandomState::new).hash_one(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_agree_and_the_parts_count_apart() {
        assert_eq!(fingerprint(("a", "b")), fingerprint(("a", "b")));
        // Each part of a tuple is hashed with its end marked: moving a character across the
        // boundary makes another value.
        assert_ne!(fingerprint(("ab", "c")), fingerprint(("a", "bc")));
    }
}
