//! Reading the YAML file and applying environment overrides.
//!
//! Every section and every key is deserialized on its own, against the
//! defaults, so that one bad value does not hide the next one: serde stops at
//! the first error of a struct, an operator wants the whole list.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_yaml_ng::{Mapping, Value};

use crate::{ClientApi, Config, FederationApi, Global, Pusher, RoomServer, SyncApi};

/// Environment variables `MYELIN_<SECTION>__<KEY>` override `<section>.<key>`.
/// Variables with the prefix but without `__` (such as test-harness settings)
/// are not configuration and are ignored.
pub const ENV_PREFIX: &str = "MYELIN_";

const SECTIONS: [&str; 6] = ["global", "client_api", "federation_api", "roomserver", "sync_api", "pusher"];

/// Every problem found while loading, one human-readable line each.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

/// Where a value came from, so an error names the line or variable to fix.
#[derive(Debug, Clone)]
enum Origin {
    File,
    Env(String),
}

#[derive(Debug, Clone)]
struct Setting {
    value: Value,
    origin: Origin,
}

impl Setting {
    fn describe(&self, section: &str, key: &str) -> String {
        match &self.origin {
            Origin::File => format!("{section}.{key}"),
            Origin::Env(var) => format!("{var} ({section}.{key})"),
        }
    }
}

/// (section, key) → the value that wins (the environment beats the file).
type Overlay = BTreeMap<(String, String), Setting>;

impl Config {
    /// Load `path` (or only defaults when `None`), apply `MYELIN_*`
    /// overrides from the process environment, then [`Config::check`].
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigErrors> {
        let text = match path {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| ConfigErrors(vec![format!("cannot read {}: {e}", path.display())]))?,
            ),
            None => None,
        };
        let mut errors = Vec::new();
        let mut env = Vec::new();
        for (name, value) in std::env::vars_os() {
            let Some(name) = name.to_str().filter(|n| n.starts_with(ENV_PREFIX)).map(str::to_owned) else {
                continue;
            };
            match value.into_string() {
                Ok(value) => env.push((name, value)),
                Err(_) => errors.push(format!("{name}: value is not valid UTF-8")),
            }
        }
        match Self::from_sources(text.as_deref(), env) {
            Ok(config) if errors.is_empty() => Ok(config),
            Ok(_) => Err(ConfigErrors(errors)),
            Err(ConfigErrors(more)) => {
                errors.extend(more);
                Err(ConfigErrors(errors))
            }
        }
    }

    /// [`Config::load`] without touching the process: YAML text (if any) and
    /// environment pairs given explicitly. Tests use this; env is process-global.
    pub fn from_sources(
        yaml: Option<&str>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigErrors> {
        let mut errors = Vec::new();
        let mut overlay = Overlay::new();
        if let Some(text) = yaml {
            read_file(text, &mut overlay, &mut errors);
        }
        let env: Vec<(String, String)> = env.into_iter().filter(|(name, _)| is_override(name)).collect();

        // Paths default to files under data_dir, so a config that only moves
        // data_dir moves everything with it.
        let data_dir = env
            .iter()
            .find(|(name, _)| name == "MYELIN_GLOBAL__DATA_DIR")
            .map(|(_, v)| PathBuf::from(v))
            .or_else(|| match overlay.get(&("global".to_owned(), "data_dir".to_owned())) {
                Some(Setting { value: Value::String(dir), .. }) => Some(PathBuf::from(dir)),
                _ => None,
            })
            .unwrap_or_else(|| PathBuf::from(crate::DEFAULT_DATA_DIR));
        let base = sections_of(&Config::in_dir(data_dir));

        for (name, raw) in env {
            read_env(&name, &raw, &base, &mut overlay, &mut errors);
        }

        overlay.retain(|(section, key), setting| {
            let known = base.get(section).is_some_and(|m| m.contains_key(key.as_str()));
            if !known {
                errors.push(format!(
                    "{}: unknown key (expected one of {})",
                    setting.describe(section, key),
                    keys_of(&base[section])
                ));
            }
            known
        });

        // Each key alone against the defaults: a type error names its key.
        overlay.retain(|(section, key), setting| {
            let mut candidate = base[section].clone();
            candidate.insert(Value::String(key.clone()), setting.value.clone());
            match validate_section(section, candidate) {
                Ok(()) => true,
                Err(e) => {
                    errors.push(format!("{}: {e}", setting.describe(section, key)));
                    false
                }
            }
        });

        let mut merged = base;
        for ((section, key), setting) in overlay {
            merged.get_mut(&section).expect("known section").insert(Value::String(key), setting.value);
        }
        let config = assemble(merged, &mut errors);
        // Semantic checks run even after structural errors (bad keys kept
        // their defaults), so the operator sees everything in one pass.
        if let Some(config) = &config {
            errors.extend(config.check());
        }
        match config {
            Some(config) if errors.is_empty() => Ok(config),
            _ => Err(ConfigErrors(errors)),
        }
    }
}

