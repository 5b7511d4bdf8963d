//! Where a client puts its access token: `Authorization: Bearer …` or the
//! deprecated `access_token` query parameter, which clients still send.

use axum::http::request::Parts;

/// The access token of a request, if it carries one.
pub fn access_token(parts: &Parts) -> Option<String> {
    if let Some(value) = parts.headers.get(axum::http::header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        return value.strip_prefix("Bearer ").map(|t| t.trim().to_owned());
    }
    let query = parts.uri.query()?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "access_token")
        .map(|(_, value)| value.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, auth: Option<&str>) -> Parts {
        let mut builder = axum::http::Request::builder().uri(uri);
        if let Some(auth) = auth {
            builder = builder.header("authorization", auth);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn bearer_header_wins() {
        assert_eq!(access_token(&parts("/x?access_token=q", Some("Bearer h"))).as_deref(), Some("h"));
    }

    #[test]
    fn query_parameter_is_decoded() {
        assert_eq!(access_token(&parts("/x?a=1&access_token=ab%2Fc", None)).as_deref(), Some("ab/c"));
    }

    #[test]
    fn other_schemes_and_absence_give_none() {
        assert_eq!(access_token(&parts("/x", Some("Basic abc"))), None);
        assert_eq!(access_token(&parts("/x?a=1", None)), None);
    }
}
