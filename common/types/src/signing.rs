//! The server's ed25519 signing key, stored as Synapse stores it
//! (`ed25519 <version> <unpadded base64 seed>`) so operators can move keys
//! between servers.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use ruma::signatures::{Ed25519KeyPair, KeyPair};

/// PKCS#8 v1 prefix of an ed25519 private key; the 32-byte seed follows.
const PKCS8_ED25519_PREFIX: [u8; 16] =
    [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    #[error("cannot read signing key {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("signing key file must read `ed25519 <version> <base64 seed>`")]
    Format,
    #[error("signing key seed is not 32 bytes of base64")]
    Seed,
    #[error("signing key rejected: {0}")]
    Key(String),
}

/// The key the server signs events and requests with.
pub struct ServerSigningKey {
    pub keypair: Ed25519KeyPair,
}

impl std::fmt::Debug for ServerSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSigningKey").field("key_id", &self.key_id()).finish_non_exhaustive()
    }
}

impl ServerSigningKey {
    /// A fresh key in the file format, with a random version.
    pub fn generate_file_contents() -> String {
        let seed: [u8; 32] = rand::random();
        format!("ed25519 a_{} {}\n", crate::random::alphanumeric(4), STANDARD_NO_PAD.encode(seed))
    }

    pub fn parse(contents: &str) -> Result<Self, SigningKeyError> {
        let mut parts = contents.split_whitespace();
        let (Some("ed25519"), Some(version), Some(seed), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(SigningKeyError::Format);
        };
        let seed = STANDARD_NO_PAD.decode(seed.trim_end_matches('=')).map_err(|_| SigningKeyError::Seed)?;
        if seed.len() != 32 {
            return Err(SigningKeyError::Seed);
        }
        let der = [PKCS8_ED25519_PREFIX.as_slice(), &seed].concat();
        let keypair =
            Ed25519KeyPair::from_der(&der, version.to_owned()).map_err(|e| SigningKeyError::Key(e.to_string()))?;
        Ok(Self { keypair })
    }

    pub fn load(path: &Path) -> Result<Self, SigningKeyError> {
        let contents = std::fs::read_to_string(path)
            .map_err(|source| SigningKeyError::Io { path: path.display().to_string(), source })?;
        Self::parse(&contents)
    }

    /// `ed25519:<version>`, as it appears in `signatures` and key responses.
    pub fn key_id(&self) -> String {
        format!("ed25519:{}", self.keypair.version())
    }

    /// Unpadded base64 of the public key.
    pub fn public_key_base64(&self) -> String {
        STANDARD_NO_PAD.encode(self.keypair.public_key())
    }

    /// Sign arbitrary bytes (for X-Matrix and key responses).
    pub fn sign(&self, message: &[u8]) -> String {
        STANDARD_NO_PAD.encode(self.keypair.sign(message).as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_round_trip() {
        let contents = ServerSigningKey::generate_file_contents();
        let key = ServerSigningKey::parse(&contents).unwrap();
        assert!(key.key_id().starts_with("ed25519:a_"));
        assert_eq!(key.public_key_base64().len(), 43);
        let again = ServerSigningKey::parse(&contents).unwrap();
        assert_eq!(key.public_key_base64(), again.public_key_base64());
    }

    #[test]
    fn malformed_keys_are_refused() {
        assert!(matches!(ServerSigningKey::parse("rsa a_1 AAAA"), Err(SigningKeyError::Format)));
        assert!(matches!(ServerSigningKey::parse("ed25519 a_1"), Err(SigningKeyError::Format)));
        assert!(matches!(ServerSigningKey::parse("ed25519 a_1 AAAA"), Err(SigningKeyError::Seed)));
        assert!(matches!(ServerSigningKey::parse("ed25519 a_1 !!!"), Err(SigningKeyError::Seed)));
    }
}