fn is_override(name: &str) -> bool {
    name.strip_prefix(ENV_PREFIX).is_some_and(|rest| rest.contains("__"))
}

fn read_file(text: &str, overlay: &mut Overlay, errors: &mut Vec<String>) {
    let root = match serde_yaml_ng::from_str::<Value>(text) {
        Ok(Value::Null) => return,
        Ok(Value::Mapping(root)) => root,
        Ok(_) => return errors.push("configuration file must be a mapping of sections".to_owned()),
        Err(e) => return errors.push(format!("configuration file is not valid YAML: {e}")),
    };
    for (section, body) in root {
        let Some(section) = section.as_str().map(str::to_owned) else {
            errors.push(format!("section names must be strings, found {section:?}"));
            continue;
        };
        if !SECTIONS.contains(&section.as_str()) {
            errors.push(format!("unknown section `{section}` (expected one of {})", SECTIONS.join(", ")));
            continue;
        }
        let body = match body {
            Value::Null => continue,
            Value::Mapping(body) => body,
            _ => {
                errors.push(format!("section `{section}` must be a mapping"));
                continue;
            }
        };
        for (key, value) in body {
            match key.as_str() {
                Some(key) => {
                    overlay.insert((section.clone(), key.to_owned()), Setting { value, origin: Origin::File });
                }
                None => errors.push(format!("{section}: key names must be strings, found {key:?}")),
            }
        }
    }
}

fn read_env(name: &str, raw: &str, base: &BTreeMap<String, Mapping>, overlay: &mut Overlay, errors: &mut Vec<String>) {
    let rest = &name[ENV_PREFIX.len()..];
    let (section, key) = rest.split_once("__").expect("filtered by is_override");
    let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
    let Some(defaults) = base.get(&section) else {
        return errors.push(format!("{name}: unknown section `{section}` (expected one of {})", SECTIONS.join(", ")));
    };
    let Some(default) = defaults.get(key.as_str()) else {
        return errors.push(format!(
            "{name}: unknown key `{key}` in section `{section}` (expected one of {})",
            keys_of(defaults)
        ));
    };
    let value = env_value(default, raw);
    overlay.insert((section, key), Setting { value, origin: Origin::Env(name.to_owned()) });
}

/// Booleans and numbers are parsed as YAML scalars (`true`, `8`); fields that
/// are strings by default stay verbatim, so a shared secret of `123` or
/// `yes` is not turned into a number or a boolean. Optional fields (`null`
/// by default) are strings too; an empty value, `~` or `null` unsets them.
/// Lists take a YAML flow sequence (`[a, b]`) or comma-separated items
/// (`a,b`; empty for none); maps take a YAML flow mapping (`{k: v}`).
fn env_value(default: &Value, raw: &str) -> Value {
    match default {
        Value::String(_) => Value::String(raw.to_owned()),
        Value::Null if matches!(raw, "" | "~" | "null") => Value::Null,
        Value::Null => Value::String(raw.to_owned()),
        Value::Sequence(_) => match serde_yaml_ng::from_str::<Value>(raw) {
            Ok(value @ Value::Sequence(_)) => value,
            _ => Value::Sequence(
                raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| Value::String(s.to_owned())).collect(),
            ),
        },
        Value::Mapping(_) => match serde_yaml_ng::from_str::<Value>(raw) {
            Ok(value @ Value::Mapping(_)) => value,
            Ok(Value::Null) => Value::Mapping(Mapping::new()),
            _ => Value::String(raw.to_owned()),
        },
        _ => match serde_yaml_ng::from_str::<Value>(raw) {
            Ok(value @ (Value::Bool(_) | Value::Number(_) | Value::String(_))) => value,
            _ => Value::String(raw.to_owned()),
        },
    }
}

