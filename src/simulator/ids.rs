//! Identifiers and cursors of the simulated Currents world.
//!
//! Cursors are 24 hex digits (Mongo-ObjectId-like, as the real API shows them) that
//! encode the item's position in the feed: 12 digits of creation time in milliseconds,
//! then 12 digits of a global sequence number. Keyset pagination therefore keeps working
//! when the item a cursor came from has been deleted in the meantime.
//!
//! Instance and machine ids are derived from (run sequence, spec index) through an
//! invertible mix, so they look random, need no storage, and can be resolved back.

use rand::Rng;

/// Position of an item in a feed: (createdAt in ms, sequence). Feeds are newest first.
pub type Key = (i64, u64);

const MASK48: u64 = 0xffff_ffff_ffff;

pub fn encode_cursor(k: Key) -> String {
    let ms = k.0.clamp(0, MASK48 as i64) as u64;
    format!("{:012x}{:012x}", ms, k.1 & MASK48)
}

pub fn decode_cursor(s: &str) -> Option<Key> {
    if s.len() != 24 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let ms = u64::from_str_radix(&s[..12], 16).ok()?;
    let seq = u64::from_str_radix(&s[12..], 16).ok()?;
    Some((ms as i64, seq))
}

const K: u64 = 0x9e37_79b9_7f4a_7c15;
const C: u64 = 0x5851_f42d_4c95_7f2d;

const fn mod_inverse(k: u64) -> u64 {
    // Newton iteration: each step doubles the number of correct low bits.
    let mut inv = k;
    let mut i = 0;
    while i < 6 {
        inv = inv.wrapping_mul(2u64.wrapping_sub(k.wrapping_mul(inv)));
        i += 1;
    }
    inv
}
const K_INV: u64 = mod_inverse(K);

fn mix(x: u64) -> u64 {
    x.wrapping_mul(K).rotate_left(23) ^ C
}

fn unmix(y: u64) -> u64 {
    (y ^ C).rotate_right(23).wrapping_mul(K_INV)
}

fn instance_value(seq: u64, idx: usize) -> u64 {
    (seq << 16) | (idx as u64 & 0xffff)
}

/// The instance id of spec `idx` of the run with sequence `seq`: 16 hex digits for
/// Playwright, a UUID for Cypress.
pub fn instance_id(seq: u64, idx: usize, uuid: bool) -> String {
    let v = mix(instance_value(seq, idx));
    if uuid {
        let hi = mix(v ^ 0x0123_4567_89ab_cdef);
        let h = format!("{hi:016x}{v:016x}");
        format!(
            "{}-{}-4{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[13..16],
            &h[16..20],
            &h[20..32]
        )
    } else {
        format!("{v:016x}")
    }
}

/// Resolves an instance id back to (run sequence, spec index).
pub fn parse_instance_id(id: &str) -> Option<(u64, usize)> {
    let hex: String = id.chars().filter(|c| *c != '-').collect();
    let tail = match hex.len() {
        16 => hex.as_str(),
        32 => &hex[16..],
        _ => return None,
    };
    if !tail.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let v = u64::from_str_radix(tail, 16).ok()?;
    let raw = unmix(v);
    let (seq, idx) = (raw >> 16, (raw & 0xffff) as usize);
    // Reject strings that merely happen to decode.
    (instance_id(seq, idx, hex.len() == 32) == id).then_some((seq, idx))
}

/// A machine id: 12 alphanumerics for Playwright, a UUID for Cypress.
pub fn machine_id(seq: u64, group: usize, machine: usize, uuid: bool) -> String {
    let v = mix((seq << 16) ^ ((group as u64) << 8) ^ machine as u64 ^ 0xabcd_0000_0000_0000);
    if uuid {
        let hi = mix(v);
        let h = format!("{hi:016x}{v:016x}");
        format!(
            "{}-{}-4{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[13..16],
            &h[16..20],
            &h[20..32]
        )
    } else {
        const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let mut x = v;
        (0..12)
            .map(|_| {
                let c = ALNUM[(x % ALNUM.len() as u64) as usize] as char;
                x /= ALNUM.len() as u64;
                if x == 0 {
                    x = mix(v.rotate_left(7));
                }
                c
            })
            .collect()
    }
}

pub fn random_hex<R: Rng>(rng: &mut R, len: usize) -> String {
    const HEX: &[u8] = b"0123456789abcdef";
    (0..len)
        .map(|_| HEX[rng.gen_range(0..16)] as char)
        .collect()
}

pub fn random_alnum<R: Rng>(rng: &mut R, len: usize) -> String {
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|_| ALNUM[rng.gen_range(0..ALNUM.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_roundtrip() {
        let k = (1_716_813_012_345, 77);
        let c = encode_cursor(k);
        assert_eq!(c.len(), 24);
        assert_eq!(decode_cursor(&c), Some(k));
        assert_eq!(decode_cursor("zz"), None);
    }

    #[test]
    fn instance_ids_roundtrip() {
        for seq in [0u64, 1, 2, 99_999, 1 << 40] {
            for idx in [0usize, 1, 7, 300] {
                for uuid in [false, true] {
                    let id = instance_id(seq, idx, uuid);
                    assert_eq!(parse_instance_id(&id), Some((seq, idx)), "{id}");
                }
            }
        }
        assert_eq!(parse_instance_id("0000000000000000x"), None);
        assert_ne!(instance_id(1, 0, false), instance_id(1, 1, false));
    }
}
