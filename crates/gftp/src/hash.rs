//! sha3-256 of files, computed as the bytes pass: [`OrderedHasher`] hashes
//! chunks that may arrive out of order (it keeps a bounded number of early
//! ones aside) and says when it lost track, so the caller rehashes the file.

use std::collections::BTreeMap;
use std::io::Read;

use sha3::{Digest, Sha3_256};

/// Bytes of early chunks kept aside before giving up on hashing in passing.
const MAX_PENDING_BYTES: usize = 64 * 1024 * 1024;

/// Lowercase hex of a finished hasher.
pub fn hex_digest(hasher: Sha3_256) -> String {
    hex::encode(hasher.finalize())
}

/// sha3-256 (lowercase hex) of everything `reader` yields.
pub fn hash_reader(mut reader: impl Read) -> std::io::Result<String> {
    let mut hasher = Sha3_256::new();
    let mut buffer = vec![0u8; 1024 * 1024];
    loop {
        let read = reader.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hex_digest(hasher))
}

/// Hashes chunks in file order whatever order they are fed in.
#[derive(Default)]
pub struct OrderedHasher {
    hasher: Sha3_256,
    /// Bytes hashed so far (the next offset expected).
    next: u64,
    pending: BTreeMap<u64, Vec<u8>>,
    pending_bytes: usize,
    /// A chunk overlapped hashed data or too much was pending.
    lost: bool,
}

impl OrderedHasher {
    pub fn feed(&mut self, offset: u64, bytes: &[u8]) {
        if self.lost || bytes.is_empty() {
            return;
        }
        if offset != self.next {
            if offset < self.next
                || self.pending.contains_key(&offset)
                || self.pending_bytes + bytes.len() > MAX_PENDING_BYTES
            {
                self.lose();
                return;
            }
            self.pending_bytes += bytes.len();
            self.pending.insert(offset, bytes.to_vec());
            return;
        }
        self.hasher.update(bytes);
        self.next += bytes.len() as u64;
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() > self.next {
                break;
            }
            let (offset, bytes) = entry.remove_entry();
            self.pending_bytes -= bytes.len();
            if offset != self.next {
                self.lose();
                return;
            }
            self.hasher.update(&bytes);
            self.next += bytes.len() as u64;
        }
    }

    fn lose(&mut self) {
        self.lost = true;
        self.pending.clear();
        self.pending_bytes = 0;
    }

    /// The hash of the first `length` bytes, if every one of them was fed
    /// exactly once; `None` means: hash the file itself.
    pub fn finish(&self, length: u64) -> Option<String> {
        if self.lost || !self.pending.is_empty() || self.next != length {
            return None;
        }
        Some(hex_digest(self.hasher.clone()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn hashes_out_of_order_chunks_like_the_whole_file() {
        let data: Vec<u8> = (0..10_000u32).map(|n| (n % 251) as u8).collect();
        let whole = hash_reader(data.as_slice()).unwrap();
        let mut hasher = OrderedHasher::default();
        for index in [2usize, 0, 3, 1, 4] {
            let start = index * 2000;
            hasher.feed(start as u64, &data[start..start + 2000]);
        }
        assert_eq!(hasher.finish(10_000).as_deref(), Some(whole.as_str()));
        assert_eq!(hasher.finish(9_000), None);
    }

    #[test]
    fn overlapping_chunks_make_it_give_up() {
        let mut hasher = OrderedHasher::default();
        hasher.feed(0, b"abcd");
        hasher.feed(2, b"cd");
        assert_eq!(hasher.finish(4), None);
    }

    #[test]
    fn known_sha3_of_empty_input() {
        assert_eq!(
            hash_reader(&b""[..]).unwrap(),
            "a7ffc6f8bf1ed76651c14756a061d662f580ff4de43b49fa82d80a4b80f8434a"
        );
    }
}