fn keys_of(mapping: &Mapping) -> String {
    let keys: Vec<&str> = mapping.keys().filter_map(Value::as_str).collect();
    if keys.is_empty() { "none: this section has no settings yet".to_owned() } else { keys.join(", ") }
}

fn sections_of(config: &Config) -> BTreeMap<String, Mapping> {
    fn mapping(value: impl Serialize) -> Mapping {
        match serde_yaml_ng::to_value(value) {
            Ok(Value::Mapping(m)) => m,
            // Every section is a struct, which serializes as a mapping.
            other => unreachable!("section serialized as {other:?}"),
        }
    }
    BTreeMap::from([
        ("global".to_owned(), mapping(&config.global)),
        ("client_api".to_owned(), mapping(&config.client_api)),
        ("federation_api".to_owned(), mapping(&config.federation_api)),
        ("roomserver".to_owned(), mapping(&config.roomserver)),
        ("sync_api".to_owned(), mapping(&config.sync_api)),
        ("pusher".to_owned(), mapping(&config.pusher)),
    ])
}

fn parse<T: DeserializeOwned>(mapping: Mapping) -> Result<T, String> {
    serde_yaml_ng::from_value(Value::Mapping(mapping)).map_err(|e| e.to_string())
}

fn validate_section(section: &str, mapping: Mapping) -> Result<(), String> {
    match section {
        "global" => parse::<Global>(mapping).map(drop),
        "client_api" => parse::<ClientApi>(mapping).map(drop),
        "federation_api" => parse::<FederationApi>(mapping).map(drop),
        "roomserver" => parse::<RoomServer>(mapping).map(drop),
        "sync_api" => parse::<SyncApi>(mapping).map(drop),
        "pusher" => parse::<Pusher>(mapping).map(drop),
        other => Err(format!("unknown section `{other}`")),
    }
}

