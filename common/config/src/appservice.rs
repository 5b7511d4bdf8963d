//! Application service registrations: the YAML files an operator lists in
//! `global.app_service_config_files`, read once at start.
//!
//! Spec: <https://spec.matrix.org/v1.16/application-service-api/#registration>

use std::path::{Path, PathBuf};

use regex::Regex;
use serde::Deserialize;

use crate::ConfigErrors;

/// One registration file as written (unknown keys, such as bridges'
/// unstable extensions, are ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct Registration {
    pub id: String,
    /// Where transactions and queries go; `None`: the service receives none.
    pub url: Option<String>,
    pub as_token: String,
    pub hs_token: String,
    pub sender_localpart: String,
    #[serde(default)]
    pub namespaces: Namespaces,
    #[serde(default)]
    pub rate_limited: Option<bool>,
    #[serde(default)]
    pub protocols: Vec<String>,
    #[serde(default)]
    pub receive_ephemeral: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Namespaces {
    #[serde(default)]
    pub users: Vec<NamespaceEntry>,
    #[serde(default)]
    pub aliases: Vec<NamespaceEntry>,
    #[serde(default)]
    pub rooms: Vec<NamespaceEntry>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NamespaceEntry {
    #[serde(default)]
    pub exclusive: bool,
    pub regex: String,
}

/// One compiled namespace pattern.
#[derive(Debug, Clone)]
struct Pattern {
    exclusive: bool,
    regex: Regex,
}

impl Pattern {
    /// Anchored at the start only, as Synapse matches: registrations written
    /// for it (`@_irc_.*` without the server part) keep meaning the same.
    fn compile(entry: &NamespaceEntry) -> Result<Self, regex::Error> {
        Ok(Self { exclusive: entry.exclusive, regex: Regex::new(&format!("^(?:{})", entry.regex))? })
    }
}

/// A registered application service, its namespaces compiled.
#[derive(Debug, Clone)]
pub struct AppService {
    pub registration: Registration,
    /// `@<sender_localpart>:<server_name>`.
    pub sender: String,
    users: Vec<Pattern>,
    aliases: Vec<Pattern>,
    rooms: Vec<Pattern>,
}

fn any_match(patterns: &[Pattern], value: &str, exclusive_only: bool) -> bool {
    patterns.iter().any(|p| (p.exclusive || !exclusive_only) && p.regex.is_match(value))
}

impl AppService {
    pub fn id(&self) -> &str {
        &self.registration.id
    }

    /// The service may act as this user: its sender or a user of its namespaces.
    pub fn is_user_in_namespace(&self, user_id: &str) -> bool {
        user_id == self.sender || any_match(&self.users, user_id, false)
    }

    /// Only this service may register this user.
    pub fn is_exclusive_user(&self, user_id: &str) -> bool {
        user_id == self.sender || any_match(&self.users, user_id, true)
    }

    pub fn is_alias_in_namespace(&self, alias: &str) -> bool {
        any_match(&self.aliases, alias, false)
    }

    /// Only this service may create or delete this alias.
    pub fn is_exclusive_alias(&self, alias: &str) -> bool {
        any_match(&self.aliases, alias, true)
    }

    pub fn is_room_in_namespace(&self, room_id: &str) -> bool {
        any_match(&self.rooms, room_id, false)
    }
}

/// Read and check every registration file: each must parse, name a valid
/// sender and compile its regexes; ids and `as_token`s must be unique, as
/// they identify the service. Every problem is reported.
pub fn load_app_services(paths: &[PathBuf], server_name: &str) -> Result<Vec<AppService>, ConfigErrors> {
    let mut errors = Vec::new();
    let mut services: Vec<AppService> = Vec::new();
    for path in paths {
        match load_one(path, server_name) {
            Ok(service) => {
                if services.iter().any(|s| s.id() == service.id()) {
                    errors.push(format!("{}: application service id {:?} is used twice", path.display(), service.id()));
                } else if services.iter().any(|s| s.registration.as_token == service.registration.as_token) {
                    errors.push(format!("{}: as_token is already another application service's", path.display()));
                } else {
                    services.push(service);
                }
            }
            Err(mut found) => errors.append(&mut found),
        }
    }
    if errors.is_empty() { Ok(services) } else { Err(ConfigErrors(errors)) }
}

fn load_one(path: &Path, server_name: &str) -> Result<AppService, Vec<String>> {
    let at = |problem: String| format!("{}: {problem}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| vec![at(format!("cannot read: {e}"))])?;
    let registration: Registration = serde_yaml_ng::from_str(&text).map_err(|e| vec![at(e.to_string())])?;
    let mut errors = Vec::new();
    for (name, value) in
        [("id", &registration.id), ("as_token", &registration.as_token), ("hs_token", &registration.hs_token)]
    {
        if value.is_empty() {
            errors.push(at(format!("{name} is empty")));
        }
    }
    let sender = format!("@{}:{server_name}", registration.sender_localpart);
    let localpart_ok = !registration.sender_localpart.is_empty()
        && registration
            .sender_localpart
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'=' | b'-' | b'/' | b'+'));
    if !localpart_ok {
        errors.push(at(format!("sender_localpart {:?} is not a valid user localpart", registration.sender_localpart)));
    }
    let mut compile = |kind: &str, entries: &[NamespaceEntry]| -> Vec<Pattern> {
        entries
            .iter()
            .filter_map(|entry| {
                Pattern::compile(entry).map_err(|e| errors.push(at(format!("namespaces.{kind}: bad regex: {e}")))).ok()
            })
            .collect()
    };
    let users = compile("users", &registration.namespaces.users);
    let aliases = compile("aliases", &registration.namespaces.aliases);
    let rooms = compile("rooms", &registration.namespaces.rooms);
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(AppService { registration, sender, users, aliases, rooms })
}

