//! The shard hash function: how a distribution-key value picks its hash shard.
//!
//! The function is part of the on-disk contract (rows live on the shard their
//! key hashes to), so it is defined here exactly and pinned by test vectors.
//!
//! 1. The key is encoded canonically: integers of every width as the 8-byte
//!    little-endian two's complement of their `i64` value, prefixed by `b'i'`;
//!    text as its UTF-8 bytes prefixed by `b't'`; bytes prefixed by `b'b'`.
//!    So `int4` 7 and `int8` 7 hash alike, which keeps joins between them co-located.
//! 2. The encoding is hashed with 64-bit FNV-1a, then mixed with the
//!    SplitMix64 finaliser so that nearby integers spread over the ring.
//! 3. The upper 32 bits are the key's *hash token*. A table with `n` hash
//!    shards gives shard `i` the contiguous token range
//!    `[i * 2^32 / n, (i + 1) * 2^32 / n)`, so a shard can later be split
//!    by halving its range without rehashing the others.

/// A distribution-key value, already coerced to the key column's type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DistKey {
    /// Any integer column (int2, int4, int8).
    Int(i64),
    /// Text-like columns (text, varchar, uuid, date, timestamp as text).
    Text(String),
    /// bytea.
    Bytes(Vec<u8>),
    /// SQL NULL: hashes to token 0.
    Null,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h = FNV_OFFSET;
    for part in parts {
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(FNV_PRIME);
        }
    }
    h
}

fn splitmix64_finalize(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The 32-bit hash token of a key.
pub fn hash_token(key: &DistKey) -> u32 {
    let h = match key {
        DistKey::Null => return 0,
        DistKey::Int(v) => fnv1a(&[b"i", &v.to_le_bytes()]),
        DistKey::Text(s) => fnv1a(&[b"t", s.as_bytes()]),
        DistKey::Bytes(b) => fnv1a(&[b"b", b]),
    };
    (splitmix64_finalize(h) >> 32) as u32
}

/// The shard index (0-based) that owns `token` in a table of `shard_count` hash shards.
pub fn shard_for_token(token: u32, shard_count: u32) -> u32 {
    let n = u64::from(shard_count.max(1));
    ((u64::from(token) * n) >> 32) as u32
}

/// The shard index that owns `key` in a table of `shard_count` hash shards.
pub fn shard_for_key(key: &DistKey, shard_count: u32) -> u32 {
    shard_for_token(hash_token(key), shard_count)
}

/// The inclusive token range `[lo, hi]` owned by shard `index` of `shard_count`.
pub fn token_range(index: u32, shard_count: u32) -> (u32, u32) {
    let n = u64::from(shard_count.max(1));
    let lo = (u64::from(index) << 32).div_ceil(n);
    let hi = ((u64::from(index) + 1) << 32).div_ceil(n) - 1;
    (lo as u32, hi as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pinned vectors, computed independently from the definition above (a
    /// ten-line Python reimplementation). Changing any of these moves rows
    /// between shards: it needs an on-disk format version bump and a migration.
    #[test]
    fn test_vectors() {
        let vectors = [
            (DistKey::Int(0), 377_109_877u32),
            (DistKey::Int(1), 2_174_750_675),
            (DistKey::Int(-1), 3_717_095_900),
            (DistKey::Text(String::new()), 3_070_028_415),
            (DistKey::Text("tessera".into()), 4_160_339_131),
            (DistKey::Null, 0),
        ];
        for (key, want) in vectors {
            assert_eq!(hash_token(&key), want, "hash token of {key:?}");
        }
        assert_eq!(shard_for_key(&DistKey::Int(1), 4), 2);
        assert_eq!(shard_for_key(&DistKey::Text("tessera".into()), 3), 2);
    }

    #[test]
    fn shard_ranges_cover_the_ring() {
        for n in [1u32, 2, 3, 4, 7, 32, 1000] {
            let mut next = 0u64;
            for i in 0..n {
                let (lo, hi) = token_range(i, n);
                assert_eq!(u64::from(lo), next, "n={n} i={i}");
                assert!(hi >= lo);
                assert_eq!(shard_for_token(lo, n), i);
                assert_eq!(shard_for_token(hi, n), i);
                next = u64::from(hi) + 1;
            }
            assert_eq!(next, 1u64 << 32);
        }
    }

    #[test]
    fn keys_spread_evenly() {
        let n = 4;
        let mut counts = [0u32; 4];
        for k in 0..40_000i64 {
            counts[shard_for_key(&DistKey::Int(k), n) as usize] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn integer_widths_hash_alike() {
        assert_eq!(
            hash_token(&DistKey::Int(7)),
            hash_token(&DistKey::Int(i64::from(7i32)))
        );
        assert_ne!(
            hash_token(&DistKey::Int(7)),
            hash_token(&DistKey::Text("7".into()))
        );
    }
}