fn assemble(mut merged: BTreeMap<String, Mapping>, errors: &mut Vec<String>) -> Option<Config> {
    let mut take = |section: &str| merged.remove(section).unwrap_or_default();
    let result = (|| -> Result<Config, String> {
        Ok(Config {
            global: parse(take("global"))?,
            client_api: parse(take("client_api"))?,
            federation_api: parse(take("federation_api"))?,
            roomserver: parse(take("roomserver"))?,
            sync_api: parse(take("sync_api"))?,
            pusher: parse(take("pusher"))?,
        })
    })();
    // Every key was already accepted alone; this only fails if keys conflict.
    result.map_err(|e| errors.push(format!("configuration: {e}"))).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BusKind;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn errors(yaml: Option<&str>, vars: &[(&str, &str)]) -> Vec<String> {
        Config::from_sources(yaml, env(vars)).expect_err("expected errors").0
    }

    #[test]
    fn no_file_and_no_env_gives_the_defaults() {
        assert_eq!(Config::from_sources(None, env(&[])).unwrap(), Config::default());
        assert_eq!(Config::from_sources(Some(""), env(&[])).unwrap(), Config::default());
    }

    #[test]
    fn a_file_sets_values_and_keeps_defaults_elsewhere() {
        let yaml =
            "global:\n  server_name: example.org:8448\n  bus_partitions: 4\nclient_api:\n  open_registration: true\n";
        let config = Config::from_sources(Some(yaml), env(&[])).unwrap();
        assert_eq!(config.global.server_name, "example.org:8448");
        assert_eq!(config.global.bus_partitions, 4);
        assert!(config.client_api.open_registration);
        assert_eq!(config.client_api.listen, Config::default().client_api.listen);
    }

    #[test]
    fn data_dir_moves_the_derived_paths() {
        let config = Config::from_sources(Some("global:\n  data_dir: /srv/m\n"), env(&[])).unwrap();
        assert_eq!(config.global.signing_key_path, PathBuf::from("/srv/m/signing.key"));
        assert_eq!(config.federation_api.tls_certificate_path, PathBuf::from("/srv/m/tls.crt"));
        assert_eq!(config.global.database_url, "sqlite:///srv/m/myelin.db");
    }

    #[test]
    fn environment_overrides_beat_the_file_and_parse_scalars() {
        let yaml = "client_api:\n  listen: 127.0.0.1:8008\n";
        let config = Config::from_sources(
            Some(yaml),
            env(&[
                ("MYELIN_CLIENT_API__LISTEN", "127.0.0.1:9000"),
                ("MYELIN_CLIENT_API__OPEN_REGISTRATION", "true"),
                ("MYELIN_GLOBAL__BUS_PARTITIONS", "3"),
                ("MYELIN_GLOBAL__SERVER_NAME", "localhost:8448"),
                // Strings stay verbatim even when they look like numbers.
                ("MYELIN_CLIENT_API__REGISTRATION_SHARED_SECRET", "123"),
                // Not configuration: no `__`.
                ("MYELIN_TEST_PYTHON", "/usr/bin/python3"),
                ("PATH", "/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(config.client_api.listen, "127.0.0.1:9000".parse().unwrap());
        assert!(config.client_api.open_registration);
        assert_eq!(config.global.bus_partitions, 3);
        assert_eq!(config.global.server_name, "localhost:8448");
        assert_eq!(config.client_api.registration_shared_secret.as_deref(), Some("123"));
    }

    #[test]
    fn lists_and_maps_are_overridden_from_the_environment() {
        let config = Config::from_sources(
            None,
            env(&[
                ("MYELIN_FEDERATION_API__TRUSTED_KEY_SERVERS", "matrix.org, example.org:8448"),
                ("MYELIN_FEDERATION_API__KEY_DENYLIST", "[abc, def]"),
                ("MYELIN_FEDERATION_API__OLD_VERIFY_KEYS", "{'ed25519:old': {key: abc, expired_ts: 5}}"),
                ("MYELIN_FEDERATION_API__ALLOW_LOOPBACK_PEERS", "true"),
                ("MYELIN_FEDERATION_API__CA_FILE", "/etc/ca.pem"),
            ]),
        )
        .unwrap();
        let federation = &config.federation_api;
        assert_eq!(federation.trusted_key_servers, ["matrix.org", "example.org:8448"]);
        assert_eq!(federation.key_denylist, ["abc", "def"]);
        assert_eq!(federation.old_verify_keys["ed25519:old"], crate::OldVerifyKey { key: "abc".into(), expired_ts: 5 });
        assert!(federation.allow_loopback_peers);
        assert_eq!(federation.ca_file, Some(PathBuf::from("/etc/ca.pem")));
        let empty = Config::from_sources(None, env(&[("MYELIN_FEDERATION_API__TRUSTED_KEY_SERVERS", "")])).unwrap();
        assert!(empty.federation_api.trusted_key_servers.is_empty());
        let errors = errors(None, &[("MYELIN_FEDERATION_API__OLD_VERIFY_KEYS", "nope")]);
        assert!(errors[0].starts_with("MYELIN_FEDERATION_API__OLD_VERIFY_KEYS"), "{errors:?}");
    }

    #[test]
    fn push_settings_parse_and_bad_levels_are_refused() {
        let yaml = "pusher:\n  content: event_id_only\n  give_up_after_secs: 60\n  gateway_timeout_secs: 5\n";
        let config =
            Config::from_sources(Some(yaml), env(&[("MYELIN_PUSHER__ALLOW_PRIVATE_GATEWAYS", "true")])).unwrap();
        assert_eq!(config.pusher.content, crate::PushContent::EventIdOnly);
        assert_eq!(config.pusher.give_up_after_secs, 60);
        assert_eq!(config.pusher.gateway_timeout_secs, 5);
        assert!(config.pusher.allow_private_gateways);
        assert_eq!(Config::default().pusher.content, crate::PushContent::Full);
        assert!(!Config::default().pusher.allow_private_gateways);
        let refused = errors(Some("pusher:\n  content: everything\n"), &[]);
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(refused[0].contains("content"), "{refused:?}");
    }

    #[test]
    fn url_preview_allowlist_takes_cidrs() {
        let yaml = "client_api:\n  url_preview_enabled: true\n  url_preview_ip_allowlist: [10.1.0.0/16, '::1/128']\n";
        let config = Config::from_sources(Some(yaml), env(&[])).unwrap();
        assert!(config.client_api.url_preview_enabled);
        let allowed: Vec<String> = config.client_api.url_preview_ip_allowlist.iter().map(|n| n.to_string()).collect();
        assert_eq!(allowed, ["10.1.0.0/16", "::1/128"]);
        let env_list = [("MYELIN_CLIENT_API__URL_PREVIEW_IP_ALLOWLIST", "127.0.0.1/32")];
        assert_eq!(Config::from_sources(None, env(&env_list)).unwrap().client_api.url_preview_ip_allowlist.len(), 1);
        let refused = errors(Some("client_api:\n  url_preview_ip_allowlist: [10.1.0.0]\n"), &[]);
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(refused[0].starts_with("client_api.url_preview_ip_allowlist"), "{refused:?}");
        assert!(!Config::default().client_api.url_preview_enabled);
    }

    #[test]
    fn an_empty_override_unsets_an_optional_value() {
        let yaml = "client_api:\n  registration_shared_secret: s3cret\n";
        let config =
            Config::from_sources(Some(yaml), env(&[("MYELIN_CLIENT_API__REGISTRATION_SHARED_SECRET", "")])).unwrap();
        assert_eq!(config.client_api.registration_shared_secret, None);
    }

    #[test]
    fn process_environment_is_read_by_load() {
        // A variable name no other test uses: the environment is process-global.
        // SAFETY: no other test reads or writes this variable.
        unsafe { std::env::set_var("MYELIN_ROOMSERVER__DEFAULT_ROOM_VERSION", "11") };
        let config = Config::load(None);
        unsafe { std::env::remove_var("MYELIN_ROOMSERVER__DEFAULT_ROOM_VERSION") };
        assert_eq!(config.unwrap().roomserver.default_room_version, "11");
    }

    #[test]
    fn load_reads_a_file_and_reports_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("myelin.yaml");
        std::fs::write(&path, "global:\n  server_name: example.org\n").unwrap();
        assert_eq!(Config::load(Some(&path)).unwrap().global.server_name, "example.org");
        let missing = Config::load(Some(&dir.path().join("nope.yaml"))).unwrap_err();
        assert!(missing.0[0].starts_with("cannot read"), "{missing}");
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let yaml = "\
global:
  server_name: 'bad name!'
  bus_partitions: lots
  colour: blue
client_api:
  listen: nowhere
  open_registration: maybe
federation_api:
  listen: 127.0.0.1:99999
roomserver:
  default_room_version: '9'
extra: {}
";
        let errors = errors(Some(yaml), &[("MYELIN_NOPE__X", "1"), ("MYELIN_GLOBAL__NOPE", "1")]);
        let all = errors.join("\n");
        for needle in [
            "global.bus_partitions",
            "global.colour: unknown key",
            "client_api.listen",
            "client_api.open_registration",
            "federation_api.listen",
            "unknown section `extra`",
            "MYELIN_NOPE__X: unknown section `nope`",
            "MYELIN_GLOBAL__NOPE: unknown key `nope`",
            "global.server_name",
            "roomserver.default_room_version",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
        assert_eq!(errors.len(), 10, "{all}");
    }

    #[test]
    fn env_errors_name_the_variable() {
        let errors = errors(None, &[("MYELIN_GLOBAL__BUS_PARTITIONS", "many")]);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].starts_with("MYELIN_GLOBAL__BUS_PARTITIONS (global.bus_partitions): "), "{errors:?}");
    }

    #[test]
    fn malformed_files_are_rejected() {
        assert!(errors(Some("global: [unclosed"), &[])[0].contains("not valid YAML"));
        assert!(errors(Some("- a\n- b\n"), &[])[0].contains("must be a mapping"));
        assert!(errors(Some("global: 5\n"), &[])[0].contains("section `global` must be a mapping"));
    }

    #[test]
    fn kafka_needs_its_brokers() {
        let errors = errors(Some("global:\n  bus: kafka\n"), &[]);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].starts_with("global.kafka_brokers"), "{errors:?}");
        let yaml = "global:\n  bus: kafka\n  kafka_brokers: kafka:9092\n  database_url: postgres://db/myelin\n";
        let config = Config::from_sources(Some(yaml), env(&[])).unwrap();
        assert_eq!(config.global.bus, BusKind::Kafka);
        assert_eq!(config.global.kafka_brokers, "kafka:9092");
    }
}
