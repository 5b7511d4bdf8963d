//! The distributed deployment's `nginx.conf` sends each client path to the
//! component that serves it; these tests keep it in step with the routers.

use regex::Regex;

/// The upstream nginx picks for `path`: the first regular-expression
/// location that matches, else the `location /` fallback.
fn upstream_of(config: &str, path: &str) -> String {
    let mut fallback = None;
    let mut location: Option<String> = None;
    for line in config.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("location ") {
            location = Some(rest.trim_end_matches('{').trim().to_owned());
        } else if let Some(upstream) = line.strip_prefix("proxy_pass http://") {
            let upstream = upstream.trim_end_matches(';').split(':').next().unwrap().to_owned();
            match location.take().as_deref() {
                Some("/") => fallback = Some(upstream),
                Some(regex) => {
                    let regex = regex.strip_prefix("~ ").expect("only regular-expression locations and /");
                    if Regex::new(regex).unwrap().is_match(path) {
                        return upstream;
                    }
                }
                None => panic!("proxy_pass outside a location"),
            }
        }
    }
    fallback.expect("a location / fallback")
}

#[test]
fn every_client_path_reaches_the_component_that_serves_it() {
    let config = include_str!("../nginx.conf");
    let room = "/_matrix/client/v3/rooms/!r:example.org";
    let routes = [
        ("/_matrix/client/v3/sync", "syncapi"),
        ("/_matrix/client/r0/sync", "syncapi"),
        ("/_matrix/client/unstable/org.matrix.simplified_msc3575/sync", "syncapi"),
        ("/_matrix/client/v3/user/@a:example.org/filter", "syncapi"),
        ("/_matrix/client/v3/user/@a:example.org/filter/1", "syncapi"),
        (&format!("{room}/messages"), "syncapi"),
        (&format!("{room}/members"), "syncapi"),
        ("/_matrix/client/r0/rooms/!r:example.org/members", "syncapi"),
        (&format!("{room}/context/$e"), "syncapi"),
        (&format!("{room}/event/$e"), "syncapi"),
        ("/_matrix/client/v1/rooms/!r:example.org/relations/$e", "syncapi"),
        ("/_matrix/client/v1/rooms/!r:example.org/threads", "syncapi"),
        ("/_matrix/client/v3/search", "syncapi"),
        ("/_matrix/client/v3/keys/changes", "syncapi"),
        ("/_matrix/client/v3/presence/@a:example.org/status", "syncapi"),
        ("/_matrix/client/v3/pushrules/", "pusher"),
        ("/_matrix/client/v3/pushers/set", "pusher"),
        ("/_matrix/client/v3/notifications", "pusher"),
        (&format!("{room}/joined_members"), "clientapi"),
        (&format!("{room}/send/m.room.message/1"), "clientapi"),
        (&format!("{room}/state"), "clientapi"),
        ("/_matrix/client/v3/keys/query", "clientapi"),
        ("/_matrix/client/v3/user_directory/search", "clientapi"),
        ("/_matrix/client/v3/user/@a:example.org/account_data/m.direct", "clientapi"),
        ("/_matrix/client/v3/syncing", "clientapi"),
        ("/_matrix/client/v1/media/download/example.org/abc", "clientapi"),
        ("/_matrix/client/versions", "clientapi"),
        ("/.well-known/matrix/client", "clientapi"),
    ];
    for (path, component) in routes {
        assert_eq!(upstream_of(config, path), component, "{path}");
    }
}
