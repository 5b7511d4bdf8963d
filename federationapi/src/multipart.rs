//! The `multipart/mixed` answers of the federation media endpoints: a JSON
//! metadata part, then the file (RFC 2046 §5.1).
//!
//! Spec: <https://spec.matrix.org/v1.16/server-server-api/#get_matrixfederationv1mediadownloadmediaid>

use myelin_types::random::alphanumeric;

/// The file part of a received answer.
#[derive(Debug, PartialEq, Eq)]
pub struct FilePart {
    pub content_type: Option<String>,
    pub content_disposition: Option<String>,
    /// Set when the server redirects instead of sending the bytes.
    pub location: Option<String>,
    pub bytes: Vec<u8>,
}

/// The `Content-Type` header and the body of an answer carrying `bytes`.
pub fn build(content_type: &str, content_disposition: &str, bytes: &[u8]) -> (String, Vec<u8>) {
    let boundary = alphanumeric(32);
    let mut body = Vec::with_capacity(bytes.len() + 256);
    body.extend_from_slice(format!("--{boundary}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n").as_bytes());
    let head =
        format!("--{boundary}\r\nContent-Type: {content_type}\r\nContent-Disposition: {content_disposition}\r\n\r\n");
    body.extend_from_slice(head.as_bytes());
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/mixed; boundary={boundary}"), body)
}

/// The boundary named by a `multipart/mixed` content type.
fn boundary_of(content_type: &str) -> Option<&str> {
    let mut params = content_type.split(';');
    if !params.next()?.trim().eq_ignore_ascii_case("multipart/mixed") {
        return None;
    }
    params
        .filter_map(|param| param.split_once('='))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, value)| value.trim().trim_matches('"'))
        .filter(|boundary| !boundary.is_empty())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

/// The second part of an answer whose content type is `content_type`;
/// `None` if it is not two-part `multipart/mixed`.
pub fn parse(content_type: &str, body: &[u8]) -> Option<FilePart> {
    let delimiter = format!("--{}", boundary_of(content_type)?);
    let inner_delimiter = format!("\r\n{delimiter}");
    // Skip the preamble and the metadata part.
    let first = find(body, delimiter.as_bytes())? + delimiter.len();
    let second = first + find(&body[first..], inner_delimiter.as_bytes())? + inner_delimiter.len();
    let rest = &body[second..];
    let rest = rest.strip_prefix(b"\r\n")?;
    let end = find(rest, inner_delimiter.as_bytes())?;
    let part = &rest[..end];
    let split = find(part, b"\r\n\r\n");
    let (head, bytes) = match split {
        Some(at) => (&part[..at], &part[at + 4..]),
        // A part with headers only ends them with a single CRLF before the delimiter.
        None => (part, &[][..]),
    };
    let mut file = FilePart { content_type: None, content_disposition: None, location: None, bytes: bytes.to_vec() };
    for line in String::from_utf8_lossy(head).split("\r\n") {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = Some(value.trim().to_owned());
        match name.trim().to_ascii_lowercase().as_str() {
            "content-type" => file.content_type = value,
            "content-disposition" => file.content_disposition = value,
            "location" => file.location = value,
            _ => {}
        }
    }
    Some(file)
}

/// The file name a `Content-Disposition` carries: `filename*` (RFC 5987,
/// UTF-8) first, then a plain or quoted `filename`.
pub fn file_name(content_disposition: &str) -> Option<String> {
    let params: Vec<(String, &str)> = content_disposition
        .split(';')
        .skip(1)
        .filter_map(|param| param.split_once('='))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim()))
        .collect();
    let extended = params.iter().find(|(name, _)| name == "filename*").and_then(|(_, value)| {
        let (charset, rest) = value.split_once('\'')?;
        let (_, encoded) = rest.split_once('\'')?;
        charset.eq_ignore_ascii_case("utf-8").then(|| percent_decode(encoded)).flatten()
    });
    let plain =
        || params.iter().find(|(name, _)| name == "filename").map(|(_, value)| value.trim_matches('"').to_owned());
    extended.or_else(plain).filter(|name| !name.is_empty())
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_built_parses_back() {
        let bytes = b"\r\n--not the boundary\r\n\x00\xff";
        let (content_type, body) = build("image/png", "inline; filename*=utf-8''a%20b.png", bytes);
        let part = parse(&content_type, &body).unwrap();
        assert_eq!(part.bytes, bytes);
        assert_eq!(part.content_type.as_deref(), Some("image/png"));
        assert_eq!(part.location, None);
        assert_eq!(file_name(part.content_disposition.as_deref().unwrap()).as_deref(), Some("a b.png"));
    }

    #[test]
    fn redirects_and_other_servers_forms_are_read() {
        let body = b"preamble\r\n--b\r\nContent-Type: application/json\r\n\r\n{}\r\n--b\r\nLocation: https://cdn.example/x\r\n\r\n\r\n--b--\r\n";
        let part = parse("multipart/mixed; boundary=\"b\"", body).unwrap();
        assert_eq!(part.location.as_deref(), Some("https://cdn.example/x"));
        assert!(part.bytes.is_empty());
        assert_eq!(file_name("attachment; filename=\"r.txt\"").as_deref(), Some("r.txt"));
        assert_eq!(file_name("inline"), None);
    }

    #[test]
    fn anything_else_is_refused() {
        assert_eq!(parse("application/json", b"{}"), None);
        assert_eq!(parse("multipart/mixed", b"--x\r\n"), None);
        assert_eq!(parse("multipart/mixed; boundary=x", b"--x\r\nContent-Type: application/json\r\n\r\n{}"), None);
    }
}
