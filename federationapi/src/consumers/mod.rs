//! What the federation API takes from the bus: the requests it answers,
//! and the room server's output and local users' EDUs, which feed the sender.

pub mod device_lists;
pub mod edus;
pub mod perform;
pub mod query;
pub mod remote_keys;
pub mod remote_media;
pub mod remote_profiles;
pub mod roomserver_output;

/// Percent-encode a path segment (ids contain `$`, `!`, `:`, and in old
/// rooms `/` or `+`).
pub(crate) fn encode(segment: &str) -> String {
    let mut encoded = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(super::encode("$a+b/c:d.e"), "%24a%2Bb%2Fc%3Ad.e");
    }
}
