//! Fresh ids and tickets from the OS random source.

use std::time::{SystemTime, UNIX_EPOCH};

/// Zeppelin's note-id alphabet: `1-9A-HJKMNP-Z` (no 0, I, L, O).
const NOTE_ID_ALPHABET: &[u8; 32] = b"123456789ABCDEFGHJKMNPQRSTUVWXYZ";

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // The OS random source failing is not recoverable for a server that
    // must issue unguessable ids; getrandom only fails on broken systems.
    getrandom::fill(&mut bytes).expect("the OS random source is unavailable");
    bytes
}

/// A new 9-character note id.
pub fn note_id() -> String {
    random_bytes::<9>()
        .iter()
        .map(|b| char::from(NOTE_ID_ALPHABET[usize::from(b % 32)]))
        .collect()
}

/// A new paragraph id (also its job name): `paragraph_<epochMillis>_<int>`.
pub fn paragraph_id() -> String {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let salt = i32::from_ne_bytes(random_bytes::<4>());
    format!("paragraph_{millis}_{salt}")
}

/// A random UUID v4 string, for tickets.
pub fn uuid_v4() -> String {
    let mut b = random_bytes::<16>();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|byte| format!("{byte:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_their_shapes() {
        let id = note_id();
        assert_eq!(id.len(), 9);
        assert!(id.bytes().all(|c| NOTE_ID_ALPHABET.contains(&c)));
        assert_ne!(note_id(), note_id());
        let pid = paragraph_id();
        let parts: Vec<&str> = pid.split('_').collect();
        assert_eq!(parts[0], "paragraph");
        assert!(parts[1].parse::<u64>().unwrap() > 1_500_000_000_000);
        assert!(parts[2].parse::<i32>().is_ok());
        let uuid = uuid_v4();
        assert_eq!(uuid.len(), 36);
        assert_eq!(uuid.as_bytes()[14], b'4');
    }
}
