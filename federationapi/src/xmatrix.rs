//! X-Matrix request authentication, shared by the outbound client (which
//! signs) and the inbound extractor (which verifies).
//!
//! Spec: <https://spec.matrix.org/v1.16/server-server-api/#request-authentication>

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use myelin_types::ruma::signatures::{
    SigningKeyAlgorithm, to_canonical_json_string_for_signing, verify_canonical_json_bytes,
};
use myelin_types::ruma::{CanonicalJsonObject, CanonicalJsonValue};

/// The parameters of an `Authorization: X-Matrix …` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XMatrix {
    pub origin: String,
    /// Optional in the spec for older senders; when present it must name us.
    pub destination: Option<String>,
    pub key_id: String,
    pub signature: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XMatrixError {
    #[error("not an X-Matrix authorization header")]
    Scheme,
    #[error("malformed X-Matrix parameter list")]
    Syntax,
    #[error("X-Matrix header lacks `{0}`")]
    Missing(&'static str),
    #[error("signature or key is not valid base64")]
    Base64,
    #[error("signature does not verify")]
    BadSignature,
    #[error("request cannot be canonicalized: {0}")]
    Canonical(String),
}

impl XMatrix {
    /// Parse the header value. Parameter names are case-insensitive and
    /// values may be quoted (with `\` escapes) or bare tokens.
    pub fn parse(header: &str) -> Result<Self, XMatrixError> {
        let (scheme, params) = header.trim().split_once(' ').ok_or(XMatrixError::Scheme)?;
        if !scheme.eq_ignore_ascii_case("X-Matrix") {
            return Err(XMatrixError::Scheme);
        }
        let (mut origin, mut destination, mut key_id, mut signature) = (None, None, None, None);
        for (name, value) in parse_params(params)? {
            let slot = match name.to_ascii_lowercase().as_str() {
                "origin" => &mut origin,
                "destination" => &mut destination,
                "key" => &mut key_id,
                "sig" => &mut signature,
                // Unknown parameters are ignored, as the spec's grammar allows for extension.
                _ => continue,
            };
            *slot = Some(value);
        }
        Ok(Self {
            origin: origin.ok_or(XMatrixError::Missing("origin"))?,
            destination,
            key_id: key_id.ok_or(XMatrixError::Missing("key"))?,
            signature: signature.ok_or(XMatrixError::Missing("sig"))?,
        })
    }

    /// The header value, every parameter quoted.
    pub fn to_header(&self) -> String {
        let mut header = format!("X-Matrix origin={}", quote(&self.origin));
        if let Some(destination) = &self.destination {
            header.push_str(&format!(",destination={}", quote(destination)));
        }
        header.push_str(&format!(",key={},sig={}", quote(&self.key_id), quote(&self.signature)));
        header
    }

    /// Check the signature against `public_key` (unpadded base64) for a
    /// request to `destination` (always ours: what the sender should have signed).
    pub fn verify(
        &self,
        public_key: &str,
        method: &str,
        uri: &str,
        destination: &str,
        content: Option<&CanonicalJsonValue>,
    ) -> Result<(), XMatrixError> {
        let message = signed_message(method, uri, &self.origin, destination, content)?;
        let key = decode(public_key)?;
        let signature = decode(&self.signature)?;
        verify_canonical_json_bytes(&SigningKeyAlgorithm::Ed25519, &key, &signature, message.as_bytes())
            .map_err(|_| XMatrixError::BadSignature)
    }
}

/// The canonical JSON a request signature covers.
pub fn signed_message(
    method: &str,
    uri: &str,
    origin: &str,
    destination: &str,
    content: Option<&CanonicalJsonValue>,
) -> Result<String, XMatrixError> {
    let mut object = CanonicalJsonObject::new();
    object.insert("method".to_owned(), CanonicalJsonValue::String(method.to_owned()));
    object.insert("uri".to_owned(), CanonicalJsonValue::String(uri.to_owned()));
    object.insert("origin".to_owned(), CanonicalJsonValue::String(origin.to_owned()));
    object.insert("destination".to_owned(), CanonicalJsonValue::String(destination.to_owned()));
    if let Some(content) = content {
        object.insert("content".to_owned(), content.clone());
    }
    to_canonical_json_string_for_signing(&object).map_err(|e| XMatrixError::Canonical(e.to_string()))
}

/// Unpadded base64 as Matrix writes it; padded input is accepted too.
pub fn decode(value: &str) -> Result<Vec<u8>, XMatrixError> {
    STANDARD_NO_PAD.decode(value).or_else(|_| STANDARD.decode(value)).map_err(|_| XMatrixError::Base64)
}

fn quote(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

fn parse_params(input: &str) -> Result<Vec<(String, String)>, XMatrixError> {
    let mut params = Vec::new();
    let mut rest = input.trim_start();
    while !rest.is_empty() {
        let (name, after) = rest.split_once('=').ok_or(XMatrixError::Syntax)?;
        let name = name.trim();
        if name.is_empty() {
            return Err(XMatrixError::Syntax);
        }
        let after = after.trim_start();
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let end = loop {
                match chars.next() {
                    Some((_, '\\')) => value.push(chars.next().ok_or(XMatrixError::Syntax)?.1),
                    Some((i, '"')) => break i,
                    Some((_, c)) => value.push(c),
                    None => return Err(XMatrixError::Syntax),
                }
            };
            (value, &quoted[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        params.push((name.to_owned(), value));
        rest = after.trim_start();
        match rest.strip_prefix(',') {
            Some(next) => rest = next.trim_start(),
            None if rest.is_empty() => {}
            None => return Err(XMatrixError::Syntax),
        }
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_and_bare_parameters_parse() {
        let header = r#"X-Matrix origin="a.example:8448",destination=b.example,Key="ed25519:1", sig="ab\"c""#;
        let parsed = XMatrix::parse(header).unwrap();
        assert_eq!(parsed.origin, "a.example:8448");
        assert_eq!(parsed.destination.as_deref(), Some("b.example"));
        assert_eq!(parsed.key_id, "ed25519:1");
        assert_eq!(parsed.signature, "ab\"c");
        assert_eq!(XMatrix::parse(&parsed.to_header()).unwrap(), parsed, "round trip");
    }

    #[test]
    fn malformed_headers_are_refused() {
        assert_eq!(XMatrix::parse("Bearer abc"), Err(XMatrixError::Scheme));
        assert_eq!(XMatrix::parse("X-Matrix key=\"k\",sig=\"s\""), Err(XMatrixError::Missing("origin")));
        assert_eq!(XMatrix::parse("X-Matrix origin=\"unterminated"), Err(XMatrixError::Syntax));
        assert_eq!(XMatrix::parse("X-Matrix origin"), Err(XMatrixError::Syntax));
    }

    #[test]
    fn the_signed_message_is_canonical_and_omits_absent_content() {
        let message = signed_message("GET", "/x?a=1", "o", "d", None).unwrap();
        assert_eq!(message, r#"{"destination":"d","method":"GET","origin":"o","uri":"/x?a=1"}"#);
        let content = CanonicalJsonValue::try_from(serde_json::json!({"b": 1, "a": [true]})).unwrap();
        let message = signed_message("PUT", "/y", "o", "d", Some(&content)).unwrap();
        assert_eq!(
            message,
            r#"{"content":{"a":[true],"b":1},"destination":"d","method":"PUT","origin":"o","uri":"/y"}"#
        );
    }
}