#[cfg(test)]
mod tests {
    use super::*;

    const IRC: &str = r##"
id: irc
url: "http://127.0.0.1:1234"
as_token: as-secret
hs_token: hs-secret
sender_localpart: _irc_bot
namespaces:
  users:
    - exclusive: true
      regex: "@_irc_.*"
  aliases:
    - exclusive: false
      regex: "#_irc_.*"
  rooms: []
de.sorunome.msc2409.push_ephemeral: true
"##;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_registration_loads_and_its_namespaces_match_from_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let services = load_app_services(&[write(dir.path(), "irc.yaml", IRC)], "example.org").unwrap();
        let irc = &services[0];
        assert_eq!(irc.sender, "@_irc_bot:example.org");
        assert!(irc.is_user_in_namespace("@_irc_alice:example.org"));
        assert!(irc.is_exclusive_user("@_irc_alice:example.org"));
        assert!(irc.is_user_in_namespace("@_irc_bot:example.org"));
        assert!(!irc.is_user_in_namespace("@alice:example.org"));
        assert!(!irc.is_user_in_namespace("@alice_irc_:example.org"), "anchored at the start");
        assert!(irc.is_alias_in_namespace("#_irc_chan:example.org"));
        assert!(!irc.is_exclusive_alias("#_irc_chan:example.org"));
        assert!(!irc.is_room_in_namespace("!room:example.org"));
    }

    #[test]
    fn bad_files_are_each_reported() {
        let dir = tempfile::tempdir().unwrap();
        let bad_regex = IRC.replace("\"@_irc_.*\"", "\"@_irc_(\"").replace("_irc_bot", "Bad Sender");
        let paths = [
            write(dir.path(), "irc.yaml", IRC),
            write(dir.path(), "same-id.yaml", &IRC.replace("as-secret", "other")),
            write(dir.path(), "same-token.yaml", &IRC.replace("id: irc", "id: other")),
            write(dir.path(), "bad.yaml", &bad_regex.replace("id: irc", "id: bad").replace("as-secret", "third")),
            write(dir.path(), "not-yaml.yaml", "id: [unclosed"),
            dir.path().join("missing.yaml"),
        ];
        let ConfigErrors(errors) = load_app_services(&paths, "example.org").unwrap_err();
        let expect =
            ["used twice", "already another", "bad regex", "not a valid user localpart", "not-yaml", "cannot read"];
        for needle in expect {
            assert!(errors.iter().any(|e| e.contains(needle)), "no error mentions {needle:?}: {errors:#?}");
        }
        assert_eq!(errors.len(), expect.len(), "{errors:#?}");
    }
}
