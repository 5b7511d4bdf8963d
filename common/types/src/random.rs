//! Every token, id and nonce comes from a CSPRNG (DESIGN.md invariant 10).

use base64::Engine;
use rand::distr::{Alphanumeric, SampleString};
use sha2::{Digest, Sha256};

/// An alphanumeric string of `len` characters from the OS-seeded CSPRNG.
pub fn alphanumeric(len: usize) -> String {
    Alphanumeric.sample_string(&mut rand::rng(), len)
}

/// A fresh access token: 32 random alphanumerics (≈190 bits).
pub fn access_token() -> String {
    format!("myl_{}", alphanumeric(32))
}

/// A device id as clients show it: 10 upper-case letters and digits.
pub fn device_id() -> String {
    alphanumeric(10).to_ascii_uppercase()
}

/// The stored form of a secret token: unpadded base64 of its SHA-256.
/// Tokens are high-entropy, so a fast hash is enough to make a stolen
/// table useless (passwords use argon2id instead).
pub fn token_hash(token: &str) -> String {
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_distinct_and_sized() {
        let a = access_token();
        let b = access_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(device_id().len(), 10);
    }

    #[test]
    fn token_hash_is_stable_and_hides_the_token() {
        let h = token_hash("secret");
        assert_eq!(h, token_hash("secret"));
        assert!(!h.contains("secret"));
        assert_ne!(h, token_hash("secret2"));
    }
}
