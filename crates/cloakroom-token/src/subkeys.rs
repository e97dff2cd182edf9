//! The subkeys of recently opened sealed tokens, so that opening the same token again (a
//! cookie comes back with every request) skips HChaCha20 and ring's key setup.
//!
//! A sealed token's ChaCha20-Poly1305 key is HChaCha20(seal key, nonce[0..16]): a pure
//! function of the codec's key and the token's nonce, so a cached one is exactly the key that
//! would be computed. The design that keeps the cache from being an attacker's tool:
//!
//! - **Only authentic tokens get in.** A subkey is cached after its token's tag has verified,
//!   so every entry belongs to a token this key minted (with a random nonce); a forged or
//!   tampered token is looked up, misses (or hits and fails its tag) and changes nothing.
//! - **Bounded and per key.** One cache per ring key and purpose ([`crate::Codec`] keeps one
//!   in each derived key), direct-mapped: [`SLOTS`] entries, the slot chosen by the nonce's
//!   first bytes (random for every token that can be in it). Its memory is allocated on the
//!   first token that opens, so a codec that only signs never holds one. A new key ring
//!   means a new codec, and the old codec's cache goes with it.
//! - **Never waits.** Each slot has its own lock, taken with `try_read`/`try_write`: a busy
//!   slot is a miss (the subkey is computed as without a cache), never a wait.
//! - **Overwritten, not left behind.** ring's keys do not zeroize themselves: an evicted key
//!   is overwritten in place by its successor, and when the cache is dropped each key is
//!   overwritten with a key made from zeros before its memory is freed.
//! - A hit is faster than a miss, which tells a client whether the 16 nonce bytes of the token
//!   it sent belong to a token opened recently: it must already hold such a token to ask.

use std::sync::{OnceLock, RwLock};

use ring::aead::LessSafeKey;

use crate::xchacha;

/// Entries per cache (a power of two).
pub(crate) const SLOTS: usize = 1024;

/// One cached subkey and the nonce prefix it belongs to.
struct Entry {
    prefix: [u8; 16],
    key: LessSafeKey,
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.key = xchacha::zero_key();
        std::hint::black_box(&self.key);
    }
}

/// One slot of the cache: empty until a token whose nonce maps to it opens.
type Slot = RwLock<Option<Box<Entry>>>;

/// The cache; see the module documentation.
#[derive(Default)]
pub(crate) struct SubkeyCache {
    slots: OnceLock<Box<[Slot]>>,
}

fn slot_of(prefix: &[u8; 16]) -> usize {
    let mut first = [0u8; 8];
    first.copy_from_slice(&prefix[..8]);
    // Truncation on 32-bit targets keeps the low bits, which are the ones masked.
    (u64::from_le_bytes(first) as usize) & (SLOTS - 1)
}

impl SubkeyCache {
    /// Runs `f` with the cached subkey for `prefix`; `None` (and `f` not run) on a miss or a
    /// busy slot.
    pub(crate) fn with<R>(
        &self,
        prefix: &[u8; 16],
        f: impl FnOnce(&LessSafeKey) -> R,
    ) -> Option<R> {
        let slot = self.slots.get()?[slot_of(prefix)].try_read().ok()?;
        let entry = slot.as_deref()?;
        (entry.prefix == *prefix).then(|| f(&entry.key))
    }

    /// Keeps `key` as the subkey for `prefix`, replacing what its slot held. Call it only
    /// once a token with this nonce prefix has verified under `key`.
    pub(crate) fn insert(&self, prefix: [u8; 16], key: LessSafeKey) {
        let slots = self.slots.get_or_init(|| {
            std::iter::repeat_with(|| RwLock::new(None))
                .take(SLOTS)
                .collect()
        });
        if let Ok(mut slot) = slots[slot_of(&prefix)].try_write() {
            match slot.as_deref_mut() {
                // In place: the new key is written over the old one's memory, so an eviction
                // neither allocates nor leaves the old key behind.
                Some(entry) => {
                    entry.prefix = prefix;
                    entry.key = key;
                }
                None => *slot = Some(Box::new(Entry { prefix, key })),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subkey_is_found_by_its_whole_prefix_only() {
        let cache = SubkeyCache::default();
        let key = [7u8; 32];
        let nonce = [9u8; 24];
        let prefix: [u8; 16] = nonce[..16].try_into().unwrap();
        assert!(cache.with(&prefix, |_| ()).is_none(), "empty");
        cache.insert(prefix, xchacha::subkey(&key, &nonce));
        assert!(cache.with(&prefix, |_| ()).is_some());
        // Same slot (same first 8 bytes), another prefix: a miss, not the wrong key.
        let mut other = prefix;
        other[15] ^= 1;
        assert_eq!(slot_of(&other), slot_of(&prefix));
        assert!(cache.with(&other, |_| ()).is_none());
        // It replaces the entry of its slot.
        cache.insert(other, xchacha::subkey(&key, &nonce));
        assert!(cache.with(&prefix, |_| ()).is_none());
        assert!(cache.with(&other, |_| ()).is_some());
    }
}
